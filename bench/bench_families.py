"""Issue 25's edge model families (tests/families.py: a YOLO-style detector, a U-Net/DeepLab-style
segmenter, a keyword-spotting Conv1D+GRU net, a BERT-tiny-style encoder and a ViT-tiny-style
classifier, built with ``onnx.helper`` and He-scaled random weights): the native engine on the
converted .pyem against onnxruntime on the same ONNX file, in one process, the two taking turns
call by call (bench/bench_cnn.py's method and helpers). Batch 1, 1 and 2 threads. Outputs are
compared (<= 1e-4 relative) before timing. Writes bench/results/families.md with a row per
family x threads, the geometric means, the targets and each family's top ops at 1 thread.

Targets (issue 25): every family converts and matches onnxruntime; native / onnxruntime <= 1.3x
for each family at 1 thread, geometric mean <= 1.1x.

Usage: python bench/bench_families.py [--families yolo,kws] [--threads 1,2] [--runs 20]
       [--seconds 15] [--out NAME]

A run over a subset writes bench/results/<NAME>.md only with ``--out`` (the full default run
writes families.md).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)
import families  # noqa: E402
from bench_cnn import (  # noqa: E402
    TOLERANCE,
    Cell,
    alternate,
    geomean,
    ort_session,
    ort_version,
    profile_top,
    rel_diff,
    short_error,
)
from common import pct, top_ops_section, write_markdown  # noqa: E402
from machine import describe  # noqa: E402

import pyengine  # noqa: E402
from pyengine.sysinfo import set_thread_count  # noqa: E402

TARGET_EACH, TARGET_GEOMEAN = 1.3, 1.1

#: What each family is at the bench's sizes (the builders' defaults).
SIZES = {
    "yolo": "3x320x320, width 16, 80 classes, 2 scales x 3 anchors",
    "unet": "3x256x256, 4 levels from 16 channels, 21 classes",
    "kws": "40 MFCC x 98 frames, 2 Conv1D of 64, GRU 128, 12 classes",
    "bert_tiny": "128 tokens, 2 layers, 128 wide, 2 heads, MLP 512",
    "vit_tiny": "3x224x224, 16x16 patches, 12 layers, 192 wide, 3 heads, MLP 768",
}


def bench_family(name: str, folder: str, args: argparse.Namespace) -> tuple[list[Cell], list[str] | None]:
    """Every thread count of one family, and its top ops at the first thread count."""
    data, make_feed = families.FAMILIES[name]()
    onnx_path = os.path.join(folder, f"{name}.onnx")
    with open(onnx_path, "wb") as fh:
        fh.write(data)
    cells = [Cell(name, 1, t) for t in args.threads]
    try:
        native = pyengine.load(pyengine.convert(onnx_path, os.path.join(folder, f"{name}.pyem")),
                               backend="native")
    except Exception as exc:  # noqa: BLE001 - reported in the table, the other families still run
        for c in cells:
            c.error = f"does not convert: {short_error(exc)}"
        print(f"{name}: {cells[0].error}", flush=True)
        return cells, None
    feed = make_feed(1, 0)
    args_in = list(feed.values())
    top = None
    for c in cells:
        set_thread_count(c.threads)
        sess = ort_session(onnx_path, c.threads, args.ort_spinning)
        try:
            mine = np.asarray(native.predict(*args_in))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            c.error = f"native predict fails: {short_error(exc)}"
            print(f"{name} threads {c.threads}: {c.error}", flush=True)
            continue
        c.rel_diff = rel_diff(mine, sess.run(None, feed)[0])
        if not c.rel_diff <= TOLERANCE:
            c.error = f"OUTPUTS DIFFER: max rel diff {c.rel_diff:.2e} > {TOLERANCE:g}"
            print(f"{name} threads {c.threads}: {c.error}", flush=True)
            continue
        c.native, c.ort = alternate(functools.partial(native.predict, *args_in),
                                    functools.partial(sess.run, None, feed),
                                    args.runs, args.seconds, args.warmup)
        print(f"{name} threads {c.threads}: native {pct(c.native, 50):.2f} ms, onnxruntime "
              f"{pct(c.ort, 50):.2f} ms, {c.ratio:.2f}x ({len(c.native)} runs, rel diff "
              f"{c.rel_diff:.1e}, load {os.getloadavg()[0]:.1f})", flush=True)
        if top is None:  # every family has one input
            top = profile_top(native, args_in[0], args.runs)
        del sess
    return cells, top


def report(cells: list[Cell], tops: dict[str, list[str]], args: argparse.Namespace,
           load: tuple[float, float]) -> list[str]:
    rows = []
    for c in cells:
        if c.error:
            rows.append(f"| {c.model} | {c.threads} | | | {c.error} | |")
        else:
            rows.append(f"| {c.model} | {c.threads} | {pct(c.native, 50):.2f} | "
                        f"{pct(c.ort, 50):.2f} | {c.ratio:.2f}x | {c.rel_diff:.1e} |")
    means, verdicts = [], []
    converted = sorted({c.model for c in cells if not c.error.startswith(("does not", "native", "OUTPUTS"))})
    verdicts.append(
        f"- all five families convert and match onnxruntime: "
        f"{'holds' if len(converted) == len(families.FAMILIES) else 'does not hold'} "
        f"({len(converted)} of {len(families.FAMILIES)}: {', '.join(converted) or 'none'})")
    for t in args.threads:
        done = [c for c in cells if c.threads == t and not c.error]
        if not done:
            continue
        worst = max(done, key=lambda c: c.ratio)
        gm = geomean([c.ratio for c in done])
        means.append(f"| {t} | {gm:.2f}x | {len(done)} of {len(args.families)} | "
                     f"{worst.model} {worst.ratio:.2f}x |")
        if t == 1:
            over = [f"{c.model} {c.ratio:.2f}x" for c in done if c.ratio > TARGET_EACH]
            verdicts.append(
                f"- each family <= {TARGET_EACH}x at 1 thread: "
                f"{'holds' if not over and len(done) == len(families.FAMILIES) else 'does not hold'}"
                + (f" (over: {', '.join(over)})" if over else f" (worst {worst.model} {worst.ratio:.2f}x)"))
            verdicts.append(
                f"- geometric mean <= {TARGET_GEOMEAN}x at 1 thread: {gm:.2f}x, "
                f"{'holds' if gm <= TARGET_GEOMEAN and len(done) == len(families.FAMILIES) else 'does not hold'}"
                + ("" if len(done) == len(families.FAMILIES) else f" (over {len(done)} families)"))
    lines = [
        "# Edge model families: native engine vs onnxruntime",
        "",
        describe(),
        f"Generated by `python bench/bench_families.py` on {datetime.datetime.now():%Y-%m-%d %H:%M} "
        f"with onnxruntime {ort_version()}. Models: tests/families.py, built with `onnx.helper` "
        "with He-scaled random weights; native runs the .pyem that `pyengine.convert` makes of "
        "the same ONNX file. Batch 1. The two engines take turns call by call in one process "
        "(bench/bench_cnn.py's method: onnxruntime with its default graph optimizations, "
        "`intra_op_num_threads` = the native pool's threads, `inter_op_num_threads` = 1, "
        f"`session.intra_op.allow_spinning` = {int(args.ort_spinning)}). Each cell is "
        f"{args.warmup} warm-up calls of each, then up to {args.runs} timed calls of each (fewer "
        f"once a cell passes {args.seconds:g} s, never under 5). Before timing, "
        f"max|native - onnxruntime| / max|onnxruntime| must be <= {TOLERANCE:g} (last column).",
        "",
        f"Load average (1 min) {load[0]:.1f} before and {load[1]:.1f} after the run on "
        f"{os.cpu_count()} logical cores" + (": other work shared the machine, so read the "
                                            "ratios (both engines under the same load, call by "
                                            "call) rather than the milliseconds."
                                            if max(load) > 0.5 * (os.cpu_count() or 1) else "."),
        "",
        "| family | size |",
        "|---|---|",
        *[f"| {f} | {SIZES[f]} |" for f in args.families],
        "",
        "| family | threads | native p50 ms | onnxruntime p50 ms | native / onnxruntime | rel diff |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "## Geometric means of native / onnxruntime (p50)",
        "",
        "| threads | geometric mean | families | slowest |",
        "|---:|---:|---|---|",
        *means,
        "",
        "## Targets (issue 25)",
        "",
        *verdicts,
        "",
    ]
    for m, prows in tops.items():
        lines += top_ops_section(f"{m}, batch 1, {min(args.threads)} thread(s) "
                                 f"(`model.profile(x, runs={args.runs})`)", prows)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(families.FAMILIES),
                    help=f"comma-separated subset of: {', '.join(families.FAMILIES)}")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=20, help="timed calls of each engine per cell")
    ap.add_argument("--seconds", type=float, default=15.0,
                    help="time cap per cell (at least 5 calls each still run)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ort-spinning", action="store_true",
                    help="let onnxruntime's idle workers spin (they then slow the native calls)")
    ap.add_argument("--out", default=None,
                    help="write bench/results/OUT.md (default: families, for the full run only)")
    args = ap.parse_args()
    args.families = [m.strip() for m in args.families.split(",") if m.strip()]
    unknown = [m for m in args.families if m not in families.FAMILIES]
    if unknown:
        ap.error(f"--families: unknown {unknown}; choose from {', '.join(families.FAMILIES)}")
    args.threads = [int(t) for t in args.threads.split(",")]
    full = args.families == list(families.FAMILIES) and args.threads == [1, 2] and not args.ort_spinning
    out = args.out or ("families" if full else None)

    load_before = os.getloadavg()[0]
    threads_before = pyengine.sysinfo.thread_count()
    cells: list[Cell] = []
    tops: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.families:
            got, top = bench_family(name, folder, args)
            cells += got
            if top:
                tops[name] = top
    set_thread_count(threads_before)
    lines = report(cells, tops, args, (load_before, os.getloadavg()[0]))
    print("\n".join(lines))
    if out:
        print("wrote", write_markdown(out, lines))
    mismatched = [c for c in cells if c.error.startswith("OUTPUTS DIFFER")]
    if mismatched:
        print("FAILED: native and onnxruntime outputs differ for "
              + ", ".join(f"{c.model} threads {c.threads}" for c in mismatched), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
