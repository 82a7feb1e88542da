"""Per-call latency of the native engine vs each framework on the same models: the tests' MLP and
CNN for TensorFlow (NHWC), MXNet, Chainer and ONNX (NCHW), at batch 1 and 32. Each framework runs
through its pyengine backend (``pyengine.load(path, backend=...)``); the native model is the same
model converted with ``pyengine.convert``. Writes bench/results/frameworks.md.

Target: native p50 at most 0.3x the framework's p50 at batch 1 on the MLP.

Usage: python bench/bench_frameworks.py [--seconds 0.5] [--frameworks tensorflow,mxnet,...]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from typing import Any, Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import framework_models as fm  # noqa: E402
from common import write_markdown  # noqa: E402
from machine import describe  # noqa: E402

import pyengine  # noqa: E402
from pyengine.bench.timing import measure  # noqa: E402

TARGET = 0.3


def build(framework: str, folder: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The framework's MLP and CNN saved under ``folder``: {kind: (path, per-sample shape)}."""
    mlp_shape = (fm.MLP_FEATURES,)
    nchw = (3, fm.IMAGE, fm.IMAGE)
    if framework == "tensorflow":
        fm.tf_quiet()
        mlp, cnn = fm.keras_mlp(), fm.keras_cnn()
        nhwc = (fm.IMAGE, fm.IMAGE, 3)
        fm.keras_train(mlp, fm.data((32, *mlp_shape)))
        fm.keras_train(cnn, fm.data((32, *nhwc)))
        return {
            "mlp": (fm.tf_freeze(mlp, os.path.join(folder, "mlp.pb")), mlp_shape),
            "cnn": (fm.tf_freeze(cnn, os.path.join(folder, "cnn.pb")), nhwc),
        }
    if framework == "mxnet":
        fm.mxnet_train_export(fm.mxnet_mlp(), fm.data((32, *mlp_shape)), f"{folder}/mlp/mlp")
        fm.mxnet_train_export(fm.mxnet_cnn(), fm.data((32, *nchw)), f"{folder}/cnn/cnn")
        return {"mlp": (f"{folder}/mlp", mlp_shape), "cnn": (f"{folder}/cnn", nchw)}
    if framework == "chainer":
        import chainer_nets

        mlp_dir = fm.chainer_train_save(
            chainer_nets.MLP(), fm.data((32, *mlp_shape)), f"{folder}/mlp", "MLP"
        )
        cnn_dir = fm.chainer_train_save(
            chainer_nets.CNN(), fm.data((32, *nchw)), f"{folder}/cnn", "CNN"
        )
        return {"mlp": (mlp_dir, mlp_shape), "cnn": (cnn_dir, nchw)}
    if framework == "onnx":
        return {
            "mlp": (
                fm.onnx_save(fm.onnx_mlp(fm.data((64, *mlp_shape))), f"{folder}/mlp.onnx"),
                mlp_shape,
            ),
            "cnn": (
                fm.onnx_save(fm.onnx_cnn(fm.data((64, *nchw))), f"{folder}/cnn.onnx"),
                nchw,
            ),
        }
    raise ValueError(framework)


def per_call(fn: Callable[[], Any], seconds: float) -> tuple[float, float, int]:
    """p50 and p99 of one call in microseconds, timing calls for about ``seconds`` (at least 50,
    at most 20000) after 5 untimed ones, with pyengine's timing core."""
    t = measure(fn, duration=seconds, runs=20000, warmup=5, min_runs=50)
    return t.p50 * 1e3, t.p99 * 1e3, t.runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=0.5, help="timing per configuration")
    ap.add_argument("--frameworks", default="tensorflow,mxnet,chainer,onnx")
    args = ap.parse_args()
    rows: list[str] = []
    verdicts: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for framework in args.frameworks.split(","):
            folder = os.path.join(tmp, framework)
            os.makedirs(folder)
            for kind, (path, shape) in build(framework, folder).items():
                fw_model = pyengine.load(path, backend=framework)
                dst = pyengine.convert(path, os.path.join(folder, f"{kind}.pyem"))
                native = pyengine.load(dst)
                for batch in (1, 32):
                    x = fm.data((batch, *shape))
                    fm.assert_close(native.predict(x), np.asarray(fw_model.predict(x)))
                    f50, f99, fn = per_call(lambda m=fw_model, x=x: m.predict(x), args.seconds)
                    n50, n99, nn = per_call(lambda m=native, x=x: m.predict(x), args.seconds)
                    ratio = n50 / f50
                    target = ""
                    if kind == "mlp" and batch == 1:
                        met = "yes" if ratio <= TARGET else "no"
                        target = f"<= {TARGET}x: {met}"
                        verdicts.append(f"{framework} MLP batch 1: {ratio:.3f}x ({met})")
                    rows.append(
                        f"| {framework} | {kind} | {batch} | {f50:.1f} | {f99:.1f} | {n50:.1f} | "
                        f"{n99:.1f} | {ratio:.3f}x | {target} |"
                    )
                    print(rows[-1], f"({fn}/{nn} calls)", flush=True)
                    if framework == "onnx" and kind == "mlp" and batch == 1:
                        import onnxruntime as ort

                        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                        r50, _, _ = per_call(
                            lambda s=sess, x=x: s.run(None, {"x": x}), args.seconds
                        )
                        notes.append(
                            "A bare onnxruntime `InferenceSession.run` (no pyengine wrapper) "
                            f"takes {r50:.1f} us p50 on the MLP at batch 1: native is "
                            f"{n50 / r50:.3f}x of that."
                        )
    lines = [
        "# Native engine vs frameworks: per-call latency",
        "",
        describe(),
        f"Generated by `python bench/bench_frameworks.py` on {datetime.date.today()}. "
        "Each framework runs through its pyengine backend (`pyengine.load(path, backend=...)`); "
        "native is the same model converted with `pyengine.convert`. Models are the tests' "
        "(tests/framework_models.py): MLP 16-32-32(-32)-5 and a small CNN on 8x8x3 images "
        "(batch norm, pooling, depthwise conv). Times in microseconds per `predict` call, "
        f"timed for {args.seconds} s per cell after 5 warm-up calls; outputs checked equal "
        "(1e-4) before timing.",
        "",
        "| framework | model | batch | framework p50 | framework p99 | native p50 | native p99 "
        "| native/framework p50 | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Target (native p50 <= {TARGET}x the framework's at batch 1 on the MLP): "
        + "; ".join(verdicts)
        + ".",
        "",
        *notes,
        "",
        f"The native engine ran its {pyengine._core.kernel_variant()} kernels with "
        f"{pyengine._core.num_threads()} intra-op threads. p99 values include interference from "
        "other work on this shared 2-core machine.",
    ]
    write_markdown("frameworks", lines)
    print("\n".join(lines[-1:]))


if __name__ == "__main__":
    main()
