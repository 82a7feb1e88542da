"""The per-op profiler: model.profile on real CNNs converted from ONNX (tests/cnn_zoo.py at small
image sizes), its table, its Chrome trace, and `pyengine run --profile`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import pyengine

pytestmark = pytest.mark.frameworks
onnx = pytest.importorskip("onnx", reason="the onnx extra (pip install 'pyengine[onnx]') is not installed")
import cnn_zoo  # noqa: E402 - needs onnx

from pyengine.convert import to_builder  # noqa: E402
from pyengine.locate import locate  # noqa: E402

IMAGE = 64


@pytest.fixture(scope="module", params=["mobilenet_v2", "squeezenet1_1"])
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(.pyem path, the native graph's nodes) of a zoo model at IMAGE x IMAGE."""
    d = tmp_path_factory.mktemp(request.param)
    src = d / f"{request.param}.onnx"
    src.write_bytes(cnn_zoo.MODELS[request.param](image=IMAGE, classes=10))
    builder = to_builder(locate(str(src)))
    return builder.save(str(d / "model.pyem")), builder.graph["nodes"]


def test_profile_covers_every_node_with_positive_times(converted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, nodes = converted
    model = pyengine.load(path)
    x = np.random.default_rng(0).standard_normal((2, 3, IMAGE, IMAGE)).astype(np.float32)
    trace = tmp_path / "trace.json"
    report = model.profile(x, runs=3, trace_path=trace)

    # One entry per executor step: a node, a fused "conv + add [+ act]" chain, or a reorder
    # between plain NCHW and the blocked layout; together the steps cover every node once.
    steps = [r for r in report.ops if r.op != "Reorder"]
    assert sorted(name for r in steps for name in r.name.split(" + ")) == sorted(n["name"] for n in nodes)
    by_name = {n["name"]: n for n in nodes}
    blocked = f"NCHW{model._core.layout([[2, 3, IMAGE, IMAGE]])['block']}c"
    for r in report.ops:
        assert len(r.times_ms) == 3 and all(t > 0 for t in r.times_ms), r
        assert r.kernel, r
        if r.op == "Reorder":
            assert blocked in r.layout and ("NCHW ->" in r.layout or "-> NCHW" in r.layout), r
            continue
        assert r.op.split("+") == [by_name[name]["op"] for name in r.name.split(" + ")], r
        if r.op.startswith("Conv2D"):
            assert r.layout == blocked and r.kernel.startswith(pyengine._core.kernel_variant()), r
    assert sum(r.share for r in report.ops) == pytest.approx(1.0, abs=1e-9)
    # The nodes run inside the call, so their sum is below each call's wall time.
    assert 0 < report.total_ms <= max(report.calls_ms)
    # Shapes are the run's: the batch of 2 reaches the classifier, which makes 10 classes.
    first = report.ops[0]
    assert first.input_shapes[0] == (2, 3, IMAGE, IMAGE)
    assert report.ops[-1].output_shapes[0] == (2, 10)
    depthwise = [r for r in report.ops if "depthwise" in r.kernel]
    assert bool(depthwise) == (path.find("mobilenet") >= 0)

    events = json.loads(trace.read_text())["traceEvents"]
    runs = [e for e in events if e["name"] == "model_run"]
    node_events = [e for e in events if e.get("cat") == "Node"]
    assert len(runs) == 3 and len(node_events) == 3 * len(report.ops)
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    for e in node_events:  # each node lies inside its call
        call = runs[e["args"]["run"]]
        assert call["ts"] <= e["ts"] and e["ts"] + e["dur"] <= call["ts"] + call["dur"] + 1e-3
        assert e["args"]["op_name"] in {r.op for r in report.ops if r.name == e["name"]}

    text = report.table()
    for n in nodes:
        assert n["name"] in text
    assert "by op type" in text and "Conv2D" in text
    assert len(report.table(top=3).splitlines()) < len(text.splitlines())


def test_profile_rejects_bad_arguments(converted) -> None:  # type: ignore[no-untyped-def]
    model = pyengine.load(converted[0])
    x = np.zeros((1, 3, IMAGE, IMAGE), np.float32)
    with pytest.raises(ValueError, match="runs must be >= 1, got 0"):
        model.profile(x, runs=0)
    with pytest.raises(ValueError, match="shape"):
        model.profile(np.zeros((1, 4, IMAGE, IMAGE), np.float32), runs=1)


def test_cli_run_profile(converted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, nodes = converted
    np.save(tmp_path / "x.npy", np.ones((1, 3, IMAGE, IMAGE), np.float32))
    trace = tmp_path / "cli.json"
    out = subprocess.run(
        [sys.executable, "-m", "pyengine", "run", path, "--input", str(tmp_path / "x.npy"),
         "--profile", "--runs", "2", "--profile-json", str(trace)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert " nodes, 2 runs" in out.stdout
    for n in nodes:
        assert n["name"] in out.stdout
    assert len([e for e in json.loads(trace.read_text())["traceEvents"] if e["name"] == "model_run"]) == 2


def test_cli_profile_of_a_framework_model_says_why(tmp_path) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(cnn_zoo.mobilenet_v2(image=32, classes=10))
    np.save(tmp_path / "x.npy", np.ones((1, 3, 32, 32), np.float32))
    out = subprocess.run(
        [sys.executable, "-m", "pyengine", "run", str(src), "--backend", "onnx", "--input",
         str(tmp_path / "x.npy"), "--profile"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "--profile times the native engine's ops" in out.stderr and "onnx backend" in out.stderr
