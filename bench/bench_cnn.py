"""Standard ImageNet CNNs (tests/cnn_zoo.py: ResNet-18/50, MobileNetV2, MobileNetV3-Small,
SqueezeNet 1.1, ShuffleNetV2, VGG-16, DenseNet-121, EfficientNet-B0) at 224x224: the native
engine on the converted .pyem against onnxruntime on the same ONNX graph and weights, in one
process, the two taking turns call by call. Batch 1 and 8, 1 and 2 threads (the native pool via
``pyengine.sysinfo.set_thread_count``, onnxruntime's ``intra_op_num_threads``, with
``inter_op_num_threads`` = 1). Outputs are compared before timing. Writes bench/results/cnn.md
with a row per model x batch x threads, the geometric means and, where the native model has a
profiler, its top five ops for ResNet-50 and MobileNetV2.

Targets (issue 17): native / onnxruntime geometric mean <= 1.0x at batch 1 with 1 and with 2
threads, no model above 1.15x; ResNet-50 at batch 1 on 2 threads >= 1.7x the throughput of 1.

Usage: python bench/bench_cnn.py [--models resnet50,mobilenet_v2] [--batches 1,8]
       [--threads 1,2] [--runs 20] [--seconds 20] [--out NAME]

A run over a subset of models, batches or threads prints its table; it writes
bench/results/<NAME>.md only with ``--out`` (the full default run writes cnn.md).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)
import cnn_zoo  # noqa: E402
from common import pct, top_ops_section, write_markdown  # noqa: E402
from machine import describe  # noqa: E402

import pyengine  # noqa: E402
from pyengine.bench import timing  # noqa: E402
from pyengine.sysinfo import set_thread_count  # noqa: E402

#: Largest max|native - onnxruntime| / max|onnxruntime| accepted before timing.
TOLERANCE = 1e-4
#: Profiled for the "top five ops" tables (when the native model has ``profile``).
PROFILED = ("resnet50", "mobilenet_v2")
TARGET_GEOMEAN, TARGET_WORST, TARGET_SCALING = 1.0, 1.15, 1.7


@dataclass
class Cell:
    """One model x batch x threads measurement (times in ms)."""

    model: str
    batch: int
    threads: int
    native: list[float] = field(default_factory=list)
    ort: list[float] = field(default_factory=list)
    rel_diff: float = float("nan")
    error: str = ""

    @property
    def ratio(self) -> float:
        return pct(self.native, 50) / pct(self.ort, 50)


def rel_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    """max|actual - expected| relative to max|expected| (the output's scale)."""
    if actual.shape != expected.shape:
        return float("inf")
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale


def alternate(native: Callable[[], Any], ort: Callable[[], Any], runs: int, seconds: float,
              warmup: int) -> tuple[list[float], list[float]]:
    """Milliseconds of ``runs`` calls of each, taking turns (which goes first alternates too),
    after ``warmup`` untimed calls of each; stops early (after at least 5 each) past ``seconds``
    (pyengine's timing core)."""
    a, b = timing.alternate([native, ort], runs=runs, duration=seconds, warmup=warmup, min_runs=5)
    return a.times_ms, b.times_ms


def ort_session(path: str, threads: int, spinning: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()  # default graph optimizations (ORT_ENABLE_ALL)
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Its idle workers otherwise spin on both cores after each call, into the native call that
    # follows (ResNet-18 on 2 threads here: native 33 ms alone, 40-60 ms taking turns with a
    # spinning onnxruntime, 33 ms with a non-spinning one; onnxruntime itself 17.1 vs 17.6 ms).
    opts.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def short_error(exc: BaseException) -> str:
    """The error in one short line: the op types for UnsupportedOpsError, else its first line."""
    if isinstance(exc, pyengine.UnsupportedOpsError):
        ops = sorted({op for _, op in exc.ops})
        return f"unsupported op(s) {', '.join(ops)} ({len(exc.ops)} nodes)"
    text = str(exc).strip()
    text = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {text[:200]}"


def profile_top(model: Any, x: np.ndarray, runs: int, top: int = 5) -> list[str] | None:
    """Markdown rows of the ``top`` slowest steps of ``model.profile`` by median time (a shared
    machine's preemptions inflate means), or None without a profiler."""
    if not hasattr(model, "profile"):
        return None
    report = model.profile(x, runs=runs)
    ops = sorted(report.ops, key=lambda r: r.p50_ms, reverse=True)[:top]
    total_p50 = sum(r.p50_ms for r in report.ops) or 1.0
    return [
        f"| {r.name} | {r.op} | {' '.join(map(str, r.input_shapes[:1]))} -> "
        f"{' '.join(map(str, r.output_shapes))} | {r.layout} | {r.kernel} | {r.p50_ms:.3f} | "
        f"{r.time_ms:.3f} | {100 * r.p50_ms / total_p50:.1f}% |"
        for r in ops
    ]


def bench_model(name: str, folder: str, args: argparse.Namespace) -> tuple[list[Cell], dict[str, list[str]]]:
    """Every batch x threads cell of one model, and its profile rows (per thread count)."""
    onnx_path = os.path.join(folder, f"{name}.onnx")
    with open(onnx_path, "wb") as fh:
        fh.write(cnn_zoo.MODELS[name](image=args.image))
    cells = [Cell(name, b, t) for t in args.threads for b in args.batches]
    profiles: dict[str, list[str]] = {}
    try:
        native = pyengine.load(pyengine.convert(onnx_path, os.path.join(folder, f"{name}.pyem")))
    except Exception as exc:  # noqa: BLE001 - reported in the table, the other models still run
        for c in cells:
            c.error = f"does not convert: {short_error(exc)}"
        print(f"{name}: {cells[0].error}", flush=True)
        return cells, profiles
    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal((b, 3, args.image, args.image)).astype(np.float32)
              for b in args.batches}
    for t in args.threads:
        set_thread_count(t)
        sess = ort_session(onnx_path, t, args.ort_spinning)
        for c in (c for c in cells if c.threads == t):
            x = inputs[c.batch]
            try:
                mine = np.asarray(native.predict(x))
            except Exception as exc:  # noqa: BLE001 - reported in the table
                c.error = f"native predict fails: {short_error(exc)}"
                print(f"{name} batch {c.batch} threads {t}: {c.error}", flush=True)
                continue
            c.rel_diff = rel_diff(mine, sess.run(None, {"x": x})[0])
            if not c.rel_diff <= TOLERANCE:
                c.error = f"OUTPUTS DIFFER: max rel diff {c.rel_diff:.2e} > {TOLERANCE:g}"
                print(f"{name} batch {c.batch} threads {t}: {c.error}", flush=True)
                continue
            c.native, c.ort = alternate(
                functools.partial(native.predict, x),
                functools.partial(sess.run, None, {"x": x}),
                args.runs, args.seconds, args.warmup,
            )
            print(f"{name} batch {c.batch} threads {t}: native {pct(c.native, 50):.2f} ms, "
                  f"onnxruntime {pct(c.ort, 50):.2f} ms, {c.ratio:.2f}x "
                  f"({len(c.native)} runs, rel diff {c.rel_diff:.1e})", flush=True)
        if name in PROFILED:
            rows = profile_top(native, inputs[min(args.batches)], args.runs)
            if rows is not None:
                profiles[f"{t}"] = rows
        del sess
    return cells, profiles


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def report(cells: list[Cell], profiles: dict[str, dict[str, list[str]]], args: argparse.Namespace,
           load: tuple[float, float]) -> list[str]:
    rows = []
    for c in cells:
        if c.error:
            rows.append(f"| {c.model} | {c.batch} | {c.threads} | | | {c.error} | |")
        else:
            rows.append(
                f"| {c.model} | {c.batch} | {c.threads} | {pct(c.native, 50):.2f} | "
                f"{pct(c.ort, 50):.2f} | {c.ratio:.2f}x | {c.rel_diff:.1e} |"
            )
    means = []
    verdicts = []
    for b in args.batches:
        for t in args.threads:
            done = [c for c in cells if c.batch == b and c.threads == t and not c.error]
            if not done:
                continue
            worst = max(done, key=lambda c: c.ratio)
            gm = geomean([c.ratio for c in done])
            means.append(f"| {b} | {t} | {gm:.2f}x | {len(done)} of {len(args.models)} | "
                         f"{worst.model} {worst.ratio:.2f}x |")
            if b == 1:
                verdicts.append(
                    f"- batch 1, {t} thread(s): geometric mean {gm:.2f}x "
                    f"({'holds' if gm <= TARGET_GEOMEAN else 'does not hold'} <= "
                    f"{TARGET_GEOMEAN}x); worst {worst.model} {worst.ratio:.2f}x "
                    f"({'holds' if worst.ratio <= TARGET_WORST else 'does not hold'} <= "
                    f"{TARGET_WORST}x)"
                    + ("" if len(done) == len(args.models) else
                       f"; only {len(done)} of {len(args.models)} models ran")
                )
    scaling = []
    lo, hi = min(args.threads), max(args.threads)
    for m in args.models:
        for b in args.batches:
            one = next((c for c in cells if (c.model, c.batch, c.threads) == (m, b, lo)), None)
            two = next((c for c in cells if (c.model, c.batch, c.threads) == (m, b, hi)), None)
            if lo == hi or one is None or two is None or one.error or two.error:
                continue
            ns = pct(one.native, 50) / pct(two.native, 50)
            os_ = pct(one.ort, 50) / pct(two.ort, 50)
            scaling.append(f"| {m} | {b} | {ns:.2f}x | {os_:.2f}x |")
            if m == "resnet50" and b == 1:
                verdicts.append(
                    f"- ResNet-50 batch 1: {hi} threads give {ns:.2f}x the throughput of {lo} "
                    f"({'holds' if ns >= TARGET_SCALING else 'does not hold'} >= "
                    f"{TARGET_SCALING}x; onnxruntime {os_:.2f}x)"
                )
    lines = [
        "# CNNs: native engine vs onnxruntime",
        "",
        describe(),
        f"Generated by `python bench/bench_cnn.py` on {datetime.datetime.now():%Y-%m-%d %H:%M} "
        f"with onnxruntime {ort_version()}. Models: tests/cnn_zoo.py, built with `onnx.helper` "
        f"at {args.image}x{args.image} with He-scaled random weights and random BatchNorm "
        "statistics; native runs the .pyem that `pyengine.convert` makes of the same ONNX file. "
        "The two engines take turns call by call in one process; onnxruntime runs with its "
        "default graph optimizations, `intra_op_num_threads` = the native pool's threads, "
        "`inter_op_num_threads` = 1 and `session.intra_op.allow_spinning` = "
        f"{int(args.ort_spinning)} (by default 0: its idle workers "
        "would otherwise spin into the native call that follows: ResNet-18 on 2 threads took "
        "33 ms natively alone and 40-60 ms taking turns with a spinning onnxruntime; onnxruntime "
        "itself is about 3% slower without spinning; `--ort-spinning` lets it spin). "
        f"Each cell is {args.warmup} warm-up calls of each, then up to {args.runs} timed calls "
        f"of each (fewer once a cell passes {args.seconds:g} s, never under {min(5, args.runs)}). "
        f"Before timing, max|native - onnxruntime| / max|onnxruntime| must be <= {TOLERANCE:g} "
        "(last column).",
        "",
        f"Load average (1 min) {load[0]:.1f} before and {load[1]:.1f} after the run on "
        f"{os.cpu_count()} logical cores" + (": other work shared the machine."
                                            if max(load) > 0.5 * (os.cpu_count() or 1) else "."),
        "",
        "| model | batch | threads | native p50 ms | onnxruntime p50 ms | native / onnxruntime "
        "| rel diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "## Geometric means of native / onnxruntime (p50)",
        "",
        "| batch | threads | geometric mean | models | slowest |",
        "|---:|---:|---:|---|---|",
        *means,
        "",
    ]
    if scaling:
        lines += [
            f"## Thread scaling: p50 at {lo} thread / p50 at {hi} threads",
            "",
            "| model | batch | native | onnxruntime |",
            "|---|---:|---:|---:|",
            *scaling,
            "",
        ]
    lines += ["## Targets (issue 17)", "", *(verdicts or ["- no batch-1 cells ran"]), ""]
    for m, by_threads in profiles.items():
        for t, prows in by_threads.items():
            lines += top_ops_section(f"{m}, batch {min(args.batches)}, {t} thread(s) "
                                     f"(`model.profile(x, runs={args.runs})`)", prows)
    return lines


def ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(cnn_zoo.MODELS),
                    help=f"comma-separated subset of: {', '.join(cnn_zoo.MODELS)}")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20, help="timed calls of each engine per cell")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="time cap per cell (at least 5 calls each still run)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--ort-spinning", action="store_true",
                    help="let onnxruntime's idle workers spin (they then slow the native calls)")
    ap.add_argument("--out", default=None,
                    help="write bench/results/OUT.md (default: cnn, for the full default run only)")
    args = ap.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in cnn_zoo.MODELS]
    if unknown:
        ap.error(f"--models: unknown {unknown}; choose from {', '.join(cnn_zoo.MODELS)}")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.threads = [int(t) for t in args.threads.split(",")]
    full = (args.models == list(cnn_zoo.MODELS) and args.batches == [1, 8]
            and args.threads == [1, 2] and args.image == 224 and not args.ort_spinning)
    out = args.out or ("cnn" if full else None)

    load_before = os.getloadavg()[0]
    threads_before = pyengine.sysinfo.thread_count()
    cells: list[Cell] = []
    profiles: dict[str, dict[str, list[str]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            got, prof = bench_model(name, folder, args)
            cells += got
            if prof:
                profiles[name] = prof
            for f in os.listdir(folder):  # VGG-16 alone is 0.5 GB twice over
                os.remove(os.path.join(folder, f))
    set_thread_count(threads_before)  # the header names the process's default
    lines = report(cells, profiles, args, (load_before, os.getloadavg()[0]))
    print("\n".join(lines))
    if out:
        print("wrote", write_markdown(out, lines))
    mismatched = [c for c in cells if c.error.startswith("OUTPUTS DIFFER")]
    if mismatched:
        print("FAILED: native and onnxruntime outputs differ for "
              + ", ".join(f"{c.model} batch {c.batch} threads {c.threads}" for c in mismatched),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
