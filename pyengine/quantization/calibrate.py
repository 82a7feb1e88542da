"""Calibration: activation ranges from sample data (min/max, percentile, entropy) and the
uint8 scale and zero point they give."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

METHODS = ("minmax", "percentile", "entropy")
#: Values kept per tensor for the percentile and entropy methods (a uniform subsample).
_SAMPLE_CAP = 1 << 18


class RangeCollector:
    """Running min/max and a bounded subsample of one value's elements."""

    def __init__(self, seed: int = 0) -> None:
        self.lo = np.inf
        self.hi = -np.inf
        self._samples: list[np.ndarray] = []
        self._kept = 0
        self._rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray) -> None:
        flat = np.asarray(x, np.float32).ravel()
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            return
        self.lo = min(self.lo, float(flat.min()))
        self.hi = max(self.hi, float(flat.max()))
        room = _SAMPLE_CAP // 8
        if flat.size > room:
            flat = self._rng.choice(flat, room, replace=False)
        self._samples.append(flat)
        self._kept += flat.size
        if self._kept > _SAMPLE_CAP:  # thin every kept batch by half
            self._samples = [s[::2] for s in self._samples]
            self._kept = sum(s.size for s in self._samples)

    def range(self, method: str, percentile: float) -> tuple[float, float]:
        """The calibrated [lo, hi], always containing 0 (zero must be exact on the grid)."""
        if not np.isfinite(self.lo):
            return 0.0, 1.0
        if method == "minmax":
            lo, hi = self.lo, self.hi
        else:
            data = np.concatenate(self._samples)
            if method == "percentile":
                lo = float(np.percentile(data, 100.0 - percentile)) if self.lo < 0 else 0.0
                hi = float(np.percentile(data, percentile))
            else:
                # Exact zeros (the ReLU spike) are exact on any grid: left out of the histogram.
                mag = np.abs(data[data != 0])
                t = _entropy_threshold(mag, 256 if self.lo >= 0 else 128) if mag.size else 1.0
                lo, hi = max(-t, self.lo), min(t, self.hi)
        return min(lo, 0.0), max(hi, 0.0)


def _entropy_threshold(mag: np.ndarray, levels: int, bins: int = 2048) -> float:
    """The clipping threshold minimizing KL(P || Q) between the histogram of |x| clipped at the
    threshold and its `levels`-level quantization (TensorRT's entropy calibration)."""
    top = float(mag.max())
    if top == 0.0:
        return 1.0
    hist, edges = np.histogram(mag, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    best, best_i = np.inf, bins
    for i in range(levels, bins + 1, max(levels // 8, 1)):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        # Q: the i bins merged into `levels` groups, each group's mass spread over its nonzero bins.
        group = (np.arange(i) * levels) // i
        nonzero = hist[:i] > 0
        mass = np.bincount(group, weights=hist[:i], minlength=levels)
        count = np.bincount(group, weights=nonzero.astype(np.float64), minlength=levels)
        q = np.where(nonzero, mass[group] / np.maximum(count[group], 1.0), 0.0)
        ps, qs = p / p.sum(), q / max(q.sum(), 1e-30)
        nz = ps > 0
        if np.any(nz & (qs == 0)):
            continue
        kl = float(np.sum(ps[nz] * np.log(ps[nz] / qs[nz])))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i])


def uint8_params(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point mapping [lo, hi] (lo <= 0 <= hi) onto 0..255."""
    scale = (hi - lo) / 255.0
    if not scale > 1e-12:
        return 1.0, 0
    zp = int(np.clip(np.rint(-lo / scale), 0, 255))
    return float(scale), zp


def load_calibration(data: Any, input_name: str, input_shape: Sequence[int]) -> np.ndarray:
    """Calibration samples as one float32 array [N, ...] matching the model's input.

    ``data``: an array, a .npy file, or a directory of .npy files (each one sample or a batch).

    Raises
    ------
    ValueError
        Empty data, a non-float dtype, or a shape that does not fit the input (expected vs got).
    """
    want = [int(d) for d in input_shape]
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if os.path.isdir(path):
            files = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
            if not files:
                raise ValueError(f"calibration directory '{path}' holds no .npy files")
            arrays = [_as_batch(np.load(os.path.join(path, f)), want, f"{path}/{f}") for f in files]
            out = np.concatenate(arrays)
        else:
            out = _as_batch(np.load(path), want, path)
    else:
        out = _as_batch(np.asarray(data), want, "calibration data")
    if out.shape[0] == 0:
        raise ValueError(f"calibration data is empty (0 samples); expected at least 1 sample of {want[1:]}")
    return out


def _as_batch(arr: np.ndarray, want: list[int], what: str) -> np.ndarray:
    if arr.dtype.kind != "f":
        raise ValueError(f"{what} has dtype {arr.dtype}; expected float32 (the model's input dtype)")
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {list(arr.shape)}); expected samples of {want[1:]}")
    if arr.ndim == len(want) - 1:  # one sample
        arr = arr[None]
    fits = arr.ndim == len(want) and all(w < 0 or w == g for w, g in zip(want[1:], arr.shape[1:]))
    if not fits:
        raise ValueError(f"{what} has shape {list(arr.shape)}; the model's input takes {want} "
                         f"(N samples of {want[1:]}, -1 = any)")
    return np.ascontiguousarray(arr, dtype=np.float32)
