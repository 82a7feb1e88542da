"""The release wheels (scripts/build_wheels.sh): built for the oldest and the newest supported
CPython, repaired to a manylinux policy, installed into fresh venvs where `pyengine info` and a
prediction work, and with ELF files that need no newer symbol versions than their tag allows.

Slow: each Python's first build compiles the C++ core (minutes); later runs reuse the build
trees in build/cp3XX and only relink. The pip installs need the package index (numpy, and the
build backend in pip's isolated build environment).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request

import numpy as np
import pytest
from test_bench import validate
from test_model import numpy_mlp
from wheel_checks import check_wheel

import pyengine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = os.path.join(REPO, "build", "test-wheels")

pytestmark = pytest.mark.slow


def _requires_python() -> tuple[int, int]:
    """The oldest Python pyproject's requires-python allows (the one place it is stated)."""
    with open(os.path.join(REPO, "pyproject.toml")) as fh:
        m = re.search(r'^requires-python = ">=3\.(\d+)"', fh.read(), re.M)
    assert m, "pyproject.toml states requires-python as >=3.N"
    return 3, int(m.group(1))


def _find_python(minor: int) -> str | None:
    """python3.MINOR on PATH (one that runs: a pyenv shim may not), else pyenv's newest build."""
    builds = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}")))
    for candidate in (shutil.which(f"python3.{minor}"), builds[-1] if builds else None):
        if candidate and subprocess.run([candidate, "-c", "import sys"],
                                        capture_output=True).returncode == 0:
            return candidate
    return None


def _index_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/numpy/", timeout=10).close()
        return True
    except OSError:
        return False


OLDEST = _requires_python()
#: The newest CPython the wheels are built for (pyproject's classifiers list it).
NEWEST = (3, 13)


@pytest.fixture(scope="module")
def index() -> None:
    if not _index_reachable():
        pytest.skip("the package index (pypi.org) is not reachable: the wheels' build backend and "
                    "numpy cannot be installed into fresh venvs")


#: Wheels built in this session, by interpreter: each Python's wheel is built once.
_BUILT: dict[str, str] = {}


def _build(python: str) -> str:
    """The repaired wheel for ``python`` (built, or relinked from build/cp3XX), once a session."""
    if python in _BUILT:
        return _BUILT[python]
    tag = subprocess.run([python, "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    out = os.path.join(WHEELS, tag)
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([os.path.join(REPO, "scripts", "build_wheels.sh"), "--python", python,
                           "--no-sdist", "--out", out], capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = glob.glob(os.path.join(out, f"pyengine-*-{tag}-{tag}-*.whl"))
    assert len(wheels) == 1, os.listdir(out)
    _BUILT[python] = wheels[0]
    return wheels[0]


PREDICT = """
import json, sys
import numpy as np
import pyengine
from pyengine.bench.zoo import mlp_graph
path = mlp_graph().save(sys.argv[1])
x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
np.save(sys.argv[2], pyengine.load(path).predict(x))
print(json.dumps({"file": pyengine.__file__, "numpy": np.__version__,
                  "python": list(sys.version_info[:2])}))
"""


#: Every CPython the wheels are built for, oldest to newest (each is skipped where absent), less
#: the one running this suite, which tests the same code from the tree: one wheel build fewer
#: in CI, where every other Python's wheel checks the packaging the same way.
SUPPORTED = [(3, minor) for minor in range(OLDEST[1], NEWEST[1] + 1)
             if (3, minor) in (OLDEST, NEWEST) or minor != sys.version_info[1]]


@pytest.mark.parametrize("version", SUPPORTED, ids=lambda v: f"py{v[0]}.{v[1]}")
def test_wheel_installs_and_predicts(version: tuple[int, int], index: None, tmp_path) -> None:  # noqa: ANN001
    python = _find_python(version[1])
    if python is None:
        pytest.skip(f"no Python {version[0]}.{version[1]} on this machine (python3.{version[1]} "
                    "on PATH or under ~/.pyenv)")
    wheel = _build(python)
    tag = check_wheel(wheel, str(tmp_path / "unpacked"))
    assert tag == ("manylinux_2_35", "x86_64"), tag  # the oldest policy this toolchain meets (README)
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    vpy = str(venv / "bin" / "python")
    subprocess.run([vpy, "-m", "pip", "install", "-q", wheel], check=True, timeout=900)
    # Outside the source tree, so the installed package is the one imported.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    info = subprocess.run([str(venv / "bin" / "pyengine"), "info", "--json"], capture_output=True,
                          text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["version"] == pyengine.__version__ and data["kernels_available"]
    done = subprocess.run([vpy, "-c", PREDICT, str(tmp_path / "m.pyem"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr
    where = json.loads(done.stdout)
    assert where["file"].startswith(str(venv)), where  # the wheel's package, not the tree's
    assert where["python"] == list(version), where
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), numpy_mlp(str(tmp_path / "m.pyem"), x),
                               rtol=1e-5, atol=1e-6)


def test_sdist_builds_from_scratch(index: None, tmp_path) -> None:  # noqa: ANN001
    """The sdist holds what a build needs (CMake project, C++ sources, package, LICENSE,
    py.typed) and none of the tree's build outputs or venvs."""
    tools = subprocess.run([os.path.join(REPO, "scripts", "build_wheels.sh"), "--out",
                            str(tmp_path), "--python", sys.executable, "--sdist-only"],
                           capture_output=True, text=True, timeout=900)
    assert tools.returncode == 0, tools.stdout + tools.stderr
    (sdist,) = glob.glob(str(tmp_path / "pyengine-*.tar.gz"))
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in ("CMakeLists.txt", "pyproject.toml", "LICENSE", "pyengine/py.typed",
                   "pyengine/__init__.py", "pyengine/_core.pyi"):
        assert needed in names, needed
    assert any(n.startswith("csrc/") and n.endswith(".cpp") for n in names)
    assert not [n for n in names if n.startswith(("build/", ".venv/")) or n.endswith(".so")]


def test_standard_suite_from_the_newest_wheel(index: None, tmp_path) -> None:  # noqa: ANN001
    """The newest wheel in a new venv that has numpy and nothing else (no frameworks, no source
    tree on the path): `pyengine bench --suite standard` runs there in under a minute."""
    python = _find_python(NEWEST[1])
    if python is None:
        pytest.skip(f"no Python 3.{NEWEST[1]} on this machine (python3.{NEWEST[1]} on PATH or "
                    "under ~/.pyenv)")
    wheel = _build(python)
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", wheel],
                   check=True, timeout=900)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.util, pyengine; "
         "print(pyengine.__file__); print([m for m in ('onnx', 'onnxruntime', 'tensorflow', "
         "'mxnet', 'chainer') if importlib.util.find_spec(m)])"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert check.returncode == 0, check.stderr
    where, frameworks = check.stdout.splitlines()
    assert where.startswith(str(venv)) and frameworks == "[]", check.stdout
    t0 = time.perf_counter()
    proc = subprocess.run([str(venv / "bin" / "pyengine"), "bench", "--suite", "standard",
                           "--duration", "0.2", "--warmup", "2", "--json", "suite.json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert took < 60, f"the suite took {took:.1f} s"
    doc = validate(tmp_path / "suite.json")
    assert doc["suite"] == "standard"
    assert [m["name"] for m in doc["models"]] == ["mlp_784x512x512x10", "small_cnn_28",
                                                  "mobilenet_v2_224", "resnet18_224"]
    threads = sorted({1, os.cpu_count() or 1})
    for m in doc["models"]:
        assert [c["threads"] for c in m["cells"]] == threads and m["backend"] == "native"
    assert "resnet18_224" in proc.stdout and "p50 ms" in proc.stdout
