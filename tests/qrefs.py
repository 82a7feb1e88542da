"""numpy references for the int8 ops (ONNX QuantizeLinear / QLinearConv semantics, float32 steps)."""

from __future__ import annotations

import numpy as np

RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


def quantize(x: np.ndarray, scale: float, zp: int, dtype: str = "uint8") -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zp), computed in float32."""
    lo, hi = RANGES[dtype]
    q = np.rint(np.float32(x) / np.float32(scale)) + np.float32(zp)
    return np.clip(q, lo, hi).astype(np.int64)


def requantize(acc: np.ndarray, scale: np.ndarray, y: dict | None, lo: float, hi: float) -> np.ndarray:
    """int32 sums to float output as the engine's epilogue does (float32 steps)."""
    v = acc.astype(np.float32) * scale.astype(np.float32)
    v = np.clip(v, np.float32(lo), np.float32(hi))
    if y is None:
        return v
    qlo, qhi = RANGES[y.get("dtype", "uint8")]
    inv = np.float32(1.0) / np.float32(y["scale"])
    q = np.clip(np.rint(v * inv) + np.float32(y["zp"]), qlo, qhi)
    return ((q - np.float32(y["zp"])) * np.float32(y["scale"])).astype(np.float32)


def qconv_ref(x: np.ndarray, xq: dict, w: np.ndarray, w_scale: np.ndarray, w_zp: np.ndarray, bias: np.ndarray | None,
              stride: int, pad: int, groups: int, dilation: int, y: dict | None, lo: float, hi: float) -> np.ndarray:
    """QLinearConv2D on NCHW float input; w int OIHW; bias int32 (or None)."""
    xi = quantize(x, xq["scale"], xq["zp"], xq.get("dtype", "uint8")) - xq["zp"]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xi = np.pad(xi, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    oh = (h + 2 * pad - ekh) // stride + 1
    ow = (wd + 2 * pad - ekw) // stride + 1
    wc = w.astype(np.int64) - w_zp.reshape(-1, 1, 1, 1)
    acc = np.zeros((n, o, oh, ow), np.int64)
    og = o // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xi[:, g * cg:(g + 1) * cg, i * dilation:i * dilation + stride * oh:stride,
                           j * dilation:j * dilation + stride * ow:stride]
                acc[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wc[g * og:(g + 1) * og, :, i, j])
    if bias is not None:
        acc += bias.reshape(1, -1, 1, 1)
    scale = (np.float32(xq["scale"]) * w_scale.astype(np.float32)).reshape(1, -1, 1, 1)
    return requantize(acc, scale, y, lo, hi)
