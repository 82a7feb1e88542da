"""Dynamic batching: throughput and p50/p99 latency against 1, 2, 4, ... 64 concurrent clients,
batched vs unbatched, for the MLP and the CNN of tests/models.py and two wider MLPs, run natively
and by onnxruntime on the same graph (the framework-callback path). Writes bench/results/batching.md and
bench/results/batching.png.

Each client is a thread that sends one-row requests back to back (a function handler's pattern).

Usage: python bench/bench_batching.py [--seconds 1.5] [--clients 1,2,4,8,16,32,64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, closed_loop, pct, write_markdown  # noqa: E402
from machine import describe  # noqa: E402
from models import MLP_SIZES, cnn, mlp  # noqa: E402
from onnx_models import OrtModel, cnn_onnx, mlp_onnx  # noqa: E402

import pyengine  # noqa: E402
from pyengine.bench.timing import measure  # noqa: E402

MAX_BATCH = 64
DELAY_US = 500
# The tests' MLP (84K parameters, 330 KB: a batch-1 call already runs near the core's peak) and
# two wider ones whose weights outgrow the 2 MB L2, where one row at a time leaves the core waiting
# on memory: what batching can win depends on that.
MLPS = {
    "mlp": ("MLP", MLP_SIZES),
    "mlp1m": ("MLP-1.3M", (256, 1024, 1024, 10)),
    "mlp5m": ("MLP-5.3M", (512, 2048, 2048, 10)),
}


def run_point(
    predict: Callable[[np.ndarray], Any], x: np.ndarray, clients: int, seconds: float
) -> dict[str, float]:
    """`clients` threads calling predict(x) back to back for `seconds`."""
    lat, elapsed = closed_loop(lambda: contextlib.nullcontext(lambda: predict(x)), clients, seconds)
    lat = lat * 1e6
    return {"throughput": len(lat) / elapsed, "p50": pct(lat, 50), "p99": pct(lat, 99)}


def single_client_overhead(
    model: pyengine.Model, x: np.ndarray, rounds: int, seconds: float
) -> tuple[float, float]:
    """Median p50 of one client, unbatched vs batched with max_delay_us=0, rounds interleaved."""
    plain, batched = [], []
    with model.batched(max_batch_size=MAX_BATCH, max_delay_us=0) as b:
        for _ in range(rounds):
            plain.append(run_point(model.predict, x, 1, seconds)["p50"])
            batched.append(run_point(b.predict, x, 1, seconds)["p50"])
    return statistics.median(plain), statistics.median(batched)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.5, help="per point")
    ap.add_argument("--clients", default="1,2,4,8,16,32,64")
    ap.add_argument("--models", default="mlp,mlp1m,mlp5m,cnn")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    os.environ.setdefault("PYENGINE_NUM_THREADS", "1")

    with tempfile.TemporaryDirectory() as tmp:
        models: dict[str, tuple[pyengine.Model, np.ndarray]] = {}
        rng = np.random.default_rng(0)
        for key, (label, sizes) in MLPS.items():
            if key in args.models:
                x = rng.standard_normal((1, sizes[0])).astype(np.float32)
                path = mlp(os.path.join(tmp, f"{key}.pyem"), sizes)
                models[f"{label} native"] = (pyengine.load(path), x)
                models[f"{label} onnxruntime"] = (OrtModel(mlp_onnx(sizes)), x)
        if "cnn" in args.models:
            x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
            models["CNN native"] = (pyengine.load(cnn(os.path.join(tmp, "cnn.pyem"))), x)
            models["CNN onnxruntime"] = (OrtModel(cnn_onnx()), x)
        for name, (model, x) in models.items():  # the same function in both engines
            ref = models[name.split()[0] + " native"][0].predict(x)
            np.testing.assert_allclose(model.predict(x), ref, rtol=1e-4, atol=1e-5)

        load_before = os.getloadavg()
        modes = ["unbatched", "batched, delay 0", f"batched, delay {DELAY_US} us",
                 "batched, delay 0, 2 workers"]
        table: dict[tuple[str, str, int], dict[str, float]] = {}
        for name, (model, x) in models.items():
            for c in clients:
                for mode in modes:  # side by side, so that load from elsewhere hits all alike
                    if mode == "unbatched":
                        r = run_point(model.predict, x, c, args.seconds)
                    else:
                        delay = 0 if "delay 0" in mode else DELAY_US
                        workers = 2 if "2 workers" in mode else 1
                        with model.batched(
                            max_batch_size=MAX_BATCH, max_delay_us=delay, workers=workers
                        ) as b:
                            r = run_point(b.predict, x, c, args.seconds)
                            r["batch"] = b.stats()["mean_batch_size"]
                    table[(name, mode, c)] = r
                    print(
                        f"{name:16s} {mode:22s} {c:3d} clients: {r['throughput']:9.0f}/s  "
                        f"p50 {r['p50']:8.1f} us  p99 {r['p99']:9.1f} us  "
                        f"batch {r.get('batch', 1):.1f}",
                        flush=True,
                    )
        single = {}
        for name in ("MLP native", "MLP onnxruntime"):
            if name in models:
                single[name] = single_client_overhead(
                    *models[name], rounds=7, seconds=min(args.seconds, 0.6)
                )
        row_cost = {name: per_row_us(model, x) for name, (model, x) in models.items()}
        floor = handoff_floor(tmp, max(clients), args.seconds)
        load_after = os.getloadavg()

    write_results(
        table, modes, clients, single, row_cost, floor, load_before, load_after, args.seconds
    )


def mlp_parameters(sizes: tuple[int, ...]) -> int:
    return sum(k * n + n for k, n in zip(sizes[:-1], sizes[1:]))


def per_row_us(model: pyengine.Model, x: np.ndarray) -> dict[int, float]:
    """Microseconds per row of one predict call with 1, 8 and 64 rows: one thread, the three sizes
    interleaved over 7 rounds (so that changing load hits them alike), best round each."""
    xs = {n: np.repeat(x, n, axis=0) for n in (1, 8, 64)}
    reps = {n: max(3, int(0.03 / max(timed(model, xb), 1e-6))) for n, xb in xs.items()}
    best = {n: float("inf") for n in xs}
    for _ in range(7):
        for n, xb in xs.items():
            best[n] = min(best[n], timed(model, xb, reps[n]))
    return {n: t / n * 1e6 for n, t in best.items()}


def timed(model: pyengine.Model, x: np.ndarray, reps: int = 1) -> float:
    """Seconds per call of ``reps`` calls back to back (one sample of pyengine's timing core)."""
    return measure(lambda: model.predict(x), runs=1, group=reps).mean / 1e3


def handoff_floor(tmp: str, clients: int, seconds: float) -> tuple[float, float]:
    """Requests/s of `clients` threads on a model that does almost nothing (relu of 8 values):
    what Python threads and the GIL allow, unbatched and batched, before any model cost."""
    g = pyengine.GraphBuilder()
    g.output(g.node("Relu", [g.input("x", [-1, 8])]))
    model = pyengine.load(g.save(os.path.join(tmp, "relu.pyem")))
    x = np.ones((1, 8), np.float32)
    plain = run_point(model.predict, x, clients, seconds)["throughput"]
    with model.batched(max_batch_size=MAX_BATCH, max_delay_us=DELAY_US) as b:
        batched = run_point(b.predict, x, clients, seconds)["throughput"]
    return plain, batched


def write_results(
    table: dict,
    modes: list[str],
    clients: list[int],
    single: dict,
    row_cost: dict,
    floor: tuple[float, float],
    load_before: tuple,
    load_after: tuple,
    seconds: float,
) -> None:
    order = [label for label, _ in MLPS.values()] + ["CNN"]
    names = sorted({k[0] for k in table}, key=lambda n: (order.index(n.split()[0]), n))
    top = max(clients)
    lines = [
        "# Dynamic batching\n",
        describe(),
        f"- Load average (1/5/15 min) at start {'/'.join(f'{v:.1f}' for v in load_before)}, "
        f"at end {'/'.join(f'{v:.1f}' for v in load_after)} "
        "(the machine is shared: other work competes for the same cores)\n",
        f"Generated by `python bench/bench_batching.py` on {time.strftime('%Y-%m-%d')}: "
        f"{seconds:g} s per point; every client is a thread sending one-row requests back to "
        f"back. Batched: `model.batched(max_batch_size={MAX_BATCH}, max_delay_us=..., "
        "workers=...)`, one worker unless the mode says two. Every engine runs one intra-op "
        "thread (PYENGINE_NUM_THREADS=1): with 64 client threads on two cores, two intra-op "
        "threads made both unbatched and batched runs slower here. onnxruntime runs the same "
        "graph (one intra-op thread per session) through the batcher's Python callback. "
        "Latency in microseconds, throughput in requests per second.\n",
        "Models: "
        + "; ".join(f"{label} = Dense layers {'-'.join(map(str, sizes))} "
                    f"({mlp_parameters(sizes) / 1e6:.2f}M parameters, "
                    f"{mlp_parameters(sizes) * 4 / 2**20:.1f} MiB)" for label, sizes in MLPS.values())
        + "; CNN = tests/models.py's two-convolution CNN on 28x28. The first MLP is the one the "
        "tests and the other benches use; the wider two are there because what batching can win "
        "is set by how much cheaper a row gets in a batch (the per-row table below).\n",
        "## Targets\n",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name in names:
        if not name.startswith("MLP") or (name, "unbatched", top) not in table:
            continue
        base = table[(name, "unbatched", top)]
        best_mode = max(modes[1:], key=lambda m: table[(name, m, top)]["throughput"])
        best = table[(name, best_mode, top)]
        gain = best["throughput"] / base["throughput"]
        lines.append(
            f"| {name}, {top} clients: >= 4x throughput, p99 no worse than unbatched | "
            f"{gain:.2f}x ({best['throughput']:.0f} vs {base['throughput']:.0f}/s, {best_mode}); "
            f"p99 {best['p99']:.0f} vs {base['p99']:.0f} us | "
            f"{'yes' if gain >= 4 and best['p99'] <= base['p99'] else 'no'} |"
        )
    for name, (plain, batched) in single.items():
        extra = batched / plain - 1
        lines.append(
            f"| {name}, 1 client, max_delay 0: p50 at most 5% above unbatched | "
            f"{batched:.1f} vs {plain:.1f} us ({extra:+.1%}; median of 7 interleaved rounds) | "
            f"{'yes' if extra <= 0.05 else 'no'} |"
        )
    lines += [
        "",
        "## What bounds the gain here\n",
        "Per-row cost of one call (one thread, best of 7 interleaved rounds), which is what "
        "batching can save:\n",
        "| model | 1 row | 8 rows | 64 rows | 1-row cost / 64-row cost per row |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        rc = row_cost[name]
        lines.append(
            f"| {name} | {rc[1]:.1f} us | {rc[8]:.1f} us | {rc[64]:.1f} us "
            f"| {rc[1] / rc[64]:.1f}x |"
        )
    plain, batched = floor
    lines += [
        "",
        f"Thread and GIL cost with no model work ({top} threads, relu of 8 values): "
        f"{plain:.0f} requests/s unbatched, {batched:.0f} batched, i.e. about "
        f"{1e6 / batched:.1f} us per batched request spent waking its thread and taking the GIL "
        "back (the batched caller sleeps until its batch is done; the unbatched one need not).",
        "",
        "A rough model of the batched thread path: each request costs about the per-row cost at "
        "64 rows plus that wake-up cost, one after another, so one worker serves roughly "
        "1 / (their sum). Both terms move with the load from elsewhere on this shared machine, "
        "so read these as orders of magnitude:",
        "",
    ]
    handoff_us = 1e6 / batched
    for name in names:
        if (name, "unbatched", top) not in table:
            continue
        ceiling = 1e6 / (row_cost[name][64] + handoff_us)
        best = max(table[(name, m, top)]["throughput"] for m in modes[1:])
        base = table[(name, "unbatched", top)]["throughput"]
        lines.append(
            f"- {name}: estimate {ceiling:.0f}/s ({ceiling / base:.1f}x the unbatched "
            f"{base:.0f}/s at {top} clients); measured best {best:.0f}/s"
        )
    lines += [
        "",
        "## All points\n",
    ]
    for name in names:
        lines += [
            f"### {name}\n",
            "| clients | " + " | ".join(f"{m}: req/s, p50, p99" for m in modes) + " |",
            "|---|" + "---|" * len(modes),
        ]
        for c in clients:
            cells = []
            for m in modes:
                r = table[(name, m, c)]
                batch = f" (batch {r['batch']:.1f})" if "batch" in r else ""
                cells.append(f"{r['throughput']:.0f}{batch}, {r['p50']:.0f}, {r['p99']:.0f}")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    os.makedirs(RESULTS, exist_ok=True)
    plot(table, names, modes, clients, os.path.join(RESULTS, "batching.png"))
    lines.append("![throughput and p99 against clients](batching.png)\n")
    write_markdown("batching", lines)
    print("\n".join(lines))


def plot(table: dict, names: list[str], modes: list[str], clients: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7), squeeze=False)
    for col, name in enumerate(names):
        for mode in modes:
            tp = [table[(name, mode, c)]["throughput"] for c in clients]
            p99 = [table[(name, mode, c)]["p99"] / 1000 for c in clients]
            axes[0][col].plot(clients, tp, marker="o", label=mode)
            axes[1][col].plot(clients, p99, marker="o", label=mode)
        axes[0][col].set_title(name)
        axes[0][col].set_ylabel("requests / s")
        axes[1][col].set_ylabel("p99 latency (ms)")
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xlabel("concurrent clients")
            axes[row][col].grid(True, alpha=0.3)
        axes[1][col].set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
