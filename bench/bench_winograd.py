"""Winograd F(4x4, 3x3) against the direct blocked kernel, in one process: each 3x3 stride-1
layer shape of ResNet-18/50, VGG-16 and DenseNet-121 at 224x224 (and a few small ones that
bound the rule) as a one-convolution model loaded twice, with PYENGINE_WINOGRAD=0 (direct) and
=1 (Winograd wherever the geometry allows), the two taking turns call by call; then whole
models (tests/cnn_zoo.py) with Winograd off and on (the default rule), against onnxruntime for
accuracy. The layer table is what kernels/conv_winograd.cpp's winograd_pick rule is read from.

Usage: python bench/bench_winograd.py [--threads 1,2] [--models resnet50,vgg16] [--out NAME]
Writes bench/results/<NAME>.md with ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
import tempfile
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)
import cnn_zoo  # noqa: E402
from common import pct, write_markdown  # noqa: E402
from machine import describe  # noqa: E402

import pyengine  # noqa: E402
from pyengine.bench import timing  # noqa: E402
from pyengine.sysinfo import set_thread_count  # noqa: E402

#: (C, O, H=W): the 3x3 stride-1 layers of the benchmark nets at 224x224, then small ones.
LAYERS = [
    (64, 64, 56), (128, 128, 28), (256, 256, 14), (512, 512, 7),  # ResNet-18/50
    (64, 64, 224), (128, 128, 112), (256, 256, 56), (512, 512, 28), (512, 512, 14),  # VGG-16
    (128, 32, 56), (128, 32, 28), (128, 32, 14), (128, 32, 7),  # DenseNet-121
    (16, 16, 56), (32, 32, 28), (64, 64, 8), (64, 64, 4), (256, 256, 4), (512, 512, 6),
]


def _load(path: str, mode: str) -> Any:
    os.environ["PYENGINE_WINOGRAD"] = mode
    try:
        return pyengine.load(path)
    finally:
        del os.environ["PYENGINE_WINOGRAD"]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b))) / (float(np.max(np.abs(b))) or 1.0)


def layer_rows(folder: str, threads: list[int], seconds: float) -> list[str]:
    rows = []
    rng = np.random.default_rng(0)
    for c, o, hw in LAYERS:
        g = pyengine.GraphBuilder()
        x = g.input("x", [1, c, hw, hw])
        w = (rng.standard_normal((o, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
        y = g.node("Conv2D", [x, g.constant("w", w), g.constant("b", np.zeros(o, np.float32))],
                   name="conv", pads=[1, 1, 1, 1], activation="relu")
        # A second convolution keeps the first one's output blocked (no reorder in the time).
        w2 = (rng.standard_normal((o, o, 1, 1)) * np.sqrt(2.0 / o)).astype(np.float32)
        g.output(g.node("Conv2D", [y, g.constant("w2", w2)], name="pw"))
        path = g.save(os.path.join(folder, f"l{c}_{o}_{hw}.pyem"))
        direct, wino = _load(path, "0"), _load(path, "1")
        xin = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        err = _rel(np.asarray(wino.predict(xin)), np.asarray(direct.predict(xin)))
        for t in threads:
            set_thread_count(t)
            a, b = timing.alternate([functools.partial(direct.predict, xin), functools.partial(wino.predict, xin)],
                                    runs=30, duration=seconds, warmup=2, min_runs=5)
            d, wv = pct(a.times_ms, 50), pct(b.times_ms, 50)
            rows.append(f"| {c} | {o} | {hw}x{hw} | {t} | {d:.3f} | {wv:.3f} | {d / wv:.2f}x | {err:.1e} |")
            print(rows[-1], flush=True)
    return rows


def model_rows(folder: str, models: list[str], threads: list[int], seconds: float) -> list[str]:
    import onnxruntime as ort

    rows = []
    rng = np.random.default_rng(0)
    for name in models:
        onnx_path = os.path.join(folder, f"{name}.onnx")
        with open(onnx_path, "wb") as fh:
            fh.write(cnn_zoo.MODELS[name](image=224))
        path = pyengine.convert(onnx_path, os.path.join(folder, f"{name}.pyem"))
        direct, wino = _load(path, "0"), _load(path, "auto")
        x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        ref = sess.run(None, {"x": x})[0]
        out_d, out_w = np.asarray(direct.predict(x)), np.asarray(wino.predict(x))
        err_d, err_w, err_dw = _rel(out_d, ref), _rel(out_w, ref), _rel(out_w, out_d)
        for t in threads:
            set_thread_count(t)
            a, b = timing.alternate([functools.partial(direct.predict, x), functools.partial(wino.predict, x)],
                                    runs=20, duration=seconds, warmup=2, min_runs=5)
            d, wv = pct(a.times_ms, 50), pct(b.times_ms, 50)
            rows.append(f"| {name} | {t} | {d:.2f} | {wv:.2f} | {d / wv:.2f}x | {err_d:.1e} | {err_w:.1e} | "
                        f"{err_dw:.1e} |")
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--models", default="resnet18,resnet50,vgg16,densenet121")
    ap.add_argument("--skip-layers", action="store_true")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    models = [m for m in args.models.split(",") if m]
    load = os.getloadavg()
    lines = [f"# Winograd F(4x4,3x3) vs direct (bench/bench_winograd.py, {datetime.date.today()})", "",
             describe(), "", f"Load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.", ""]
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_layers:
            lines += ["## One 3x3 stride-1 layer (pad 1, ReLU), batch 1, p50 ms, direct vs Winograd", "",
                      "| C | O | H x W | threads | direct | Winograd | speed-up | max rel diff |",
                      "|---|---|---|---|---|---|---|---|"]
            lines += layer_rows(folder, threads, args.seconds)
            lines.append("")
        if models:
            lines += ["## Whole models, batch 1, p50 ms, Winograd off (PYENGINE_WINOGRAD=0) vs the default rule", "",
                      "Relative differences: max|a - b| / max|b| of the output, against onnxruntime "
                      "(ORT) and between the two.", "",
                      "| model | threads | direct | Winograd | speed-up | direct vs ORT | Winograd vs ORT | "
                      "Winograd vs direct |", "|---|---|---|---|---|---|---|---|"]
            lines += model_rows(folder, models, threads, args.seconds)
    load = os.getloadavg()
    lines += ["", f"Load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}."]
    if args.out:
        print(write_markdown(args.out, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
