"""``pyengine bench``: records on real models of three formats validated against the schema,
``--compare`` against onnxruntime, bad input as exit code 2, merge and plot, the emulation
check under qemu-user. (The standard suite from an installed wheel is in test_wheels.py, which
builds the wheels once.)"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from models import mlp

from pyengine import _core
from pyengine.bench import machine, report, timing
from pyengine.cli import main

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--runs", "5", "--warmup", "2", "--threads", "1"]


def validate(path: Path) -> dict:
    """The record at ``path`` after checking it with jsonschema (when installed) and with the
    package's own validator (which ``--merge`` uses)."""
    doc = json.loads(path.read_text())
    assert report.validate(doc) == []
    try:
        import jsonschema
    except ImportError:
        return doc
    jsonschema.Draft202012Validator(report.schema()).validate(doc)
    return doc


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["bench", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_pyem_record_has_every_cell_and_validates(tmp_path, capsys):
    model = mlp(str(tmp_path / "mlp.pyem"))
    rc, out, err = bench(capsys, model, "--batch", "1,3", "--runs", "7", "--warmup", "2",
                         "--threads", "1,2", "--profile", "--json", str(tmp_path / "r.json"))
    assert rc == 0, err
    doc = validate(tmp_path / "r.json")
    cells = doc["models"][0]["cells"]
    assert [(c["threads"], c["batch"]) for c in cells] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    for c in cells:
        assert c["runs"] == 7 and c["isa"] == _core.kernel_variant()
        assert 0 < c["min_ms"] <= c["p50_ms"] <= c["p90_ms"] <= c["p99_ms"] <= c["max_ms"]
        assert c["first_ms"] > 0 and c["load_ms"] > 0 and c["peak_rss_bytes"] > 0
        assert c["throughput_rows_s"] == pytest.approx(c["batch"] * 1e3 / c["mean_ms"], rel=1e-3)
        assert {o["name"] for o in c["profile"]["ops"]} == {"fc0", "fc1", "fc2", "probs"}
    assert doc["header"]["kernel_variant"] == _core.kernel_variant()
    assert doc["header"]["emulation"]["emulated"] is False
    assert "p50 ms" in out and "per-op profile" in out and "emulation: none detected" in out
    assert "\r[" not in err  # no progress bar when stderr is not a TTY


def test_every_isa(tmp_path, capsys):
    model = mlp(str(tmp_path / "mlp.pyem"))
    rc, _, err = bench(capsys, model, "--isa", "all", *QUICK, "--json", str(tmp_path / "r.json"))
    assert rc == 0, err
    cells = validate(tmp_path / "r.json")["models"][0]["cells"]
    assert [c["isa"] for c in cells] == list(_core.kernels_available())


def test_onnx_model_against_onnxruntime(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="--compare onnxruntime needs onnxruntime")
    from onnx_models import mlp_onnx

    path = tmp_path / "mlp.onnx"
    path.write_bytes(mlp_onnx())
    rc, out, err = bench(capsys, str(path), "--compare", "onnxruntime", "--batch", "1,4", *QUICK,
                         "--json", str(tmp_path / "r.json"))
    assert rc == 0, err
    doc = validate(tmp_path / "r.json")
    assert doc["models"][0]["backend"] == "native"  # auto converted it
    for c in doc["models"][0]["cells"]:
        cmp = c["compare"]
        assert cmp["backend"] == "onnx" and cmp["runs"] == 5 and cmp["threads_set"] is True
        assert cmp["max_rel_diff"] <= 1e-4
        assert cmp["ratio_p50"] == pytest.approx(c["p50_ms"] / cmp["p50_ms"], rel=1e-2)
    assert "onnx p50 ms" in out and "ratio" in out


def test_pyem_against_the_onnx_it_came_from(tmp_path, capsys):
    """--compare FRAMEWORK=MODEL: a .pyem against its source model; different weights refuse."""
    pytest.importorskip("onnxruntime", reason="--compare onnxruntime needs onnxruntime")
    from onnx_models import mlp_onnx

    pyem = mlp(str(tmp_path / "mlp.pyem"))
    same, other = tmp_path / "same.onnx", tmp_path / "other.onnx"
    same.write_bytes(mlp_onnx(seed=0))
    other.write_bytes(mlp_onnx(seed=1))
    rc, _, err = bench(capsys, pyem, "--compare", f"onnxruntime={same}", *QUICK)
    assert rc == 0, err
    rc, out, err = bench(capsys, pyem, "--compare", f"onnxruntime={other}", *QUICK)
    assert rc == 1 and out == ""
    assert "outputs differ at batch 1: output 'probs:0': max |pyengine - onnx| = " in err
    # ... and by how much: the figures it prints are the real difference.
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    import pyengine

    want = np.max(np.abs(pyengine.load(pyem).predict(x)
                         - pyengine.load(str(other), backend="onnx").predict(x)))
    assert f"= {want:.3g}," in err, err
    assert "tolerance 0.0001" in err


def test_tensorflow_frozen_graph(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="the frozen graph is written with TensorFlow")
    from framework_models import keras_mlp, tf_freeze, tf_quiet

    tf_quiet()
    pb = tf_freeze(keras_mlp(), str(tmp_path / "frozen.pb"))
    rc, out, err = bench(capsys, pb, "--batch", "2", *QUICK, "--json", str(tmp_path / "r.json"))
    assert rc == 0, err
    doc = validate(tmp_path / "r.json")
    m = doc["models"][0]
    assert m["name"] == "frozen.pb" and m["backend"] == "native" and len(m["cells"]) == 1
    assert m["cells"][0]["input_shapes"] == [[2, m["inputs"][0]["shape"][1]]]


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory) -> str:
    return mlp(str(tmp_path_factory.mktemp("bad") / "mlp.pyem"))


def _lacking_isa() -> str:
    return next(v for v in ("neon", "avx512", "avx2") if v not in _core.kernels_available())


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch 0: batch sizes must be integers >= 1"),
    (["--batch", "1,x"], "expected integers separated by commas"),
    (["--isa", "LACKING"], "--isa LACKING: this CPU and build run only"),
    (["--shape", "x=1x7"], "--shape x=1x7: does not fit the model's input 'x' of shape [-1, 64]"),
    (["--shape", "y=1x64"], "the model has no input 'y'; its inputs are ['x']"),
    (["--input", "x=MISSING"], "--input x=MISSING: no such file"),
    (["--runs", "0"], "--runs 0: must be >= 1"),
    (["--compare", "caffe"], "--compare 'caffe': expected one of"),
])
def test_bad_input_is_exit_2_with_a_clear_error(mlp_file, tmp_path, capsys, args, message):
    lacking = _lacking_isa()
    args = [a.replace("LACKING", lacking).replace("MISSING", str(tmp_path / "none.npy"))
            for a in args]
    message = message.replace("LACKING", lacking).replace("MISSING", str(tmp_path / "none.npy"))
    try:
        rc = main(["bench", mlp_file, *args])
    except SystemExit as exc:  # argparse's own exit for a malformed list, naming the option
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert message in err and "Traceback" not in err, err


def test_wrong_input_array_and_unrunnable_shape(tmp_path, capsys):
    """An input file of the wrong width, and a free spatial size too small for the CNN: exit 2,
    no traceback, the offending shape named."""
    from models import cnn_graph

    model = cnn_graph().save(str(tmp_path / "cnn.pyem"))
    np.save(tmp_path / "wide.npy", np.zeros((1, 1, 28, 30), np.float32))
    rc, _, err = bench(capsys, model, "--input", f"image={tmp_path / 'wide.npy'}", *QUICK)
    assert rc == 2 and "--input image=1x1x28x30: does not fit" in err and "Traceback" not in err
    import pyengine

    g = pyengine.GraphBuilder()
    w = g.constant("w", np.ones((4, 1, 5, 5), np.float32))
    g.output(g.node("Conv2D", [g.input("image", [-1, 1, -1, -1]), w], name="conv"))
    free = g.save(str(tmp_path / "free.pyem"))
    rc, _, err = bench(capsys, free, *QUICK)
    assert rc == 2 and "input 'image' has shape [-1, 1, -1, -1] with free dimension(s) [2, 3]; " \
        "give its size with --shape image=1x1x1x1" in err, err
    rc, _, err = bench(capsys, free, "--shape", "image=1x1x3x3", *QUICK)
    assert rc == 2 and "the model does not run on inputs image=1x1x3x3: " in err, err
    assert "Traceback" not in err


def test_threads_above_cores_warn_and_run(mlp_file, capsys):
    over = (os.cpu_count() or 1) + 2
    rc, out, err = bench(capsys, mlp_file, "--threads", str(over), "--runs", "3")
    assert rc == 0, err
    assert f"warning: --threads {over} is above this machine's {os.cpu_count()} logical cores" in err
    assert f"  {over}  " in out


def test_cli_in_a_process_says_error_not_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pyengine", "bench", str(tmp_path / "no.pyem")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert "pyengine bench: error: model" in proc.stderr and "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_merge_and_plot(tmp_path, capsys):
    model = mlp(str(tmp_path / "mlp.pyem"))
    for label in ("pi5", "laptop"):
        rc, _, err = bench(capsys, model, *QUICK, "--label", label,
                           "--json", str(tmp_path / f"{label}.json"))
        assert rc == 0, err
    rc, out, err = bench(capsys, "--merge", str(tmp_path / "pi5.json"),
                         str(tmp_path / "laptop.json"), "--plot", str(tmp_path / "p.png"))
    assert rc == 0, err
    assert "pi5 p50 ms" in out and "laptop p50 ms" in out and "mlp.pyem" in out
    pytest.importorskip("matplotlib", reason="--plot draws with matplotlib")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = json.loads((tmp_path / "pi5.json").read_text())
    bad["models"][0]["cells"][0]["p50_ms"] = "fast"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    rc, _, err = bench(capsys, "--merge", str(tmp_path / "bad.json"))
    assert rc == 2
    assert "not a pyengine bench record: $.models[0].cells[0].p50_ms: is str 'fast'" in err
    rc, _, err = bench(capsys, "--merge", model, str(tmp_path / "none.json"))
    assert rc == 2 and f"{model}: not a JSON bench record" in err and "Traceback" not in err


def test_timing_core_counts_and_percentiles():
    calls = []
    t = timing.measure(lambda: calls.append(1), runs=50, warmup=7, first=True)
    assert len(calls) == 57 and t.runs == 50 and t.first_ms >= 0
    xs = list(np.random.default_rng(1).standard_normal(101))
    for q in (0, 50, 90, 99, 100):
        assert timing.percentile(xs, q) == pytest.approx(np.percentile(xs, q))
    t0 = time.perf_counter()
    t = timing.measure(lambda: time.sleep(0.001), duration=0.05)
    assert 0.05 <= time.perf_counter() - t0 < 1 and t.runs >= 5
    seen: list[float] = []
    a, b = timing.alternate([lambda: None, lambda: None], runs=10, progress=seen.append)
    assert a.runs == b.runs == 10 and seen[-1] == 1.0


def test_emulation_not_detected_natively():
    emu = machine.emulation()
    assert emu["emulated"] is False, emu
    assert platform.machine() in emu["detail"]


ARM_ROOT = Path(os.environ.get("PYENGINE_ARM_CACHE", Path.home() / ".cache" / "pyengine-arm"),
                "sysroot-arm64")


def test_emulation_detected_under_qemu_user():
    """An aarch64 Python under qemu-user imports pyengine.bench.machine from this tree (the
    x86 core does not load there; the check needs only the standard library) and reports the
    emulation. Uses the Debian root that tests/test_arm.py's setup caches."""
    qemu = shutil.which("qemu-aarch64-static")
    python = ARM_ROOT / "usr/bin/python3.11"
    if platform.machine() != "x86_64" or qemu is None or not python.exists():
        pytest.skip("needs an x86-64 host with qemu-aarch64-static and the aarch64 Debian root "
                    "(scripts/arm_setup.sh, as tests/test_arm.py sets up)")
    code = ("import json; from pyengine.bench import machine; "
            "print(json.dumps([machine.emulation(), machine.header_lines(machine.header())]))")
    proc = subprocess.run([qemu, "-L", str(ARM_ROOT), str(python), "-c", code],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, proc.stderr
    emu, lines = json.loads(proc.stdout)
    assert emu["emulated"] is True, emu
    assert emu["detail"].startswith("aarch64 process on a x86_64 kernel"), emu
    assert any(line.startswith("EMULATED: aarch64 process") and "correctness only" in line
               for line in lines), lines


def test_two_inputs_one_from_a_file(tmp_path, capsys):
    """A file's rows are repeated to the batch; the other input is random; outputs by name."""
    import pyengine

    g = pyengine.GraphBuilder()
    a, b = g.input("a", [-1, 3]), g.input("b", [-1, 3])
    s = g.node("Add", [a, b], name="sum")
    g.output(s)
    g.output(g.node("Relu", [s], name="relu"))
    model = g.save(str(tmp_path / "two.pyem"))
    np.save(tmp_path / "b.npy", np.arange(6, dtype=np.float64).reshape(2, 3))
    rc, _, err = bench(capsys, model, "--input", f"b={tmp_path / 'b.npy'}", "--batch", "5", *QUICK,
                       "--json", str(tmp_path / "r.json"))
    assert rc == 0, err
    m = validate(tmp_path / "r.json")["models"][0]
    assert m["cells"][0]["input_shapes"] == [[5, 3], [5, 3]]
    assert [o["name"] for o in m["outputs"]] == ["sum:0", "relu:0"]
    rc, _, err = bench(capsys, model, "--input", str(tmp_path / "b.npy"), *QUICK)
    assert rc == 2 and "--input: the model has 2 inputs ['a', 'b']; name one with --input NAME=" in err


def test_onnxruntime_backend_gets_the_thread_count(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="--backend onnx runs onnxruntime")
    from onnx_models import mlp_onnx

    path = tmp_path / "mlp.onnx"
    path.write_bytes(mlp_onnx())
    rc, _, err = bench(capsys, str(path), "--backend", "onnx", "--runs", "3", "--threads", "1,2",
                       "--profile", "--json", str(tmp_path / "r.json"))
    assert rc == 0, err
    m = validate(tmp_path / "r.json")["models"][0]
    assert m["backend"] == "onnx" and m["threads_control"] == "onnxruntime's intra_op_num_threads"
    assert [c["threads"] for c in m["cells"]] == [1, 2]
    assert m["cells"][0]["profile"] == {
        "unavailable": "the onnx backend has no per-op profile (only the native engine does)"}


def test_progress_bar_on_a_tty_only(tmp_path):
    """Run with stderr on a pseudo-terminal: the bar is drawn there (and wiped); the table on
    stdout (a pipe) has none of it."""
    import pty

    model = mlp(str(tmp_path / "mlp.pyem"))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pyengine", "bench", model, "--duration", "0.4",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=follower,
                            cwd=ROOT, text=True)
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(leader)
    assert proc.returncode == 0
    assert b"\r[" in drawn and b"mlp.pyem" in drawn and b"threads=1 batch=1 (1/1)" in drawn
    assert "\r" not in out and "p50 ms" in out
