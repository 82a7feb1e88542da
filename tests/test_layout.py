"""The blocked (NCHW[c]) layout pass: every graph gives what the plain NCHW executor gives
(PYENGINE_LAYOUT=nchw), through chains that stay blocked, reorders where a chain meets an op
without a blocked kernel or the graph's edge, fused Conv -> Add -> activation, and concurrent
calls; weights that do not fit fail at load, naming the node."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import pyengine
from pyengine.errors import ModelFormatError

RNG = np.random.default_rng(17)


def _w(*shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return (RNG.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _b(n: int) -> np.ndarray:
    return RNG.uniform(-0.2, 0.2, n).astype(np.float32)


class Net:
    """A GraphBuilder with short helpers for the layers these tests chain."""

    def __init__(self, shape: list[int]) -> None:
        self.g = pyengine.GraphBuilder()
        self.x = self.g.input("x", shape)
        self.n = 0

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}{self.n}"

    def const(self, a: np.ndarray) -> str:
        return self.g.constant(self.name("t"), a)

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int | None = None,
             groups: int = 1, act: str = "none", bias: bool = True, dil: int = 1) -> str:
        p = k // 2 * dil if pad is None else pad
        ins = [x, self.const(_w(cout, cin // groups, k, k))] + ([self.const(_b(cout))] if bias else [])
        return self.g.node("Conv2D", ins, name=self.name("conv"), strides=[stride, stride],
                           pads=[p, p, p, p], groups=groups, activation=act, dilations=[dil, dil])

    def op(self, op: str, ins: list[str], **attrs: Any) -> str:
        return self.g.node(op, ins, name=self.name(op.lower()), **attrs)


def _both_layouts(net: Net, outputs: list[str], tmp_path: Any, monkeypatch: Any) -> tuple[Any, Any]:
    for o in outputs:
        net.g.output(o)
    path = net.g.save(os.path.join(tmp_path, "m.pyem"))
    monkeypatch.setenv("PYENGINE_LAYOUT", "nchw")
    plain = pyengine.load(path)
    monkeypatch.setenv("PYENGINE_LAYOUT", "blocked")
    blocked = pyengine.load(path)
    return plain, blocked


def _close(got: Any, want: Any) -> None:
    if isinstance(want, dict):  # several outputs
        assert isinstance(got, dict) and list(got) == list(want)
        got, want = list(got.values()), list(want.values())
    got = got if isinstance(got, list) else [got]
    want = want if isinstance(want, list) else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape
        scale = float(np.max(np.abs(w))) or 1.0
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * scale)


def _resnetish(net: Net) -> list[str]:
    # 3 input channels read plain; 20 channels (not whole blocks); a strided 7x7; max pool;
    # a residual block whose Add and Relu fuse into the second conv; then the head's reorder.
    y = net.conv(net.x, 3, 20, 7, stride=2, act="relu")
    y = net.op("MaxPool", [y], kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    r = net.conv(y, 20, 20, 1, act="relu")
    r = net.conv(r, 20, 20, 3, bias=False)
    y = net.op("Relu", [net.op("Add", [r, y])])
    d = net.conv(y, 20, 24, 3, stride=2)
    s = net.conv(y, 20, 24, 1, stride=2, pad=0)
    y = net.op("Add", [s, d])  # both inputs are convs: the later one takes the other as residual
    y = net.op("GlobalAvgPool", [y])
    y = net.op("Flatten", [y])
    return [net.op("Dense", [y, net.const(_w(10, 24).T.copy()), net.const(_b(10))])]


def _concat_and_plain_ops(net: Net) -> list[str]:
    a = net.conv(net.x, 17, 16, 3, act="relu6")
    b = net.conv(net.x, 17, 16, 1)
    c = net.conv(net.x, 17, 9, 3, dil=2)
    y = net.op("Concat", [a, b, c], axis=1)  # whole blocks, then a partial last one
    bn = [net.const(RNG.uniform(0.5, 1.5, 41).astype(np.float32)) for _ in range(4)]
    y = net.op("BatchNorm", [y, *bn], epsilon=1e-3)  # not folded: it follows a concat
    y = net.conv(y, 41, 12, 3, stride=2)
    z = net.conv(y, 12, 20, 1)
    y = net.op("Concat", [y, z], axis=1)  # 12 channels first: no blocked form, reorders
    y = net.op("Softmax", [y], axis=1)  # no blocked kernel: a reorder to plain NCHW
    y = net.conv(y, 32, 8, 3, act="sigmoid")
    y = net.op("AvgPool", [y], kernel=[2, 2], strides=[2, 2], count_include_pad=False)
    return [y, z]  # z: a graph output also read by the next conv


def _depthwise_grouped_se(net: Net) -> list[str]:
    y = net.conv(net.x, 32, 32, 3, groups=32, act="relu6")  # depthwise, input reordered to blocked
    y = net.conv(y, 32, 64, 3, groups=2, stride=2)  # 32 channels per group: blocked with groups
    y = net.conv(y, 64, 48, 3, groups=4)  # 16 / 12 per group: plain path for some blocks
    s = net.op("GlobalAvgPool", [y])
    s = net.conv(s, 48, 12, 1, act="relu")
    s = net.conv(s, 12, 48, 1, act="sigmoid")
    y = net.op("Mul", [y, s])  # squeeze-excite broadcast
    y = net.op("Add", [s, y])  # the per-channel input first
    y = net.op("Sub", [y, net.const(_b(48).reshape(1, 48, 1, 1))])  # a constant, reordered
    y = net.op("Div", [y, net.op("Add", [s, net.const(np.ones((1, 48, 1, 1), np.float32))])])  # plain
    y = net.op("Mul", [y, net.const(np.full((1, 48, 1, 1), 40.0, np.float32))])  # exp's far range
    y = net.conv(y, 48, 48, 5, groups=48, stride=2, pad=2, act="silu")
    y = net.conv(y, 48, 48, 1, act="hard_swish")
    y = net.op("Clip", [y], min=-0.5, max=0.5)
    return [net.op("Add", [y, net.conv(y, 48, 48, 1)])]


@pytest.mark.parametrize(
    "build, shape",
    [
        (_resnetish, [-1, 3, 29, 31]),
        (_concat_and_plain_ops, [-1, 17, 13, 11]),
        (_depthwise_grouped_se, [-1, 32, 15, 14]),
    ],
)
def test_blocked_layout_matches_plain(build: Callable[[Net], list[str]], shape: list[int],
                                      tmp_path: Any, monkeypatch: Any) -> None:
    net = Net(shape)
    plain, blocked = _both_layouts(net, build(net), tmp_path, monkeypatch)
    assert plain._core.layout([[1, *shape[1:]]])["block"] == 0
    plan = blocked._core.layout([[1, *shape[1:]]])
    assert plan["block"] == {"avx512": 16, "neon": 4}.get(pyengine.info()["kernel_variant"], 8)
    assert plan["blocked"]
    if build is _resnetish:
        # The image is read plain by the first conv; the only reorder feeds Flatten; both
        # residual Adds run inside a conv (the second with its Relu).
        assert len(plan["reorders"]) == 1 and plan["reorders"][0].startswith("globalavgpool"), plan
        assert [f.count("+") for f in plan["fused"]] == [2, 1], plan
        assert "+ relu" in plan["fused"][0], plan
    for batch in (1, 3):
        x = RNG.standard_normal((batch, *shape[1:])).astype(np.float32)
        _close(blocked.predict(x), plain.predict(x))


def test_blocked_layout_concurrent_calls(tmp_path: Any, monkeypatch: Any) -> None:
    net = Net([-1, 3, 29, 31])
    plain, blocked = _both_layouts(net, _resnetish(net), tmp_path, monkeypatch)
    xs = [RNG.standard_normal((b, 3, 29, 31)).astype(np.float32) for b in (1, 2, 1, 3)]
    want = [plain.predict(x) for x in xs]
    got: list[Any] = [None] * len(xs)

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = blocked.predict(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        _close(g, w)


def test_weight_that_does_not_fit_fails_at_load(tmp_path: Any) -> None:
    net = Net([-1, 4, 9, 9])
    y = net.conv(net.x, 4, 16, 3)
    bad = net.g.node("Conv2D", [y, net.const(_w(8, 5, 3, 3))], name="mismatched", pads=[1, 1, 1, 1])
    net.g.output(bad)
    path = net.g.save(os.path.join(tmp_path, "bad.pyem"))
    with pytest.raises(ModelFormatError, match="mismatched"):
        pyengine.load(path)


def test_bias_that_does_not_fit_fails_at_load(tmp_path: Any) -> None:
    net = Net([-1, 4, 9, 9])
    y = net.g.node("Conv2D", [net.x, net.const(_w(16, 4, 3, 3)), net.const(_b(15))], name="short_bias")
    net.g.output(y)
    path = net.g.save(os.path.join(tmp_path, "bad.pyem"))
    with pytest.raises(ModelFormatError, match="short_bias"):
        pyengine.load(path)


def test_unknown_layout_setting_is_refused(tmp_path: Any, monkeypatch: Any) -> None:
    net = Net([-1, 4, 9, 9])
    net.g.output(net.conv(net.x, 4, 8, 3))
    path = net.g.save(os.path.join(tmp_path, "m.pyem"))
    monkeypatch.setenv("PYENGINE_LAYOUT", "nhwc")
    with pytest.raises(ValueError, match="PYENGINE_LAYOUT='nhwc'"):
        pyengine.load(path)
