"""Channel-moving nodes in the blocked layout: ShuffleNet's channel split (Slice), concat and
shuffle (Reshape-Transpose-Reshape) run as blocked channel gathers on channel counts that are
not multiples of the block, composed with each other where that saves a copy, with reorders
left only at the graph's edges; every result matches the plain NCHW executor and onnxruntime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_layout import RNG, Net, _both_layouts, _close

import pyengine


def _shuffle(net: Net, x: str, c: int, hw: tuple[int, int], groups: int = 2) -> str:
    y = net.op("Reshape", [x], shape=[0, groups, c // groups, *hw])
    y = net.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    return net.op("Reshape", [y], shape=[0, c, *hw])


def _shuffle_units(net: Net) -> list[str]:
    # 58 channels: 29 per half, so neither half nor the shuffle lines up with any block.
    x = net.conv(net.x, 5, 58, 3, act="relu")
    for _ in range(3):
        a = net.op("Slice", [x], axis=1, start=0, end=29)
        b = net.op("Slice", [x], axis=1, start=29, end=58)
        b = net.conv(net.conv(b, 29, 29, 1, act="relu"), 29, 29, 3, groups=29)
        x = _shuffle(net, net.op("Concat", [a, b], axis=1), 58, (11, 9))
    mid = x  # a shuffle output that is also a graph output
    y = net.op("Slice", [x], axis=1, start=5, end=-3)  # 50 channels from lane 5 on
    y = _shuffle(net, net.conv(y, 50, 27, 1), 27, (11, 9), groups=3)
    y = net.op("Concat", [net.op("Relu", [y]), net.op("Slice", [mid], axis=1, start=40, end=47)], axis=1)
    return [net.conv(y, 34, 16, 3), mid]


def _edges_and_fallbacks(net: Net) -> list[str]:
    # A concat of the plain image with a blocked value (the image is reordered); a Transpose
    # that is no channel shuffle (plain, through reorders); a Slice on another axis.
    a = net.conv(net.x, 6, 10, 3)
    y = net.op("Concat", [net.x, a], axis=1)
    y = net.op("Reshape", [y], shape=[0, 2, 8, 7, 10])
    y = net.op("Transpose", [y], perm=[0, 1, 2, 4, 3])
    y = net.op("Reshape", [y], shape=[0, 16, 7, 10])
    y = net.conv(y, 16, 12, 1)
    y = net.op("Slice", [y], axis=2, start=1, end=6)
    return [net.op("Slice", [net.conv(y, 12, 20, 1)], axis=1, start=3, end=19)]


def test_shuffle_units_stay_blocked(tmp_path: Any, monkeypatch: Any) -> None:
    shape = [-1, 5, 11, 9]
    net = Net(shape)
    plain, blocked = _both_layouts(net, _shuffle_units(net), tmp_path, monkeypatch)
    plan = blocked._core.layout([[1, *shape[1:]]])
    # The blocked graph outputs are reordered for the caller; nothing else is.
    assert len(plan["reorders"]) == 2 and all(r.endswith("to plain") for r in plan["reorders"]), plan
    for name in ("slice", "concat", "transpose", "reshape"):
        assert any(b.startswith(name) for b in plan["blocked"]), (name, plan)
    for batch in (1, 3):
        x = RNG.standard_normal((batch, *shape[1:])).astype(np.float32)
        _close(blocked.predict(x), plain.predict(x))
    # Composed gathers: fewer steps than nodes, yet the profile names every node once.
    report = blocked.profile(RNG.standard_normal((1, *shape[1:])).astype(np.float32), runs=1)
    steps = [r for r in report.ops if r.op != "Reorder"]
    names = sorted(n for r in steps for n in r.name.split(" + "))
    assert len(names) == len(set(names))
    gathers = [r for r in steps if "channel gather" in r.kernel]
    assert gathers and all(len(r.name.split(" + ")) == len(r.op.split("+")) for r in gathers)
    assert sum(len(r.name.split(" + ")) for r in gathers) > len(gathers)


def test_channel_moves_at_the_edges_fall_back_correctly(tmp_path: Any, monkeypatch: Any) -> None:
    shape = [-1, 6, 7, 10]
    net = Net(shape)
    plain, blocked = _both_layouts(net, _edges_and_fallbacks(net), tmp_path, monkeypatch)
    plan = blocked._core.layout([[2, *shape[1:]]])
    assert any(r.startswith("x ") and r.endswith("to blocked") for r in plan["reorders"]), plan
    assert not any(b.startswith("transpose") for b in plan["blocked"]), plan
    for batch in (1, 2):
        x = RNG.standard_normal((batch, *shape[1:])).astype(np.float32)
        _close(blocked.predict(x), plain.predict(x))


@pytest.mark.frameworks
def test_shufflenet_runs_blocked_end_to_end(tmp_path: Any) -> None:
    pytest.importorskip("onnx", reason="the onnx extra (pip install 'pyengine[onnx]') is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    import cnn_zoo

    from pyengine.convert import convert

    src = tmp_path / "shufflenet.onnx"
    src.write_bytes(cnn_zoo.shufflenet_v2(image=64, classes=10))
    model: Any = pyengine.load(convert(str(src), str(tmp_path / "shufflenet.pyem")))
    plan = model._core.layout([[1, 3, 64, 64]])
    # The image is read plain by the first conv; the one reorder feeds the classifier's mean.
    assert len(plan["reorders"]) == 1 and plan["reorders"][0].endswith("to plain"), plan
    x = RNG.standard_normal((2, 3, 64, 64)).astype(np.float32)
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    _close(model.predict(x), want)
