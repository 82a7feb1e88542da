"""``pyengine bench``: time a model (or the standard suite) on this device; merge devices' reports."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Callable, Optional

import numpy as np

from pyengine.bench import report
from pyengine.cli.output import print_json
from pyengine.errors import BackendUnavailableError, DeviceUnavailableError, ModelFormatError

#: Errors reported as "pyengine bench: error: ..." (exit codes in docs/cli.md: a model that
#: cannot be used is 2, a missing device or framework 3).
ERRORS = (DeviceUnavailableError, ModelFormatError, BackendUnavailableError)
#: Errors that mean something needed is missing (exit code 3).
UNAVAILABLE = (DeviceUnavailableError, BackendUnavailableError)


def _ints(what: str) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            return [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected integers separated by commas, e.g. {what}") from None
    return parse


def bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="model file or directory (any format load() takes)")
    p.add_argument("--suite", metavar="NAME", help="run a built-in suite instead: standard")
    p.add_argument("--merge", nargs="+", metavar="FILE.json",
                   help="print the records of several devices side by side (no measuring)")
    p.add_argument("--plot", metavar="OUT.png", help="with --merge: bar chart (needs matplotlib)")
    p.add_argument("--batch", type=_ints("1,8,32"), default=[1], help="batch sizes (default 1)")
    p.add_argument("--threads", type=_ints("1,2,4"), default=[],
                   help="intra-op thread counts (default: 1 and all cores)")
    p.add_argument("--isa", default="", help="kernel variant(s), comma separated, or 'all' "
                   "(default: the one in use; `pyengine info` lists them)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--backend", default="auto",
                   help="native, auto (default: native when the model converts) or a framework")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, default=None,
                        help="seconds of timed calls per cell (default 3)")
    length.add_argument("--runs", type=int, default=None, help="timed calls per cell")
    p.add_argument("--warmup", type=int, default=10,
                   help="untimed calls per cell, the first (timed apart) included (default 10)")
    p.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE.npy",
                   help="input data (rows repeated or cut to each batch); default: random")
    p.add_argument("--shape", action="append", default=[], metavar="[NAME=]1x3x224x224",
                   help="an input's shape for free dimensions; the first is the batch")
    p.add_argument("--compare", metavar="FRAMEWORK[=MODEL]",
                   help="also run onnxruntime|tensorflow|mxnet|chainer on the same inputs, calls "
                        "taking turns, after checking the outputs agree (MODEL: the framework's "
                        "file, e.g. the .onnx a .pyem came from)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="--compare: largest |difference| / max|framework output| (default 1e-4)")
    p.add_argument("--profile", action="store_true", help="add the per-op table of each cell")
    p.add_argument("--top", type=int, default=10, help="--profile: the N slowest ops (0: all)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the full record (header and cells, pyengine/bench/schema.json): alone, "
                   "printed as JSON on standard output instead of the table; with FILE, written "
                   "there")
    p.add_argument("--label", help="this device's name in --merge tables (default: host and CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a TTY")


def _named(items: list[str], what: str, parse: Callable[[str, str], object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        key = name if sep else ""
        if key in out:
            raise ValueError(f"{what} {item}: input {key or '(the only one)'!r} given twice")
        out[key] = parse(item, value)
    return out


def _load_npy(item: str, path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"--input {item}: no such file {path!r}")
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (ValueError, OSError) as exc:
        raise ValueError(f"--input {item}: {path!r} is not a .npy array ({exc})") from None


def _shape(item: str, text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"--shape {item}: expected sizes >= 1 joined by 'x', e.g. x=1x3x224x224")
    return shape


class _Bar:
    """A one-line progress bar on stderr, redrawn in place (only made on a TTY)."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self, label: str, fraction: float) -> None:
        n = int(30 * fraction)
        line = f"\r[{'#' * n}{'.' * (30 - n)}] {label}"
        if line != self.last:
            sys.stderr.write(line.ljust(len(self.last)))
            sys.stderr.flush()
            self.last = line

    def close(self) -> None:
        if self.last:
            sys.stderr.write("\r" + " " * len(self.last) + "\r")
            sys.stderr.flush()


def bench_run(args: argparse.Namespace) -> int:
    if args.merge:
        if args.model or args.suite:
            raise ValueError("--merge reads records only; drop the model / --suite")
        print(report.merge_table(args.merge))
        if args.plot:
            print(f"plot: {report.plot(args.merge, args.plot)}")
        return 0
    if args.plot:
        raise ValueError("--plot draws merged records: use it with --merge A.json B.json")
    if bool(args.model) == bool(args.suite):
        raise ValueError("give a MODEL or --suite standard (one of them)")
    from pyengine.bench import runner, suite

    opts = runner.BenchOptions(
        batches=args.batch, threads=args.threads,
        isas=[s for s in args.isa.split(",") if s], device=args.device, backend=args.backend,
        duration=None if args.runs is not None else (args.duration or 3.0), runs=args.runs,
        warmup=args.warmup, tolerance=args.tolerance, profile=args.profile,
        inputs=_named(args.input, "--input", _load_npy),  # type: ignore[arg-type]
        shapes=_named(args.shape, "--shape", _shape),  # type: ignore[arg-type]
    )
    if args.compare:
        if args.suite:
            raise ValueError("--compare needs a framework model; the suite's models are native")
        name, _, path = args.compare.partition("=")
        opts.compare, opts.compare_model = name, path or None
        if path and not os.path.exists(path):
            raise ValueError(f"--compare {args.compare}: no such file {path!r}")
    for line in runner.check_options(opts):
        print(f"pyengine bench: warning: {line}", file=sys.stderr)
    bar: Optional[_Bar] = _Bar() if sys.stderr.isatty() and not args.no_progress else None
    try:
        with tempfile.TemporaryDirectory(prefix="pyengine-suite-") as tmp:
            if args.suite:
                models = suite.build(args.suite, tmp)
            else:
                if not os.path.exists(args.model):
                    raise ValueError(f"model {args.model!r}: no such file or directory")
                models = [(os.path.basename(os.path.normpath(args.model)), args.model)]
            try:
                record = runner.bench(models, opts, progress=bar)
            except runner.OutputsDifferError as exc:
                if bar:
                    bar.close()
                print(f"pyengine bench: {exc}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                if bar:
                    bar.close()
                print("pyengine bench: interrupted; nothing written", file=sys.stderr)
                return 130
    finally:
        if bar:
            bar.close()
    record["suite"] = args.suite
    if args.label:
        record["label"] = args.label
    if args.json == "-":
        print_json(report.record_json(record))
        return 0
    print(report.table(record, top=args.top))
    if args.json:
        print(f"\nrecord: {report.write_json(record, args.json)}")
    return 0
