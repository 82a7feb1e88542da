"""Accelerator dispatch: device strings, GPU listing, the grant hook, the CUDA build, and CUDA
vs CPU outputs for every op and the test models.

The CUDA variant is compiled (scripts/build_cuda.sh -> build/cuda) wherever nvcc is present,
GPU or not, and imported from a package assembled in a temporary directory; its GPU comparisons
run only where a GPU is present.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cuda_compare import TOLERANCE, build_case, feed, max_error, model_cases, op_cases
from models import cnn, mlp

import pyengine
from pyengine import _core, devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
BUILD_TIMEOUT_S = 600


# ---- device strings, errors, auto, info: the default (CPU) build ----


@pytest.mark.parametrize(
    "text,kind,index",
    [
        ("cpu", "cpu", 0),
        ("cuda", "cuda", 0),
        ("cuda:0", "cuda", 0),
        ("cuda:3", "cuda", 3),
        ("cuda:12", "cuda", 12),
    ],
)
def test_parse_device(text, kind, index):
    d = devices.parse(text)
    assert d is not None and (d.kind, d.index) == (kind, index)
    assert str(d) == ("cpu" if kind == "cpu" else f"cuda:{index}")
    assert devices.parse("auto") is None


@pytest.mark.parametrize(
    "bad", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "cuda0", "cuda:1:2", " cpu", ""]
)
def test_bad_device_string_names_it(tmp_path, bad):
    path = mlp(str(tmp_path / "m.pyem"), (4, 3))
    with pytest.raises(
        ValueError, match=f"device={bad!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'"
    ):
        pyengine.load(path, device=bad)


def test_device_must_be_a_string(tmp_path):
    with pytest.raises(ValueError, match="must be a string"):
        pyengine.load(mlp(str(tmp_path / "m.pyem"), (4, 3)), device=0)  # type: ignore[arg-type]


def _no_gpu_reason() -> str:
    return devices.cuda_status()["error"]


def test_cuda_without_gpu_is_a_clear_error(tmp_path):
    if devices.gpus():
        pytest.skip("this machine has a CUDA GPU; the error for a missing one cannot occur")
    path = mlp(str(tmp_path / "m.pyem"), (4, 3))
    status = devices.cuda_status()
    expect = "PYENGINE_CUDA=ON" if not status["built"] else "not available"
    for dev in ("cuda", "cuda:0", "cuda:5"):
        with pytest.raises(pyengine.DeviceUnavailableError, match=expect) as info:
            pyengine.load(path, device=dev)
        assert f"'{dev if ':' in dev else 'cuda:0'}'" in str(info.value)
        assert isinstance(info.value, RuntimeError)


def test_auto_falls_back_to_cpu_and_matches(tmp_path):
    path = cnn(str(tmp_path / "c.pyem"))
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    auto = pyengine.load(path, device="auto")
    cpu = pyengine.load(path, device="cpu")
    assert cpu.device == "cpu"
    assert auto.device == ("cuda:0" if devices.gpus() else "cpu")
    np.testing.assert_allclose(auto.predict(x), cpu.predict(x), rtol=TOLERANCE, atol=TOLERANCE)


def test_info_lists_gpus():
    info = pyengine.info()
    assert info["gpus"] == devices.gpus()
    assert set(info["cuda"]) == {"built", "loaded", "library", "error", "version"}
    if not info["gpus"]:
        assert info["cuda"]["error"], "no GPU must come with the reason"
    out = subprocess.run(
        [sys.executable, "-m", "pyengine", "info"], capture_output=True, text=True, check=True
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith(("gpus:", "gpu:")))
    if not info["gpus"]:
        assert line.startswith("gpus:     none (") and info["cuda"]["error"] in line
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "pyengine", "info", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert data["gpus"] == info["gpus"]


def test_cli_run_device(tmp_path):
    path = mlp(str(tmp_path / "m.pyem"), (4, 3))
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyengine",
            "run",
            path,
            "-i",
            str(tmp_path / "x.npy"),
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), pyengine.load(path).predict(np.ones((2, 4), np.float32))
    )
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyengine",
            "run",
            path,
            "-i",
            str(tmp_path / "x.npy"),
            "--device",
            "tpu",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--device tpu" in bad.stderr
    if not devices.gpus():
        gpu = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyengine",
                "run",
                path,
                "-i",
                str(tmp_path / "x.npy"),
                "--device",
                "cuda",
            ],
            capture_output=True,
            text=True,
        )
        assert gpu.returncode == 3 and "error: device 'cuda:0' is not available" in gpu.stderr


# ---- the grant hook (PYENGINE_GRANTED_DEVICES) ----

DISCRETE = {
    "index": 0,
    "name": "GPU",
    "pci_bus_id": "0000:65:00.0",
    "integrated": False,
    "path": "/dev/nvidia2",
}
JETSON = {
    "index": 0,
    "name": "Orin",
    "pci_bus_id": "",
    "integrated": True,
    "path": "/dev/nvhost-gpu",
}


def test_granted_paths_from_environment(monkeypatch):
    monkeypatch.delenv(devices.GRANT_ENV, raising=False)
    assert devices.granted_paths() is None
    monkeypatch.setenv(devices.GRANT_ENV, "")
    assert devices.granted_paths() == []
    monkeypatch.setenv(devices.GRANT_ENV, "/dev/nvidia0:/dev/nvidiactl,/dev/nvidia-uvm")
    assert devices.granted_paths() == ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"]


def test_is_granted():
    assert devices.is_granted(DISCRETE, None)  # not a function: every GPU
    assert not devices.is_granted(DISCRETE, [])
    assert not devices.is_granted(DISCRETE, ["/dev/nvidia0", "/dev/nvidiactl"])
    assert devices.is_granted(DISCRETE, ["/dev/nvidiactl", "/dev//nvidia2"])
    assert devices.is_granted(JETSON, ["/dev/nvhost-ctrl-gpu"])
    assert devices.is_granted(JETSON, ["/dev/nvgpu/igpu0/ctrl"])
    assert devices.is_granted(JETSON, ["/dev/nvidia0"])
    assert not devices.is_granted(JETSON, ["/dev/video0"])


def test_device_path_of_this_machines_gpus():
    for g in devices.gpus():
        assert g["path"] == devices.device_path(g) and g["path"].startswith("/dev/")
    assert (
        devices.device_path({"index": 3, "pci_bus_id": "", "integrated": False}) == "/dev/nvidia3"
    )


def test_auto_inside_a_function_without_a_grant_uses_cpu(tmp_path, monkeypatch):
    path = mlp(str(tmp_path / "m.pyem"), (4, 3))
    monkeypatch.setenv(devices.GRANT_ENV, "/dev/video0")
    assert devices.resolve("auto") == devices.Device("cpu")
    assert pyengine.load(path, device="auto").device == "cpu"
    for g in devices.gpus():  # a GPU present but not granted: asking for it names the fix
        with pytest.raises(pyengine.DeviceUnavailableError, match="not granted to this function"):
            pyengine.load(path, device=f"cuda:{g['index']}")
    monkeypatch.setenv(devices.GRANT_ENV, ",".join(g["path"] for g in devices.gpus()))
    assert pyengine.load(path, device="auto").device == ("cuda:0" if devices.gpus() else "cpu")


# ---- lowering: every op has a device kernel (needs no GPU) ----


#: Ops from issue 25's coverage work that have no CUDA kernel yet: on a GPU model they run
#: through the Host fallback (docs/gpu.md lists them). Every other op must lower, and these
#: must fall back rather than fail.
HOST_ONLY_OPS = {"Attention", "BatchMatMul", "BinaryMath", "ConvTranspose2D", "GRU", "LayerNorm", "LogSoftmax",
                 "GridSample", "LSTM", "Math", "Reduce", "Resize", "RNN", "Where",
                 # issue 23's int8 ops: CPU kernels only
                 "QuantizeLinear", "DequantizeLinear", "QLinearConv2D", "QLinearDense",
                 # issue 25's typed ops (int64/bool values): CPU kernels only
                 "ArgReduce", "BitCast", "Cast", "Classify", "Cumulative", "Compare", "Gather",
                 "GatherElements", "Logic", "Scatter", "Trilu",
                 # issue 25's ops with run-time parameters: CPU kernels only
                 "ConstantOfShape", "Expand", "Range", "Shape", "Split", "Tile", "TopK", "Unsqueeze"}


def test_every_op_lowers_to_a_device_kernel(tmp_path):
    covered = set()
    for case in op_cases():
        path = build_case(case, str(tmp_path))
        steps = _core.device_steps(_core.Model(path), [list(a.shape) for a in case.inputs])
        assert steps, case.name
        kinds = {kind for _, kind in steps}
        assert "Host" not in kinds, f"{case.name} falls back to the CPU: {steps}"
        covered.add(case.op)
    assert covered == set(_core.op_names()) - HOST_ONLY_OPS, (
        f"ops without a CUDA case: {set(_core.op_names()) - HOST_ONLY_OPS - covered}"
    )
    assert set(_core.op_names()) >= HOST_ONLY_OPS, HOST_ONLY_OPS - set(_core.op_names())
    # One of them, lowered: its step is the Host fallback, not a failure to lower.
    g = pyengine.GraphBuilder()
    g.output(g.node("Math", [g.input("x", [-1, 5])], name="exp", fn="exp"))
    steps = _core.device_steps(_core.Model(g.save(str(tmp_path / "exp.pyem"))), [[3, 5]])
    assert [kind for _, kind in steps] == ["Host"], steps
    for name, path, x in model_cases(str(tmp_path)):
        kinds = [k for _, k in _core.device_steps(_core.Model(path), [list(x.shape)])]
        assert kinds and "Host" not in kinds, name
        if name.startswith("cnn"):  # flatten of the pooled map shares its memory
            assert kinds.count("Nop") == 1


def test_passthrough_and_view_outputs_lower_to_copies(tmp_path):
    g = pyengine.GraphBuilder()
    x = g.input("x", [-1, 6])
    g.output(g.node("Reshape", [x], name="r", shape=[0, 2, 3]))
    g.output(x)
    path = g.save(str(tmp_path / "p.pyem"))
    steps = _core.device_steps(_core.Model(path), [[2, 6]])
    assert steps == [("r", "Copy"), ("x", "Copy")]


def test_view_of_a_weight_reads_the_weight_in_place(tmp_path):
    g = pyengine.GraphBuilder()
    x = g.input("x", [-1, 3, 4])
    w = g.constant("w", np.arange(12, dtype=np.float32))
    g.output(g.node("Add", [x, g.node("Reshape", [w], name="r", shape=[3, 4])], name="add"))
    path = g.save(str(tmp_path / "v.pyem"))
    assert _core.device_steps(_core.Model(path), [[2, 3, 4]]) == [("r", "Nop"), ("add", "Binary")]
    x0 = np.ones((2, 3, 4), np.float32)
    em = _core.DeviceModel(_core.Model(path), 0, emulate=True)
    np.testing.assert_array_equal(
        em.run([x0])[0], x0 + np.arange(12, dtype=np.float32).reshape(3, 4)
    )


# ---- the device executor emulated on the host: lowering, layout, paths, GEMM mapping ----


def _emulated_error(path: str, inputs: list[np.ndarray]) -> float:
    cpu = pyengine.load(path, device="cpu")
    emulated = _core.DeviceModel(cpu._core, 0, emulate=True)  # type: ignore[attr-defined]
    want = cpu.predict(feed(inputs))
    got = emulated.run(inputs)
    assert len(got) == 1 and got[0].shape == np.asarray(want).shape
    return max_error(got[0], np.asarray(want))


def test_emulated_device_matches_cpu_for_every_op_and_model(tmp_path):
    errors = {c.name: _emulated_error(build_case(c, str(tmp_path)), c.inputs) for c in op_cases()}
    for name, path, x in model_cases(str(tmp_path)):
        errors[name] = _emulated_error(path, [x])
    bad = {k: v for k, v in errors.items() if not v <= TOLERANCE}
    assert not bad, f"the emulated device differs from the CPU by more than {TOLERANCE}: {bad}"


def test_forced_host_fallback(tmp_path, monkeypatch):
    _, path, x = next(c for c in model_cases(str(tmp_path)) if c[0] == "mobilenet_NHWC_b3")
    monkeypatch.setenv("PYENGINE_DEVICE_HOST_OPS", "Add,GlobalAvgPool,Flatten,Dense")
    steps = _core.device_steps(_core.Model(path), [list(x.shape)])
    host = {name for name, kind in steps if kind == "Host"}
    assert {"gap", "flatten", "logits"} <= host
    assert any(n.startswith("res") for n in host)
    assert all(n.startswith("res") or n in ("gap", "flatten", "logits") for n in host)
    assert _emulated_error(path, [x]) <= TOLERANCE


# ---- the CUDA build (whenever nvcc is present) ----


def _nvcc() -> str | None:
    found = os.environ.get("CUDACXX") or shutil.which("nvcc")
    if found:
        return found
    for d in sorted(os.listdir("/usr/local")) if os.path.isdir("/usr/local") else []:
        if d.startswith("cuda") and os.access(f"/usr/local/{d}/bin/nvcc", os.X_OK):
            return f"/usr/local/{d}/bin/nvcc"
    return None


def _needed(lib: str) -> list[str]:
    out = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True, check=True).stdout
    return [ln.split("[", 1)[1].rstrip("]") for ln in out.splitlines() if "(NEEDED)" in ln]


@pytest.fixture(scope="module")
def cuda_build() -> str:
    """build/cuda, (re)built with warnings as errors; incremental after the first time."""
    if _nvcc() is None:
        pytest.skip(
            "no nvcc on this machine (PATH, CUDACXX, /usr/local/cuda*/bin): "
            "the CUDA variant cannot be compiled"
        )
    env = dict(os.environ, VPY=sys.executable)
    proc = subprocess.run(
        [os.path.join(ROOT, "scripts", "build_cuda.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert proc.returncode == 0, (
        f"the CUDA build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    return os.path.join(ROOT, "build", "cuda")


@pytest.fixture(scope="module")
def cuda_package(cuda_build, tmp_path_factory) -> str:
    """A pyengine package holding the CUDA build's _core and libpyengine_cuda.so."""
    root = tmp_path_factory.mktemp("cuda_pkg")
    pkg = root / "pyengine"
    shutil.copytree(
        os.path.join(ROOT, "pyengine"),
        pkg,
        ignore=shutil.ignore_patterns("_core*.so", "libpyengine_cuda.so", "__pycache__"),
    )
    for name in os.listdir(cuda_build):
        if name.startswith("_core") and name.endswith(".so") or name == "libpyengine_cuda.so":
            shutil.copy2(os.path.join(cuda_build, name), pkg / name)
    return str(root)


def _run_in(package: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package, TESTS]))
    # cwd: `python -c` puts the working directory first on sys.path; not the source tree.
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=package,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cuda_build_links_cuda_only_into_the_backend(cuda_build):
    backend = os.path.join(cuda_build, "libpyengine_cuda.so")
    core = next(
        os.path.join(cuda_build, n) for n in os.listdir(cuda_build) if n.startswith("_core")
    )
    # _core never needs a CUDA library to load; the backend links the CUDA runtime statically.
    assert not [n for n in _needed(core) if "cuda" in n or "cublas" in n], _needed(core)
    assert "libcublas.so.13" in _needed(backend)
    assert not [n for n in _needed(backend) if n.startswith("libcudart")], _needed(backend)
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", backend], capture_output=True, text=True, check=True
    ).stdout
    assert " T pyengine_cuda_backend" in symbols


def test_cuda_core_imports_and_reports_gpus(cuda_package, tmp_path):
    path = mlp(str(tmp_path / "m.pyem"), (4, 3))
    code = f"""
import json, numpy as np, pyengine
from pyengine import devices
status = devices.cuda_status()
out = {{"status": status, "gpus": devices.gpus(), "info_gpus": pyengine.info()["gpus"]}}
m = pyengine.load({path!r}, device="auto")
out["auto"] = m.device
out["y"] = m.predict(np.ones((2, 4), np.float32)).tolist()
try:
    pyengine.load({path!r}, device="cuda:9")
except pyengine.DeviceUnavailableError as e:
    out["cuda9"] = str(e)
print(json.dumps(out))
"""
    proc = _run_in(cuda_package, code)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"]["built"] and out["status"]["loaded"], out["status"]
    assert out["status"]["version"].startswith("CUDA runtime 13.")
    assert out["gpus"] == out["info_gpus"]
    np.testing.assert_allclose(
        out["y"],
        pyengine.load(path, device="cpu").predict(np.ones((2, 4), np.float32)),
        rtol=TOLERANCE,
        atol=TOLERANCE,
    )
    if not out["gpus"]:
        assert out["status"]["error"] and out["auto"] == "cpu"
        assert "no CUDA GPU is usable" in out["cuda9"] and out["status"]["error"] in out["cuda9"]
    else:
        assert out["auto"] == "cuda:0" and "does not exist" in out["cuda9"]


def test_cuda_core_without_backend_library_says_what_is_missing(cuda_package, tmp_path):
    # A CUDA build copied to a machine without the backend (or its cuBLAS): _core still imports.
    bare = tmp_path / "bare"
    shutil.copytree(cuda_package, bare)
    os.remove(bare / "pyengine" / "libpyengine_cuda.so")
    proc = _run_in(
        str(bare),
        "import json, pyengine; from pyengine import devices; "
        "print(json.dumps([devices.cuda_status(), pyengine.info()['gpus']]))",
    )
    assert proc.returncode == 0, proc.stderr
    status, gpus = json.loads(proc.stdout)
    assert status["built"] and not status["loaded"] and gpus == []
    assert "libpyengine_cuda.so' could not be loaded" in status["error"]


def test_cuda_matches_cpu_for_every_op_and_model(cuda_package, tmp_path):
    report_path = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([cuda_package, TESTS]))
    proc = subprocess.run(
        [sys.executable, os.path.join(TESTS, "cuda_compare.py"), str(report_path)],
        env=env,
        cwd=cuda_package,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    report = json.loads(report_path.read_text())
    assert report["cuda"]["built"] and report["cuda"]["loaded"], report["cuda"]
    lowered = report["lowering"]
    assert len(lowered) == len(op_cases()) + 10
    assert all(steps and all(kind != "Host" for _, kind in steps) for steps in lowered.values()), (
        lowered
    )
    if not report["gpus"]:
        pytest.skip(
            f"no CUDA GPU on this machine ({report['cuda']['error']}): "
            "the CUDA kernels compiled, linked "
            "and lowered every case, but cannot run here"
        )
    bad = {k: v for k, v in report["errors"].items() if not v <= TOLERANCE}
    assert not bad, f"CUDA differs from the CPU by more than {TOLERANCE}: {bad}"
    assert len(report["errors"]) == len(op_cases()) + 24
