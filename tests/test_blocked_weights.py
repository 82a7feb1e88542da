"""Blocked convolution weights stored in the .pyem (``convert --weight-layout``): where the
kernels use the stored block they read the weights in place from the mapped file (no copy,
no growth of private memory), elsewhere the engine repacks once from the plain weights, and
every file gives the same outputs as the plain one under every kernel variant. A stored form
that does not fit its node fails at load with ModelFormatError naming the node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import pyengine
from pyengine import _core
from pyengine.cli import main
from pyengine.convert import weight_blocks
from pyengine.errors import ModelFormatError

RNG = np.random.default_rng(23)
SHAPE = [2, 3, 19, 21]


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)


def _net() -> pyengine.GraphBuilder:
    """Every blocked convolution form: a plain-input first conv (3 channels, odd sizes), a
    stride-2 direct conv, a depthwise conv, a grouped conv whose groups are whole blocks, a 1x1
    with an odd output count and no bias, a weight shared by two convolutions, and an NHWC
    conv (which has no blocked form and must stay as it is)."""
    g = pyengine.GraphBuilder()
    x = g.input("x", [-1, 3, -1, -1])

    def conv(name: str, h: str, w: str, bias: int | None, **attrs: Any) -> str:
        ins = [h, w] + ([g.constant(f"{name}/b", _w(1, bias)[0])] if bias else [])
        return g.node("Conv2D", ins, name=name, **attrs)

    h = conv("first", x, g.constant("first/w", _w(64, 3, 3, 3)), 64, pads=[1, 1, 1, 1], activation="relu")
    h = conv("down", h, g.constant("down/w", _w(64, 64, 3, 3)), 64, pads=[1, 1, 1, 1], strides=[2, 2])
    h = conv("dw", h, g.constant("dw/w", _w(64, 1, 3, 3)), 64, pads=[1, 1, 1, 1], groups=64,
             activation="relu6")
    h = conv("grouped", h, g.constant("grouped/w", _w(64, 32, 3, 3)), 64, pads=[1, 1, 1, 1], groups=2)
    shared = g.constant("shared/w", _w(64, 64, 1, 1))
    a = conv("shared_a", h, shared, 64)
    b = conv("shared_b", a, shared, None, activation="relu")
    h = conv("odd", g.node("Add", [a, b], name="add"), g.constant("odd/w", _w(37, 64, 1, 1)), None)
    g.output(h)
    t = g.node("Transpose", [h], name="to_nhwc", perm=[0, 2, 3, 1])
    g.output(conv("nhwc", t, g.constant("nhwc/w", _w(5, 37, 3, 3)), 5, layout="NHWC", pads=[1, 1, 1, 1]))
    return g


CONVS = ["first", "down", "dw", "grouped", "shared_a", "shared_b", "odd"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("blocked")
    g = _net()
    out = {"plain": g.save(d / "plain.pyem")}
    for block in (4, 8, 16):
        one = _net_copy(g)
        assert one.add_blocked_weights(block) == len(CONVS)
        out[f"nchwc{block}"] = one.save(d / f"nchwc{block}.pyem")
    for block in (16, 8, 4):
        g.add_blocked_weights(block)
    out["all"] = g.save(d / "all.pyem")
    return out


def _net_copy(g: pyengine.GraphBuilder) -> pyengine.GraphBuilder:
    """A builder with the same graph and tensors (each blocked file from the same weights)."""
    c = pyengine.GraphBuilder()
    c._inputs, c._outputs = list(g._inputs), list(g._outputs)
    c._nodes = json.loads(json.dumps(g._nodes))
    c._tensors, c._names = dict(g._tensors), set(g._names)
    return c


@pytest.fixture
def each_isa() -> Iterator[list[str]]:
    best = _core.kernel_variant()
    try:
        yield _core.kernels_available()
    finally:
        _core.set_isa(best)


def _layout(model: Any) -> dict[str, Any]:
    return model._core.layout([SHAPE])


def _outputs(model: Any, x: np.ndarray) -> list[np.ndarray]:
    return list(model.predict({"x": x}).values())


def test_stored_block_is_read_in_place_and_outputs_are_identical(files: dict[str, str],
                                                                   each_isa: list[str]) -> None:
    x = RNG.standard_normal(SHAPE).astype(np.float32)
    reference: list[np.ndarray] | None = None
    for isa in each_isa:
        _core.set_isa(isa)
        block = _core.nchwc_block()
        plain = pyengine.load(files["plain"])
        want = _outputs(plain, x)
        report = _layout(plain)
        assert report["weights_mapped"] == [] and report["weights_repacked_bytes"] > 0
        for name in ("all", f"nchwc{block}"):
            model = pyengine.load(files[name])
            report = _layout(model)
            # Zero-copy: every blocked convolution reads the file's bytes; nothing was repacked.
            assert sorted(report["weights_mapped"]) == sorted(CONVS), (isa, name, report)
            assert report["weights_repacked_bytes"] == 0
            got = _outputs(model, x)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w, err_msg=f"{isa} {name}")
        # A file holding another block only: repacked once from its plain weights, same outputs.
        other = next(b for b in (4, 8, 16) if b != block)
        model = pyengine.load(files[f"nchwc{other}"])
        report = _layout(model)
        assert report["weights_mapped"] == [] and report["weights_repacked_bytes"] > 0
        for g, w in zip(_outputs(model, x), want):
            np.testing.assert_array_equal(g, w, err_msg=f"{isa} nchwc{other}")
        # Across variants the arithmetic differs (FMA, summation order), not the result.
        if reference is None:
            reference = want
        for g, w in zip(want, reference):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(w))))


_RSS_CHILD = """
import sys, numpy as np, pyengine
def anon():
    for line in open('/proc/self/smaps_rollup'):
        if line.startswith('Anonymous:'):
            return int(line.split()[1]) * 1024
before = anon()
m = pyengine.load(sys.argv[1])
m.predict(np.ones((1, 512, 4, 4), np.float32))
print(anon() - before, m._core.layout([[1, 512, 4, 4]])['weights_mapped_bytes'])
"""


def test_private_memory_does_not_grow_by_the_weights(tmp_path: Any) -> None:
    """Process memory, not only the engine's report: loading a file that holds the blocked form
    adds far less anonymous (private) memory than the weights' size; the plain file adds it."""
    g = pyengine.GraphBuilder()
    x = g.input("x", [-1, 512, 4, 4])
    # 1x1: a path that reads the blocked weights as stored (a 3x3 stride-1 one may take the
    # Winograd path, which transforms its weights once, from either file).
    w = RNG.standard_normal((8192, 512, 1, 1)).astype(np.float32)  # 16.8 MB
    g.output(g.node("Conv2D", [x, g.constant("w", w)], name="big"))
    plain = g.save(tmp_path / "plain.pyem")
    g.add_blocked_weights(_core.nchwc_block())
    blocked = g.save(tmp_path / "blocked.pyem")
    grown = {}
    for name, path in (("plain", plain), ("blocked", blocked)):
        r = subprocess.run([sys.executable, "-c", _RSS_CHILD, path], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYENGINE_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr
        growth, mapped = (int(v) for v in r.stdout.split())
        grown[name] = growth
        assert mapped == (w.nbytes if name == "blocked" else 0)
    assert grown["plain"] > 0.9 * w.nbytes, grown
    assert grown["blocked"] < 0.25 * w.nbytes, grown


def _with_entry(tmp_path: Any, node: str, entry: dict[str, Any]) -> str:
    """The net with every block-16 form stored, then `node`'s entry replaced by `entry`, whose
    tensor may name another node's stored form as ``{node}``."""
    g = _net()
    g.add_blocked_weights(16)
    g.constant("ints", np.zeros(4, np.int32))
    stored = {n["name"]: n["blocked_weights"][0]["tensor"] for n in g._nodes if "blocked_weights" in n}
    for n in g._nodes:
        if n["name"] == node:
            n["blocked_weights"] = [{k: v.format(**stored) if isinstance(v, str) else v for k, v in entry.items()}]
    return g.save(tmp_path / "bad.pyem")


@pytest.mark.parametrize("node, entry, message", [
    ("down", {"block": 16, "tensor": "{first}"},
     r"node 'down' \(Conv2D\).*has shape \[4, 3, 3, 3, 1, 16\].*packs to \[4, 4, 3, 3, 16, 16\]"),
    ("down", {"block": 8, "tensor": "{down}"}, r"node 'down'.*block-8 weight has shape"),
    ("down", {"block": 12, "tensor": "{down}"}, r"node 'down'.*block 12 is not 4, 8 or 16"),
    ("down", {"block": 16, "tensor": "nowhere"}, r"node 'down'.*'nowhere', which is not a tensor"),
    ("down", {"block": 16, "tensor": "ints"}, r"node 'down'.*int32, not float32"),
    ("down", {"block": 16}, r"node 'down'.*entries must be"),
    ("add", {"block": 16, "tensor": "{down}"}, r"node 'add' \(Add\).*takes no blocked weights"),
    ("nhwc", {"block": 16, "tensor": "{down}"}, r"node 'nhwc'.*NHWC, not NCHW"),
])
def test_blocked_weight_that_does_not_fit_fails_at_load(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                        node: str, entry: dict[str, Any], message: str) -> None:
    path = _with_entry(tmp_path, node, entry)
    with pytest.raises(ModelFormatError, match=message):
        pyengine.load(path)
    # Refused also where the blocked layout is off: a file fails at load on every machine.
    monkeypatch.setenv("PYENGINE_LAYOUT", "nchw")
    with pytest.raises(ModelFormatError, match=message):
        pyengine.load(path)


def test_weight_layout_names(each_isa: list[str]) -> None:
    assert weight_blocks("plain") == []
    assert weight_blocks("nchwc16, nchwc4,nchwc16") == [16, 4]
    assert weight_blocks("auto") == [_core.nchwc_block()]
    for bad in ("nchwc32", "plain,nchwc8", "NCHW"):
        with pytest.raises(ValueError, match=f"weight_layout {bad!r}"):
            weight_blocks(bad)


def test_cli_convert_weight_layout(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from onnx_models import cnn_onnx

    src = tmp_path / "cnn.onnx"
    src.write_bytes(cnn_onnx())
    dst = str(tmp_path / "cnn.pyem")
    assert main(["convert", str(src), "-o", dst, "--weight-layout", "auto", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == dst
    model = pyengine.load(dst)
    report = model._core.layout([[1, 1, 28, 28]])
    assert report["weights_mapped"] and report["weights_repacked_bytes"] == 0
    plain = str(tmp_path / "plain.pyem")
    assert main(["convert", str(src), "-o", plain]) == 0
    x = RNG.standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), pyengine.load(plain).predict(x))
    capsys.readouterr()
    assert main(["convert", str(src), "-o", str(tmp_path / "x.pyem"), "--weight-layout", "nchwc5"]) == 2
    assert "'nchwc5' is not one of plain, auto" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.pyem")
