"""Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions in the blocked layout, end to end: a model
gives what the direct kernels give (PYENGINE_WINOGRAD=0) and what the plain NCHW executor gives,
through odd channel counts, tiles cut by the edge, padding 0 and 1, batch > 1 and the fused
residual add + ReLU; the profiler names the kernel that ran; the switch is read at load and
refuses unknown values; concurrent calls stay correct; a weight that does not fit fails at load.
The kernel variants themselves are compared on odd sizes in tests/cpp/test_winograd.cpp."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pytest
from test_layout import Net, _close

import pyengine
from pyengine.errors import ModelFormatError


def _chain(batch: int = -1) -> tuple[Net, str]:
    """3x3 stride-1 convolutions with 17, 35 and 40 channels on 13x11 (not multiples of the
    4x4 tile or of any block), padding 1 and 0, a residual block and a strided 3x3 (direct)."""
    net = Net([batch, 5, 13, 11])
    a = net.conv(net.x, 5, 17, 3, act="relu")             # 5 < block on AVX-512: plain input, direct
    b = net.conv(a, 17, 35, 3, act="relu")                # Winograd, pad 1
    c = net.conv(b, 35, 35, 3, act="relu")
    d = net.conv(c, 35, 35, 3)
    r = net.op("Relu", [net.op("Add", [d, b])])           # fused residual + ReLU in the epilogue
    e = net.conv(r, 35, 40, 3, pad=0, act="relu")         # pad 0: 11x9
    f = net.conv(e, 40, 24, 3, stride=2)                  # strided: direct
    return net, f


def _load(path: str, monkeypatch: Any, winograd: str | None, layout: str = "blocked") -> Any:
    monkeypatch.setenv("PYENGINE_LAYOUT", layout)
    if winograd is None:
        monkeypatch.delenv("PYENGINE_WINOGRAD", raising=False)
    else:
        monkeypatch.setenv("PYENGINE_WINOGRAD", winograd)
    return pyengine.load(path)


@pytest.fixture
def chain_path(tmp_path: Any) -> str:
    net, out = _chain()
    net.g.output(out)
    return str(net.g.save(os.path.join(tmp_path, "chain.pyem")))


def _kernels(model: Any, x: np.ndarray) -> list[str]:
    return [r.kernel for r in model.profile(x, runs=1).ops if r.op.startswith("Conv2D")]


def test_winograd_matches_direct_and_plain(chain_path: str, monkeypatch: Any) -> None:
    plain = _load(chain_path, monkeypatch, "0", layout="nchw")
    direct = _load(chain_path, monkeypatch, "0")
    wino = _load(chain_path, monkeypatch, "1")
    auto = _load(chain_path, monkeypatch, None)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 5, 13, 11)).astype(np.float32)
        want = plain.predict(x)
        _close(direct.predict(x), want)
        _close(wino.predict(x), want)
        _close(auto.predict(x), want)
    x = np.random.default_rng(0).standard_normal((2, 5, 13, 11)).astype(np.float32)
    forced, off = _kernels(wino, x), _kernels(direct, x)
    assert sum("winograd F(4x4,3x3)" in k for k in forced) == 4, forced
    assert not any("winograd" in k for k in off), off
    assert any("Add" in r.op and "winograd" in r.kernel for r in wino.profile(x, runs=1).ops)  # fused
    # The first (plain input) and the strided convolution stay direct whatever the switch says.
    assert "winograd" not in forced[0] and "winograd" not in forced[-1], forced


def test_winograd_switch_is_checked_at_load(chain_path: str, monkeypatch: Any) -> None:
    with pytest.raises(ValueError, match="PYENGINE_WINOGRAD='yes'"):
        _load(chain_path, monkeypatch, "yes")


def test_concurrent_calls_with_winograd(chain_path: str, monkeypatch: Any) -> None:
    wino = _load(chain_path, monkeypatch, "1")
    direct = _load(chain_path, monkeypatch, "0")
    xs = [np.random.default_rng(10 + i).standard_normal((1 + i % 2, 5, 13, 11)).astype(np.float32) for i in range(4)]
    want = [direct.predict(x) for x in xs]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(5):
                _close(wino.predict(xs[i]), want[i])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("winograd", ["1", None])
def test_winograd_weight_that_does_not_fit_fails_at_load(tmp_path: Any, monkeypatch: Any,
                                                         winograd: str | None) -> None:
    net = Net([-1, 32, 12, 12])
    y = net.conv(net.x, 32, 32, 3)
    bad = net.g.node("Conv2D", [y, net.const(np.ones((32, 31, 3, 3), np.float32))], name="wino_mismatch",
                     pads=[1, 1, 1, 1])
    net.g.output(bad)
    path = net.g.save(os.path.join(tmp_path, "bad.pyem"))
    with pytest.raises(ModelFormatError, match="wino_mismatch"):
        _load(path, monkeypatch, winograd)
