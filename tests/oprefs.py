"""numpy references for the native ops, and a helper that runs one op through the engine."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

import pyengine

ACTIVATIONS = {
    "none": lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "relu6": lambda v: np.clip(v, 0, 6),
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "tanh": np.tanh,
    "hard_sigmoid": lambda v: np.clip(0.2 * v + 0.5, 0, 1),  # ONNX's default alpha and beta
    "hard_swish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1),
    "silu": lambda v: v / (1 + np.exp(-v)),
}


def lrn_ref(x: np.ndarray, size: int, alpha: float, beta: float, bias: float, axis: int = 1) -> np.ndarray:
    """ONNX LRN across the channels of ``axis``: x / (bias + alpha / size * window sum of x^2)^beta."""
    xd = np.moveaxis(x.astype(np.float64), axis, 0)
    c = xd.shape[0]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = xd**2
    sums = np.stack([sq[max(0, i - lo):min(c, i + hi + 1)].sum(axis=0) for i in range(c)])
    return np.moveaxis(xd / (bias + alpha / size * sums) ** beta, 0, axis)


def run_op(op: str, inputs: list[np.ndarray], constants: dict[str, np.ndarray] | None = None,
           order: list[str] | None = None, free_batch: bool = True, **attrs: Any) -> np.ndarray:
    """Build a one-node graph (runtime inputs x0.., constant tensors by name) and run it."""
    g = pyengine.GraphBuilder()
    names = []
    for i, a in enumerate(inputs):
        shape = list(a.shape)
        if free_batch and shape:
            shape[0] = -1
        names.append(g.input(f"x{i}", shape))
    for name, arr in (constants or {}).items():
        g.constant(name, arr)
    node_inputs = order if order is not None else names + list(constants or {})
    g.output(g.node(op, node_inputs, name="node", **attrs))
    with tempfile.TemporaryDirectory() as d:
        path = g.save(os.path.join(d, "op.pyem"))
        model = pyengine.load(path)
        feed = {n: a for n, a in zip(names, inputs)}
        out = model.predict(feed if len(names) > 1 else inputs[0])
    assert isinstance(out, np.ndarray)
    return out


def conv2d_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides, dilations, pads,
               groups: int, layout: str) -> np.ndarray:
    """Convolution by shifted slices; x in `layout`, w OIHW, pads [top, left, bottom, right]."""
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    x = x.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = strides
    dh, dw = dilations
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - ((kh - 1) * dh + 1)) // sh + 1
    ow = (wd + pads[1] + pads[3] - ((kw - 1) * dw + 1)) // sw + 1
    og = o // groups
    y = np.zeros((n, o, oh, ow))
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw]
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    if layout == "NHWC":
        y = y.transpose(0, 2, 3, 1)
    return y


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow SAME padding (extra at the end)."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def pool_ref(x: np.ndarray, kind: str, kernel, strides, pads, layout: str,
             count_include_pad: bool = False, ceil_mode: bool = False) -> np.ndarray:
    """Max/avg pooling by windows; pads [top, left, bottom, right]."""
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = strides

    def out_size(size, k, s, p0, p1):
        span = size + p0 + p1 - k
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= size + p0:
            o -= 1
        return o

    oh = out_size(h, kh, sh, pads[0], pads[2])
    ow = out_size(w, kw, sw, pads[1], pads[3])
    y = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - pads[0], j * sw - pads[1]
            hs, he = max(h0, 0), min(h0 + kh, h)
            ws, we = max(w0, 0), min(w0 + kw, w)
            win = x[:, :, hs:he, ws:we].astype(np.float64)
            if kind == "max":
                y[:, :, i, j] = win.max(axis=(2, 3)) if win.size else 0
            else:
                if count_include_pad:
                    cnt = (min(h0 + kh, h + pads[2]) - h0) * (min(w0 + kw, w + pads[3]) - w0)
                else:
                    cnt = (he - hs) * (we - ws)
                y[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    if layout == "NHWC":
        y = y.transpose(0, 2, 3, 1)
    return y
