"""ARM builds, checked under emulation on this x86-64 machine.

The wheels and C++ tests are cross-built for aarch64 and armv7 (scripts/build_wheels_arm.sh
with Debian's cross compilers); the C++ tests run under qemu-user with the generic and the
NEON kernels, and on an armv7 CPU without NEON; each wheel is installed into Debian's ARM
Python 3.11 (with numpy's aarch64 wheel, or Debian's armhf numpy) and runs models written
here, matching this machine's outputs. Tools and roots are installed and cached by
scripts/arm_setup.sh ($PYENGINE_ARM_CACHE, default ~/.cache/pyengine-arm).

Cost: a cold run (two Debian roots and numpy downloaded, two cross builds with tests) took
7 minutes on a shared 2-core machine (2.5 minutes of CPU; add about a minute when apt has to
install the cross compilers and qemu); a warm run, nothing to rebuild, 30-50 seconds.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from models import cnn, mlp, mobilenet_v2_graph
from wheel_checks import check_wheel, wheel_tools

import pyengine

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PYENGINE_ARM_CACHE", Path.home() / ".cache" / "pyengine-arm"))
DIST = ROOT / "build" / "arm" / "dist"

# target -> (Debian architecture, qemu, ELF e_machine, platform tag, extension suffix)
TARGETS = {
    "aarch64": (
        "arm64",
        "qemu-aarch64-static",
        183,
        "linux_aarch64",
        ".cpython-311-aarch64-linux-gnu.so",
    ),
    "armv7l": (
        "armhf",
        "qemu-arm-static",
        40,
        "linux_armv7l",
        ".cpython-311-arm-linux-gnueabihf.so",
    ),
}
CROSS_LIBC = {"aarch64": "/usr/aarch64-linux-gnu", "armv7l": "/usr/arm-linux-gnueabihf"}


def _tool(name: str) -> str:
    """cmake/ctest from the venv that runs the tests, else from PATH."""
    venv = Path(sys.executable).parent / name
    return str(venv) if venv.exists() else (shutil.which(name) or name)


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


@pytest.fixture(scope="module")
def arm_builds() -> dict[str, Path]:
    """Cross-builds both targets' wheels and C++ tests (incremental) and returns the wheels."""
    if platform.machine() != "x86_64" or not sys.platform.startswith("linux"):
        pytest.skip(
            "the ARM cross builds are set up for x86-64 Linux hosts, "
            f"not {sys.platform}/{platform.machine()}"
        )
    if sys.version_info[:2] != (3, 11):
        pytest.skip(
            "the ARM wheels are for CPython 3.11 and are built by it; "
            f"this is {platform.python_version()}"
        )
    env = dict(os.environ, VPY=sys.executable, PYENGINE_ARM_CACHE=str(CACHE))
    setup = _run(["scripts/arm_setup.sh", "tools"], 900, env=env)
    if setup.returncode == 3:
        pytest.skip(setup.stderr.strip().splitlines()[-1])
    assert setup.returncode == 0, setup.stderr
    build = _run(
        ["scripts/build_wheels_arm.sh", "--tests", "--out", str(DIST), "aarch64", "armv7l"],
        1500,
        env=env,
    )
    if build.returncode == 3:  # a root or numpy could not be fetched (offline machine)
        pytest.skip([ln for ln in build.stderr.splitlines() if "unavailable" in ln][-1])
    assert build.returncode == 0, (build.stdout + build.stderr)[-6000:]
    wheels = {}
    for line in build.stdout.split():
        path = ROOT / line
        for target, spec in TARGETS.items():
            if path.name.endswith(f"-{spec[3]}.whl"):
                wheels[target] = path
    assert set(wheels) == set(TARGETS), build.stdout
    return wheels


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_wheel_is_tagged_and_built_for_the_target(arm_builds, target):
    _, _, e_machine, tag, suffix = TARGETS[target]
    wheel = arm_builds[target]
    assert wheel.name == f"pyengine-{pyengine.__version__}-cp311-cp311-{tag}.whl"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(f"pyengine-{pyengine.__version__}.dist-info/WHEEL").decode()
        core = [n for n in names if n.startswith("pyengine/_core") and not n.endswith(".pyi")]
        assert core == [f"pyengine/_core{suffix}"], names
        assert "pyengine/_core.pyi" in names, names  # the typed stub ships with the module
        elf = z.read(core[0])[:20]
    assert f"Tag: cp311-cp311-{tag}" in meta and "Root-Is-Purelib: false" in meta, meta
    assert elf[:4] == b"\x7fELF"
    assert int.from_bytes(elf[18:20], "little") == e_machine, (
        f"_core is for ELF machine {int.from_bytes(elf[18:20], 'little')}"
    )
    assert "pyengine/builder.py" in names and "pyengine/cli/__init__.py" in names


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_repaired_wheel_fits_its_manylinux_tag(arm_builds, target, tmp_path):
    """The wheel as released: repaired by auditwheel (as `build_wheels.sh --arm` does), tagged
    with the policy it names, and its _core needing no newer GLIBC/GLIBCXX symbol versions than
    that policy allows and linking nothing outside its allow-list (checked with readelf against
    auditwheel's policy table, not by auditwheel's word)."""
    tools = Path(wheel_tools())
    repaired = _run([str(tools / "bin" / "auditwheel"), "repair", "-w", str(tmp_path / "out"),
                     str(arm_builds[target])], 300,
                    env=dict(os.environ, PATH=f"{tools / 'bin'}:{os.environ['PATH']}"))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    (wheel,) = (tmp_path / "out").glob("pyengine-*.whl")
    assert wheel.name.startswith(f"pyengine-{pyengine.__version__}-cp311-cp311-manylinux_"), wheel.name
    assert check_wheel(str(wheel), str(tmp_path / "unpacked")) == ("manylinux_2_35", target)


@pytest.mark.parametrize("isa", ["generic", "neon"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_cpp_tests_under_qemu(arm_builds, target, isa):
    """CTest runs every C++ test through qemu (the build's CMAKE_CROSSCOMPILING_EMULATOR) with
    one kernel variant forced."""
    env = dict(os.environ, PYENGINE_ISA=isa)
    proc = _run(
        [
            _tool("ctest"),
            "--test-dir",
            f"build/arm/{target}",
            "--output-on-failure",
            "--timeout",
            "120",
        ],
        300,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "100% tests passed" in out and "test_kernel_variants" in out, out


def test_armv7_without_neon_runs_the_generic_kernels(arm_builds):
    """On an ARMv7 CPU without NEON (qemu's Cortex-R5F: VFPv3-D16 only) AT_HWCAP has no NEON:
    the generic kernels are chosen, nothing built for NEON runs, and asking for NEON is an error."""
    exe = ROOT / "build/arm/armv7l/tests/cpp"
    cmd = ["qemu-arm-static", "-cpu", "cortex-r5f", "-L", CROSS_LIBC["armv7l"]]
    env = {k: v for k, v in os.environ.items() if k != "PYENGINE_ISA"}
    proc = _run([*cmd, str(exe / "test_kernel_variants")], 120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "in use: generic; compared with generic: (none on this CPU)" in proc.stdout, proc.stdout
    for other in ("test_kernels", "test_format"):  # the generic kernels and models, no SIGILL
        proc = _run([*cmd, str(exe / other)], 120, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # The same binary on a NEON CPU picks the NEON kernels.
    proc = _run(
        [
            "qemu-arm-static",
            "-cpu",
            "cortex-a7",
            "-L",
            CROSS_LIBC["armv7l"],
            str(exe / "test_kernel_variants"),
        ],
        120,
        env=env,
    )
    assert proc.returncode == 0 and "in use: neon; compared with generic: neon" in proc.stdout, (
        proc.stdout
    )


def _models(work: Path) -> list[dict[str, str]]:
    """MLP, CNN (both layouts) and a small MobileNet-v2 (depthwise, pointwise, residual adds)
    written and run here on x86; their inputs and outputs saved. Batch 1 and 8 for the MLP
    (the one-row GEMM kernel and the tiles)."""
    rng = np.random.default_rng(7)
    mobilenet = mobilenet_v2_graph(size=32, width=8, blocks=((1, 8, 1, 1), (6, 16, 2, 2)))
    cases = [
        ("mlp_1", mlp(str(work / "mlp.pyem")), rng.standard_normal((1, 64)).astype(np.float32)),
        ("mlp", mlp(str(work / "mlp.pyem")), rng.standard_normal((8, 64)).astype(np.float32)),
        (
            "cnn_nchw",
            cnn(str(work / "cnn_nchw.pyem")),
            rng.standard_normal((2, 1, 28, 28)).astype(np.float32),
        ),
        (
            "cnn_nhwc",
            cnn(str(work / "cnn_nhwc.pyem"), layout="NHWC"),
            rng.standard_normal((2, 28, 28, 1)).astype(np.float32),
        ),
        (
            "mobilenet",
            mobilenet.save(str(work / "mobilenet.pyem")),
            rng.standard_normal((2, 3, 32, 32)).astype(np.float32),
        ),
    ]
    out = []
    for name, model, x in cases:
        np.save(work / f"in-{name}.npy", x)
        np.save(work / f"x86-{name}.npy", pyengine.load(model).predict(x))
        out.append({"name": name, "model": model, "input": str(work / f"in-{name}.npy")})
    (work / "cases.json").write_text(json.dumps(out))
    return out


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_wheel_in_emulated_python_matches_x86(arm_builds, target, tmp_path):
    """pip installs the wheel for the target platform; Debian's ARM python3.11 imports it and
    runs the models with every variant it offers; outputs match this machine's within 1e-5
    (relative to each output's largest magnitude)."""
    debarch, qemu, _, tag, _ = TARGETS[target]
    root = CACHE / f"sysroot-{debarch}"
    site = tmp_path / "site"
    pip = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--target",
            str(site),
            "--platform",
            tag,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            str(arm_builds[target]),
        ],
        300,
    )
    assert pip.returncode == 0, pip.stderr
    assert (site / "pyengine" / "__init__.py").is_file()
    cases = _models(tmp_path)
    # aarch64 gets numpy's manylinux wheel (arm_setup.sh); armhf uses the root's python3-numpy.
    path = [str(site)] + ([str(CACHE / "site-arm64")] if target == "aarch64" else [])
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(path),
        "PYTHONNOUSERSITE": "1",
        "HOME": str(tmp_path),
    }
    proc = _run(
        [
            qemu,
            "-L",
            str(root),
            str(root / "usr/bin/python3.11"),
            str(ROOT / "tests/arm_predict.py"),
            str(tmp_path),
        ],
        600,
        env=env,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    info = json.loads((tmp_path / "arm_info.json").read_text())
    assert info["machine"] == target
    assert info["pyengine_file"].startswith(str(site)), info["pyengine_file"]
    assert info["cpu"]["neon"] is True
    assert info["kernel_variant"] == "neon", info  # NEON is chosen by default on both targets
    assert info["kernels_available"] == ["neon", "generic"], info
    for variant in info["kernels_available"]:
        for c in cases:
            want = np.load(tmp_path / f"x86-{c['name']}.npy")
            got = np.load(tmp_path / f"out-{variant}-{c['name']}.npy")
            assert got.shape == want.shape and got.dtype == np.float32
            # 1e-5 relative to the output's scale: logits near zero carry the sums' rounding.
            scale = float(np.max(np.abs(want)))
            np.testing.assert_allclose(
                got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{target} {variant} {c['name']}"
            )


def test_jetson_toolchain_configures_aarch64_with_cuda(arm_builds, tmp_path):
    """The Jetson toolchain is the aarch64 one plus ARMv8.2-A and PYENGINE_CUDA=ON."""
    cmake = _tool("cmake")
    build = tmp_path / "jetson"
    cuda_dir = ROOT / "csrc/device/cuda/CMakeLists.txt"
    proc = _run(
        [
            cmake,
            "-S",
            str(ROOT),
            "-B",
            str(build),
            "-DCMAKE_TOOLCHAIN_FILE=toolchains/jetson.toolchain.cmake",
        ],
        300,
    )
    if proc.returncode != 0 and cuda_dir.exists() and shutil.which("nvcc") is None:
        pytest.skip(
            "the CUDA kernels need nvcc and JetPack's aarch64 CUDA target files, "
            "which this machine lacks"
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cache = (build / "CMakeCache.txt").read_text()
    assert "PYENGINE_CUDA:BOOL=ON" in cache
    assert "CMAKE_CXX_FLAGS:STRING=-march=armv8.2-a" in cache
    compiler = "".join(p.read_text() for p in build.glob("CMakeFiles/*/CMakeCXXCompiler.cmake"))
    assert 'set(CMAKE_CXX_COMPILER "/usr/bin/aarch64-linux-gnu-g++")' in compiler
    assert 'set(CMAKE_CXX_COMPILER_ARCHITECTURE_ID "aarch64")' in compiler


def test_wheel_script_names_a_bad_target():
    proc = _run(["scripts/build_wheels_arm.sh", "riscv64"], 60)
    assert proc.returncode == 2
    assert "'riscv64'" in proc.stderr and "aarch64, armv7l or jetson" in proc.stderr, proc.stderr
    proc = _run(["scripts/arm_setup.sh", "sysroot", "mips"], 60)
    assert proc.returncode in (2, 3), proc.stderr  # 3: the tools themselves are unavailable
    if proc.returncode == 2:
        assert "'mips'" in proc.stderr and "arm64 or armhf" in proc.stderr, proc.stderr
