"""Model latency, pyengine's native engine vs onnxruntime on the same graph and weights.

An MLP 64-256-256-10, a small CNN (3x32x32, conv+bias+ReLU / max-pool twice, global pool,
dense) and a MobileNet-v2-style stack of inverted residual blocks (3x112x112), at batch 1 and
32, with one intra-op thread and with the default (all cores); plus the per-call overhead of a
one-op identity model. Each model is built once with GraphBuilder and exported to ONNX from the
same builder (bench/onnx_export.py). The contenders run from Python (model.predict vs
InferenceSession.run), taking turns in blocks; figures are medians. Writes
bench/results/models.md.

Usage: python bench/bench_models.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

import onnxruntime as ort  # noqa: E402
from common import write_markdown  # noqa: E402
from machine import describe  # noqa: E402
from models import cnn_graph, mlp_graph, mobilenet_v2_graph  # noqa: E402
from onnx_export import to_onnx  # noqa: E402

import pyengine  # noqa: E402
from pyengine import _core  # noqa: E402
from pyengine.bench import timing  # noqa: E402


def session(model: bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: onnxruntime's default (all cores)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def compare(ours, theirs, budget_s: float, min_calls: int = 15) -> tuple[float, float]:
    """Median seconds per call of two callables. They take turns in blocks of about 50 ms (the
    first call of each block not counted): onnxruntime's workers spin for a while after each
    call, which would slow whatever ran right after them if the calls alternated one by one.
    Timed by pyengine's timing core (``alternate`` with blocks)."""
    a, b = timing.alternate([ours, theirs], duration=budget_s, runs=100000, warmup=3,
                            min_runs=min_calls, block_s=0.05)
    return a.p50 / 1e3, b.p50 / 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter timing budget per row")
    args = ap.parse_args()
    budget = 0.5 if args.quick else 2.0
    cores = int(_core.cpu_features()["cores"])
    models = {
        "MLP 64-256-256-10": (mlp_graph(), (64,)),
        "small CNN 3x32x32": (
            cnn_graph(size=32, channels=32, in_channels=3, batchnorm=False),
            (3, 32, 32),
        ),
        "MobileNet-v2-style 3x112x112": (mobilenet_v2_graph(size=112), (3, 112, 112)),
    }
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for title, (g, shape) in models.items():
            native = pyengine.load(g.save(os.path.join(tmp, "m.pyem")))
            onnx_bytes = to_onnx(g)
            input_name = g.graph["inputs"][0]["name"]
            for threads in (1, cores):
                _core.set_num_threads(threads)
                sess = session(onnx_bytes, 1 if threads == 1 else 0)
                for batch in (1, 32):
                    x = (
                        np.random.default_rng(batch)
                        .standard_normal((batch, *shape))
                        .astype(np.float32)
                    )
                    ref = sess.run(None, {input_name: x})[0]
                    y = native.predict(x)
                    assert isinstance(y, np.ndarray)
                    np.testing.assert_allclose(y, ref, rtol=2e-3, atol=2e-4)
                    feed = {input_name: x}
                    ours, theirs = compare(
                        lambda: native.predict(x),  # noqa: B023 (run now)
                        lambda: sess.run(None, feed),  # noqa: B023 (run now)
                        budget,
                    )
                    rows.append((title, batch, threads, ours, theirs))
                    print(
                        f"{title} batch {batch} threads {threads}: "
                        f"{ours * 1e3:.3f} ms vs {theirs * 1e3:.3f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
        # Per-call overhead: a one-op identity model on a tiny input.
        g = pyengine.GraphBuilder()
        g.output(g.node("Identity", [g.input("x", [-1, 16])], name="id"))
        native = pyengine.load(g.save(os.path.join(tmp, "id.pyem")))
        _core.set_num_threads(cores)
        sess = session(to_onnx(g), 0)
        x = np.ones((1, 16), np.float32)
        feed = {"x": x}
        id_ours, id_theirs = compare(
            lambda: native.predict(x), lambda: sess.run(None, feed), budget, 1000
        )

    lines = [
        "# Model latency: pyengine native vs onnxruntime\n",
        describe(),
        f"onnxruntime {ort.__version__} (CPUExecutionProvider, all graph optimizations, its "
        f"default kernels for this CPU); pyengine kernels: {_core.kernel_variant()}. Generated "
        f"by `python bench/bench_models.py` on {time.strftime('%Y-%m-%d %H:%M')}. Median latency "
        "per call from Python (`model.predict(x)` vs `session.run(None, {name: x})`), the two "
        "taking turns in blocks of about 50 ms; 'threads' is PYENGINE_NUM_THREADS / "
        "intra_op_num_threads "
        f"({cores} = all cores, "
        "onnxruntime's default).\n",
        f"Load average (1 min) {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the "
        f"run on {os.cpu_count()} logical cores: other work shared the machine.\n",
        "| model | batch | threads | pyengine ms | onnxruntime ms | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    met_all = []
    for title, batch, threads, ours, theirs in rows:
        ratio = ours / theirs
        if title.startswith("MLP"):
            goal, ok = ("<= 0.5x (p50)", ratio <= 0.5) if batch == 1 else ("", None)
        else:
            goal, ok = "<= 1.5x", ratio <= 1.5
        met = "" if ok is None else ("yes" if ok else "no")
        if ok is not None:
            met_all.append(ok)
        lines.append(
            f"| {title} | {batch} | {threads} | {ours * 1e3:.3f} | {theirs * 1e3:.3f} "
            f"| {ratio:.2f}x | {goal} | {met} |"
        )
    id_ratio = id_ours / id_theirs
    lines += [
        "",
        "Per-call overhead, one-op identity model, input [1, 16] (median of at least 1000 calls):",
        "",
        "| pyengine `predict` | onnxruntime `run` | ratio | target | met |",
        "|---|---|---|---|---|",
        f"| {id_ours * 1e6:.2f} us | {id_theirs * 1e6:.2f} us | {id_ratio:.2f}x | <= 0.2x "
        f"| {'yes' if id_ratio <= 0.2 else 'no'} |",
    ]
    write_markdown("models", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
