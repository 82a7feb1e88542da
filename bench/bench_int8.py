"""int8 inference (issue 23): native float32, native int8 (pyengine.quantize), onnxruntime
float32, onnxruntime int8 (onnxruntime.quantization.quantize_static after quant_pre_process, QDQ,
per-channel, the same calibration samples) and that same quantized .onnx converted natively
("native ort-q": pyengine.convert's QDQ import) side by side in one process, taking turns call by
call, on
the digits MLP and CNN (trained here in numpy, seconds) and ResNet-18- and MobileNetV2-style nets
(tests/cnn_zoo.py) at 224x224; batch 1 and 8, 1 and 2 threads. Also: digits float vs int8 test
accuracy and top-1 agreement, and the int8/float file size ratio. Writes bench/results/int8.md.

Each cell is the minimum over ``--runs`` calls (the shared 2-core machine is loaded by other
work; the minimum is the least disturbed figure), and ratios are taken within one process.

Usage: python bench/bench_int8.py [--runs 7] [--models digits_mlp,digits_cnn,resnet18,mobilenet_v2]
       [--batches 1,8] [--threads 1,2] [--out int8]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)
import cnn_zoo  # noqa: E402
from bench_cnn import ort_session  # noqa: E402
from common import write_markdown  # noqa: E402
from machine import describe  # noqa: E402

import pyengine  # noqa: E402
from pyengine.sysinfo import set_thread_count  # noqa: E402

ENGINES = ("native f32", "native int8", "ort f32", "ort int8", "native ort-q")


# ---- digits: a CNN and an MLP trained with numpy backprop ----

def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], d.target[order]
    return x[:1300], y[:1300], x[1300:], y[1300:]


def _patches(x: np.ndarray) -> np.ndarray:
    """[N, 1, 8, 8] -> [N, 64, 9] (3x3, pad 1)."""
    p = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    return np.stack([p[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3)], -1).reshape(len(x), 64, 9)


def train_digits_cnn(x: np.ndarray, y: np.ndarray, epochs: int = 60) -> dict[str, np.ndarray]:
    """conv 3x3 (16) + relu + maxpool 2 + dense 256->10, softmax cross-entropy, Adam, full batch."""
    rng = np.random.default_rng(1)
    params = {"w1": rng.standard_normal((9, 16)) * 0.4, "b1": np.zeros(16),
              "w2": rng.standard_normal((256, 10)) * 0.05, "b2": np.zeros(10)}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    pt = _patches(x).astype(np.float64)
    onehot = np.eye(10)[y]
    for step in range(1, epochs + 1):
        h = np.maximum(pt @ params["w1"] + params["b1"], 0).reshape(len(x), 8, 8, 16)
        blocks = h.reshape(len(x), 4, 2, 4, 2, 16)
        pooled = blocks.max(axis=(2, 4))                         # [N, 4, 4, 16]
        flat = pooled.transpose(0, 3, 1, 2).reshape(len(x), 256)  # NCHW flatten, as ONNX does
        logits = flat @ params["w2"] + params["b2"]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g_logits = (p - onehot) / len(x)
        grads = {"w2": flat.T @ g_logits, "b2": g_logits.sum(0)}
        g_pooled = (g_logits @ params["w2"].T).reshape(len(x), 16, 4, 4).transpose(0, 2, 3, 1)
        mask = blocks == pooled[:, :, None, :, None, :]
        g_h = (mask * g_pooled[:, :, None, :, None, :]).reshape(len(x), 64, 16) * (h.reshape(len(x), 64, 16) > 0)
        grads["w1"] = np.einsum("npk,npc->kc", pt, g_h)
        grads["b1"] = g_h.sum((0, 1))
        for k in params:  # Adam
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
            params[k] -= 0.02 * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v[k] / (1 - 0.999 ** step)) + 1e-8)
    return {k: val.astype(np.float32) for k, val in params.items()}


def train_digits_mlp(x: np.ndarray, y: np.ndarray, epochs: int = 150) -> dict[str, np.ndarray]:
    """64 -> 128 relu -> 10, Adam, full batch."""
    rng = np.random.default_rng(2)
    params = {"w1": rng.standard_normal((64, 128)) * 0.15, "b1": np.zeros(128),
              "w2": rng.standard_normal((128, 10)) * 0.1, "b2": np.zeros(10)}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    xf = x.reshape(len(x), 64).astype(np.float64)
    onehot = np.eye(10)[y]
    for step in range(1, epochs + 1):
        h = np.maximum(xf @ params["w1"] + params["b1"], 0)
        logits = h @ params["w2"] + params["b2"]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(x)
        gh = (g @ params["w2"].T) * (h > 0)
        grads = {"w2": h.T @ g, "b2": g.sum(0), "w1": xf.T @ gh, "b1": gh.sum(0)}
        for k in params:
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
            params[k] -= 0.01 * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v[k] / (1 - 0.999 ** step)) + 1e-8)
    return {k: val.astype(np.float32) for k, val in params.items()}


def digits_cnn_onnx(p: dict[str, np.ndarray]) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w1 = p["w1"].T.reshape(16, 1, 3, 3)
    inits = [numpy_helper.from_array(a, n) for n, a in
             (("w1", w1), ("b1", p["b1"]), ("w2", p["w2"]), ("b2", p["b2"]))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["m"], ["f"]),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"])]
    g = helper.make_graph(nodes, "digits_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def digits_mlp_onnx(p: dict[str, np.ndarray]) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(a, n) for n, a in p.items()]
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"])]
    g = helper.make_graph(nodes, "digits_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


# ---- the four engines on one model ----

class Quad:
    """A model as native float32/int8 and onnxruntime float32/int8 (files in ``tmp``)."""

    def __init__(self, name: str, onnx_bytes: bytes, calib: np.ndarray, tmp: str, ort_spinning: bool) -> None:
        from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.name = name
        f32_onnx = os.path.join(tmp, f"{name}.onnx")
        with open(f32_onnx, "wb") as fh:
            fh.write(onnx_bytes)
        f32_pyem = pyengine.convert(f32_onnx, os.path.join(tmp, f"{name}.pyem"))
        t = time.perf_counter()
        self.report = pyengine.quantize(f32_pyem, calib, os.path.join(tmp, f"{name}-int8.pyem"), batch_size=8)
        self.native_quant_s = time.perf_counter() - t

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

            def get_next(self) -> Any:
                return next(self.it, None)

        int8_onnx = os.path.join(tmp, f"{name}-int8.onnx")
        # onnxruntime's documented flow: fold BatchNorm and infer shapes first, then quantize.
        pre_onnx = os.path.join(tmp, f"{name}-pre.onnx")
        quant_pre_process(f32_onnx, pre_onnx)
        quantize_static(pre_onnx, int8_onnx, Reader(), per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        ortq_pyem = pyengine.convert(int8_onnx, os.path.join(tmp, f"{name}-ortq.pyem"))
        self.paths = {"native f32": f32_pyem, "native int8": self.report.output, "ort f32": f32_onnx,
                      "ort int8": int8_onnx, "native ort-q": ortq_pyem}
        self.sizes = {e: os.path.getsize(p) for e, p in self.paths.items()}
        self.out_step = _output_step(int8_onnx)
        self.ort_spinning = ort_spinning
        self.runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    def load(self, threads: int) -> None:
        set_thread_count(threads)
        self.runners = {}
        for engine in ENGINES:
            if engine.startswith("native"):
                m = pyengine.load(self.paths[engine], backend="native")
                self.runners[engine] = m.predict
            else:
                s = ort_session(self.paths[engine], threads, self.ort_spinning)
                self.runners[engine] = lambda x, s=s: s.run(None, {"x": x})[0]

    def time(self, x: np.ndarray, runs: int) -> dict[str, float]:
        """Minimum ms per call of each engine, the four taking turns."""
        for fn in self.runners.values():
            fn(x)
        best = {e: math.inf for e in ENGINES}
        for _ in range(runs):
            for e in ENGINES:
                t = time.perf_counter()
                self.runners[e](x)
                best[e] = min(best[e], (time.perf_counter() - t) * 1e3)
        return best


def _output_step(path: str) -> float:
    """The grid step of a quantized model's output (its last DequantizeLinear's scale), or 0."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = m.graph.output[0].name
    last = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == out]
    return float(inits[last[0].input[1]]) if last and last[0].input[1] in inits else 0.0


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in xs) / len(xs)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="digits_mlp,digits_cnn,resnet18,mobilenet_v2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--calib", type=int, default=16, help="calibration samples for the 224x224 nets")
    ap.add_argument("--out", default="int8")
    ap.add_argument("--ort-spinning", action="store_true", help="let onnxruntime's idle workers spin")
    args = ap.parse_args()
    models = args.models.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(0)
    xtr, ytr, xte, yte = _digits()
    t0 = time.perf_counter()
    cnn_p = train_digits_cnn(xtr, ytr)
    mlp_p = train_digits_mlp(xtr, ytr)
    train_s = time.perf_counter() - t0
    builders: dict[str, Callable[[], tuple[bytes, np.ndarray]]] = {
        "digits_mlp": lambda: (digits_mlp_onnx(mlp_p), xtr[:256]),
        "digits_cnn": lambda: (digits_cnn_onnx(cnn_p), xtr[:256]),
        "resnet18": lambda: (cnn_zoo.resnet(18), rng.standard_normal((args.calib, 3, 224, 224)).astype(np.float32)),
        "mobilenet_v2": lambda: (cnn_zoo.mobilenet_v2(),
                                 rng.standard_normal((args.calib, 3, 224, 224)).astype(np.float32)),
    }
    rows, acc_lines, size_lines, sqnr_lines = [], [], [], []
    ratios_int8_f32: dict[str, float] = {}
    vs_ort: list[float] = []
    ortq_vs_ort: list[float] = []
    import_lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            onnx_bytes, calib = builders[name]()
            q = Quad(name, onnx_bytes, calib, tmp, args.ort_spinning)
            size_lines.append(f"| {name} | {q.sizes['native f32']:,} | {q.sizes['native int8']:,} | "
                              f"{q.sizes['native int8'] / q.sizes['native f32']:.3f} | "
                              f"{q.sizes['ort int8'] / q.sizes['ort f32']:.3f} |")
            out = q.report.outputs[0]
            sqnr_lines.append(f"| {name} | {out['sqnr_db']:.1f} | "
                              f"{min(layer['sqnr_db'] for layer in q.report.layers):.1f} | "
                              f"{len(q.report.layers)} | {q.native_quant_s:.1f} |")
            q.load(1)
            xs = xte[:64] if name.startswith("digits") else rng.standard_normal((4, 3, 224, 224)).astype(np.float32)
            a, b = q.runners["native ort-q"](xs), q.runners["ort int8"](xs)
            steps = np.abs(a - b) / q.out_step if q.out_step else np.abs(a - b)
            import_lines.append(f"| {name} | {len(xs)} | {q.out_step:.4g} | {100 * np.mean(steps < 0.5):.2f} | "
                                f"{np.max(steps):.2f} | {100 * np.mean(a.argmax(1) == b.argmax(1)):.2f} |")
            if name.startswith("digits"):
                pred = {e: q.runners[e](xte).argmax(1) for e in ENGINES}
                acc = {e: float(np.mean(pred[e] == yte)) for e in ENGINES}
                agree = float(np.mean(pred["native int8"] == pred["native f32"]))
                agree_ort = float(np.mean(pred["ort int8"] == pred["ort f32"]))
                acc_lines.append(f"| {name} | {100 * acc['native f32']:.2f} | {100 * acc['native int8']:.2f} | "
                                 f"{100 * (acc['native int8'] - acc['native f32']):+.2f} | {100 * agree:.2f} | "
                                 f"{100 * acc['ort int8']:.2f} | {100 * agree_ort:.2f} | "
                                 f"{100 * acc['native ort-q']:.2f} |")
            for th in threads:
                q.load(th)
                for b in batches:
                    x = (xte[:b] if name.startswith("digits") else
                         rng.standard_normal((b, 3, 224, 224)).astype(np.float32))
                    ms = q.time(x, args.runs if not name.startswith("digits") else 10 * args.runs)
                    r = ms["native f32"] / ms["native int8"]
                    v = ms["native int8"] / ms["ort int8"]
                    vq = ms["native ort-q"] / ms["ort int8"]
                    if not name.startswith("digits"):
                        vs_ort.append(v)
                        ortq_vs_ort.append(vq)
                        if b == 1 and th == 1:
                            ratios_int8_f32[name] = r
                    rows.append(f"| {name} | {b} | {th} | " + " | ".join(f"{ms[e]:.3f}" for e in ENGINES) +
                                f" | {r:.2f}x | {v:.2f}x | {vq:.2f}x |")
                    print(rows[-1], flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# int8 inference: native and onnxruntime, float32 and int8", "",
        f"Generated by `python bench/bench_int8.py` on {stamp} ({args.runs} timed calls per cell, minimum; "
        "the four engines take turns call by call in one process).", "",
        describe(),
        f"- kernels: int8 path `{pyengine.info()['int8_kernel']}`; digits nets trained here in {train_s:.1f} s",
        f"- onnxruntime: `session.intra_op.allow_spinning` = {int(args.ort_spinning)} (its idle workers would "
        "otherwise spin into the native call that follows; `--ort-spinning` lets them)",
        "", "## Latency (ms per call, minimum)", "",
        "int8/f32 speed-up = native f32 ms / native int8 ms; vs ort int8 = native int8 ms / onnxruntime int8 ms "
        "(< 1: native faster); native ort-q = onnxruntime's quantized .onnx converted natively.", "",
        "| model | batch | threads | " + " | ".join(ENGINES) + " | native int8 speed-up | native int8 / ort int8 "
        "| native ort-q / ort int8 |",
        "|---|---:|---:|" + "---:|" * (len(ENGINES) + 3),
        *rows, "",
        "## Targets", "",
    ]
    for name, r in ratios_int8_f32.items():
        lines.append(f"- int8 >= 2.0x float32 native throughput, {name}, batch 1, 1 thread: **{r:.2f}x** "
                     f"({'holds' if r >= 2.0 else 'does not hold'})")
    if vs_ort:
        g = geomean(vs_ort)
        lines.append(f"- native int8 latency <= 1.0x onnxruntime int8 (geometric mean over the 224x224 cells): "
                     f"**{g:.2f}x** ({'holds' if g <= 1.0 else 'does not hold'})")
    if ortq_vs_ort:
        g = geomean(ortq_vs_ort)
        lines.append(f"- the onnxruntime-quantized model converted natively vs onnxruntime running it (geometric mean "
                     f"over the 224x224 cells): **{g:.2f}x** the latency")
    lines += ["", "## Quantized ONNX import: native vs onnxruntime on the same int8 model", "",
              "The QDQ .onnx written by quantize_static, run by onnxruntime and converted by pyengine.convert "
              "(its Q/DQ patterns fused into the native int8 ops). steps = |native - onnxruntime| / the output's "
              "quantization step.", "",
              "| model | samples | output step | outputs equal % | max steps | top-1 agreement % |",
              "|---|---:|---:|---:|---:|---:|", *import_lines]
    lines += ["", "## Digits accuracy (test set, 497 images)", "",
              "| model | float32 % | int8 % | int8 - float (points) | top-1 agreement % | ort int8 % | "
              "ort int8 agreement % | native ort-q % |", "|---|---:|---:|---:|---:|---:|---:|---:|", *acc_lines, "",
              "## File size (bytes)", "",
              "| model | native f32 | native int8 | int8 / f32 | ort int8 / f32 (QDQ .onnx) |",
              "|---|---:|---:|---:|---:|", *size_lines, "",
              "## Quantization error (pyengine.quantize's report on the calibration data)", "",
              "| model | output SQNR dB | lowest layer SQNR dB | layers quantized | quantize time s |",
              "|---|---:|---:|---:|---:|", *sqnr_lines, ""]
    if args.out:
        print("wrote", write_markdown(args.out, lines))


if __name__ == "__main__":
    main()
