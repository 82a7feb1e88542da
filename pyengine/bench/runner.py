"""``pyengine bench``: time a model over a grid of kernel variants x thread counts x batch sizes,
optionally against a framework on the same inputs, and return the record that
:mod:`pyengine.bench.report` prints and writes as JSON (schema: ``schema.json`` here)."""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

import pyengine
from pyengine import _core
from pyengine.bench import machine, timing
from pyengine.frameworks import FRAMEWORKS
from pyengine.model import Model, TensorSpec
from pyengine.sysinfo import set_thread_count, thread_count

#: The record's format; bump it when a field changes meaning.
SCHEMA_ID = "pyengine-bench/1"


#: ``--compare`` alternates blocks of calls this long: onnxruntime's idle workers spin for a
#: while after each call and would slow a pyengine call that followed right away.
COMPARE_BLOCK_S = 0.05


class OutputsDifferError(ValueError):
    """``--compare``: the engine's and the framework's outputs differ beyond the tolerance."""


@dataclass
class BenchOptions:
    """What to measure; see ``pyengine bench --help`` for each option.

    ``threads`` empty: 1 and every core. ``isas`` empty: the variant in use; ``["all"]``: every
    variant this build and CPU run. ``inputs`` holds arrays by input name ("" for the only
    input); ``shapes`` full shapes by input name, whose leading (batch) entry each batch size
    replaces.
    """

    batches: list[int] = field(default_factory=lambda: [1])
    threads: list[int] = field(default_factory=list)
    isas: list[str] = field(default_factory=list)
    device: str = "auto"
    backend: str = "auto"
    duration: Optional[float] = 3.0
    runs: Optional[int] = None
    warmup: int = 10
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    compare: Optional[str] = None
    compare_model: Optional[str] = None
    tolerance: float = 1e-4
    profile: bool = False
    profile_runs: int = 10
    seed: int = 0


def compare_backend(name: str) -> str:
    """The load() backend for a ``--compare`` name: a framework ("onnx", "tensorflow", ...) or
    its Python package ("onnxruntime").

    Raises
    ------
    ValueError
        ``name`` is neither.
    """
    for f in FRAMEWORKS.values():
        if name in (f.name, f.package):
            return f.name
    choices = sorted({*FRAMEWORKS, *(f.package for f in FRAMEWORKS.values())})
    raise ValueError(f"--compare {name!r}: expected one of {', '.join(choices)}")


def check_options(opts: BenchOptions) -> list[str]:
    """Validate ``opts`` before anything is loaded; returns warnings to show.

    Raises
    ------
    ValueError
        A value out of range or a kernel variant this CPU or build lacks (the message names it
        and what was expected).
    """
    warn = []
    bad = [b for b in opts.batches if b < 1]
    if bad or not opts.batches:
        raise ValueError(f"--batch {','.join(map(str, opts.batches))}: batch sizes must be "
                         "integers >= 1")
    bad = [t for t in opts.threads if t < 1]
    if bad:
        raise ValueError(f"--threads {bad[0]}: thread counts must be integers >= 1")
    cores = os.cpu_count() or 1
    over = [t for t in opts.threads if t > cores]
    if over:
        warn.append(f"--threads {max(over)} is above this machine's {cores} logical cores; the "
                    "threads will share cores, so those cells measure oversubscription")
    available = list(_core.kernels_available())
    for isa in opts.isas:
        if isa != "all" and isa not in available:
            raise ValueError(f"--isa {isa}: this CPU and build run only "
                             f"{', '.join(available)} (or 'all')")
    if opts.runs is not None and opts.runs < 1:
        raise ValueError(f"--runs {opts.runs}: must be >= 1")
    if opts.duration is not None and not opts.duration > 0:
        raise ValueError(f"--duration {opts.duration}: must be > 0 seconds")
    if opts.warmup < 0:
        raise ValueError(f"--warmup {opts.warmup}: must be >= 0")
    if not opts.tolerance >= 0:
        raise ValueError(f"--tolerance {opts.tolerance}: must be >= 0")
    if opts.compare is not None:
        compare_backend(opts.compare)
    return warn


def thread_counts(opts: BenchOptions) -> list[int]:
    """The thread counts to measure: the ones asked for, else 1 and every core."""
    return sorted(set(opts.threads)) if opts.threads else sorted({1, os.cpu_count() or 1})


def isa_list(opts: BenchOptions) -> list[str]:
    available = list(_core.kernels_available())
    if "all" in opts.isas:
        return available
    return list(dict.fromkeys(opts.isas)) or [_core.kernel_variant()]


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def input_arrays(specs: Sequence[TensorSpec], batch: int, opts: BenchOptions) -> list[np.ndarray]:
    """The inputs of one batch size, in the model's input order: ``--input`` arrays (their rows
    repeated or cut to ``batch``), else random data of the spec's shape, free dimensions from
    ``--shape``, the leading one set to ``batch``.

    Raises
    ------
    ValueError
        An input name the model lacks, a shape or array that does not fit the spec, or a free
        dimension with no ``--shape``.
    """
    names = [s.name for s in specs]
    for given, what in ((opts.inputs, "--input"), (opts.shapes, "--shape")):
        if "" in given and len(specs) != 1:
            raise ValueError(f"{what}: the model has {len(specs)} inputs {names}; "
                             f"name one with {what} NAME=...")
        unknown = [k for k in given if k and k not in names]
        if unknown:
            raise ValueError(f"{what} {unknown[0]}=...: the model has no input {unknown[0]!r}; "
                             f"its inputs are {names}")
    rng = np.random.default_rng(opts.seed)
    out = []
    for spec in specs:
        key = spec.name if spec.name in opts.inputs or spec.name in opts.shapes else ""
        want = list(spec.shape)
        if spec.name in opts.inputs or (key == "" and "" in opts.inputs):
            arr = opts.inputs[spec.name if spec.name in opts.inputs else ""]
            _fits(spec, list(arr.shape), "--input", check_batch=False)
            if want and want[0] not in (-1, batch):
                raise ValueError(f"--batch {batch}: input {spec.name!r} has a fixed batch of "
                                 f"{want[0]} (shape {want})")
            if arr.ndim == 0:
                out.append(arr.astype(spec.dtype))
                continue
            rows = np.resize(arr, (batch, *arr.shape[1:])) if arr.shape[0] != batch else arr
            out.append(np.ascontiguousarray(rows, dtype=spec.dtype))
            continue
        if spec.name in opts.shapes or (key == "" and "" in opts.shapes):
            shape = list(opts.shapes[spec.name if spec.name in opts.shapes else ""])
            _fits(spec, shape, "--shape", check_batch=False)
        else:
            free = [i for i, d in enumerate(want) if d < 0 and i > 0]
            if free:
                raise ValueError(f"input {spec.name!r} has shape {want} with free dimension(s) "
                                 f"{free}; give its size with --shape {spec.name}="
                                 f"{_fmt([1 if d < 0 else d for d in want])} (your sizes)")
            shape = want
        if shape:
            if want[0] not in (-1, batch):
                raise ValueError(f"--batch {batch}: input {spec.name!r} has a fixed batch of "
                                 f"{want[0]} (shape {want})")
            shape[0] = batch
        if np.dtype(spec.dtype).kind == "f":
            out.append(rng.standard_normal(shape).astype(spec.dtype))
        else:
            out.append(rng.integers(0, 10, size=shape).astype(spec.dtype))
    return out


def _fits(spec: TensorSpec, shape: list[int], what: str, check_batch: bool) -> None:
    want = list(spec.shape)
    if len(shape) != len(want) or any(
        w >= 0 and s != w for i, (w, s) in enumerate(zip(want, shape)) if i > 0 or check_batch
    ):
        raise ValueError(f"{what} {spec.name}={_fmt(shape)}: does not fit the model's input "
                         f"{spec.name!r} of shape {want} (-1: free)")
    if any(s < 1 for s in shape):
        raise ValueError(f"{what} {spec.name}={_fmt(shape)}: every dimension must be >= 1")


def _as_list(y: Any, model: Model) -> list[tuple[str, np.ndarray]]:
    if isinstance(y, dict):
        return [(k, np.asarray(v)) for k, v in y.items()]
    return [(model.outputs[0].name, np.asarray(y))]


def output_difference(ours: Any, theirs: Any, model: Model, ref: Model) -> tuple[float, str]:
    """The largest difference between two models' outputs relative to the reference output's
    largest magnitude, and a line saying where it is.

    Outputs are matched by position (frameworks name them differently)."""
    a, b = _as_list(ours, model), _as_list(theirs, ref)
    if len(a) != len(b):
        return math.inf, f"{len(a)} outputs against {len(b)}"
    worst, where = 0.0, ""
    for (name, x), (_, y) in zip(a, b):
        if x.shape != y.shape:
            return math.inf, f"output {name!r} has shape {list(x.shape)} against {list(y.shape)}"
        diff = float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        rel = diff / (scale or 1.0)
        if rel >= worst:
            worst, where = rel, (f"output {name!r}: max |pyengine - {ref.backend}| = {diff:.3g}, "
                                 f"{rel:.3g} of max |{ref.backend}| = {scale:.3g}")
    return worst, where


def peak_rss_reset() -> bool:
    """Reset the kernel's peak-RSS mark of this process to its current RSS (Linux >= 4.0); False
    where that is not possible (then peaks are the process's since it started)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> Optional[int]:
    """This process's peak RSS (VmHWM), or ru_maxrss where /proc is not readable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None


def _spec_json(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    return [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in specs]


def _timing_json(t: timing.Timing, batch: int) -> dict[str, Any]:
    return {
        "runs": t.runs,
        "first_ms": round(t.first_ms, 6),
        "p50_ms": round(t.p50, 6),
        "p90_ms": round(t.p90, 6),
        "p99_ms": round(t.p99, 6),
        "mean_ms": round(t.mean, 6),
        "min_ms": round(min(t.times_ms), 6),
        "max_ms": round(max(t.times_ms), 6),
        "throughput_rows_s": round(batch * 1e3 / t.mean, 3) if t.mean > 0 else None,
    }


def _profile_json(report: Any, top: int = 0) -> dict[str, Any]:
    ops = sorted(report.ops, key=lambda r: -r.time_ms)
    return {
        "runs": report.runs,
        "call_ms": round(report.call_ms, 4),
        "ops": [{"name": r.name, "op": r.op, "kernel": r.kernel, "layout": r.layout,
                 "mean_ms": round(r.time_ms, 4), "share": round(r.share, 4)}
                for r in (ops[:top] if top else ops)],
        "by_op_type": [{"op": op, "nodes": n, "mean_ms": round(ms, 4), "share": round(sh, 4)}
                       for op, ms, sh, n in report.by_op_type()],
    }


Say = Callable[[str], None]


#: How each backend's thread count is set; others run with their framework's default.
THREADS_CONTROL = {"native": "the native pool (pyengine.sysinfo.set_thread_count)",
                   "onnx": "onnxruntime's intra_op_num_threads"}
THREADS_UNCONTROLLED = "not set: the framework's default"


def _load(path: str, opts: BenchOptions, backend: str, device: str,
          threads: Optional[int]) -> tuple[Model, float]:
    """The model and its load time in ms (``threads`` only for onnxruntime sessions)."""
    extra = {"threads": threads} if backend == "onnx" and threads else {}
    t0 = time.perf_counter()
    model = pyengine.load(path, backend=backend, device=device, **extra)
    return model, (time.perf_counter() - t0) * 1e3


def bench_model(path: str, opts: BenchOptions, name: Optional[str] = None,
                progress: Optional[Callable[[str, float], None]] = None,
                say: Optional[Say] = None) -> dict[str, Any]:
    """Measure one model over every kernel variant x thread count x batch size of ``opts``.

    Returns
    -------
    ``{"name", "path", "backend", "device", "inputs", "outputs", "cells": [...]}``, one cell per
    measurement (fields in docs/benchmarking.md); ``progress(label, fraction)`` is told how far
    each cell is.

    Raises
    ------
    ValueError
        Inputs or shapes that do not fit the model (see :func:`input_arrays`), or a model whose
        first call fails on them.
    OutputsDifferError
        ``--compare``: the outputs differ beyond ``opts.tolerance``.
    """
    name = name or os.path.basename(os.path.normpath(path))
    isas = isa_list(opts)
    threads = thread_counts(opts)
    ref_backend = compare_backend(opts.compare) if opts.compare else None
    ref_path = opts.compare_model or path
    before_isa, before_threads = _core.kernel_variant(), thread_count()
    cells: list[dict[str, Any]] = []
    result: dict[str, Any] = {"name": name, "path": os.path.abspath(path), "cells": cells}
    total = len(isas) * len(threads) * len(opts.batches)
    done = 0
    try:
        for isa in isas:
            _core.set_isa(isa)
            # Load under the variant so that weights are packed for it (load time per variant).
            model, load_ms = _load(path, opts, opts.backend, opts.device, None)
            result.update(backend=model.backend, device=str(getattr(model, "device", "cpu")),
                          inputs=_spec_json(model.inputs), outputs=_spec_json(model.outputs),
                          threads_control=THREADS_CONTROL.get(model.backend, THREADS_UNCONTROLLED))
            for n_threads in threads:
                set_thread_count(n_threads)
                if model.backend == "onnx":  # its session's pool is sized at load
                    model, load_ms = _load(path, opts, "onnx", opts.device, n_threads)
                ref = ref_load_ms = None
                if ref_backend is not None:
                    ref, ref_load_ms = _load(ref_path, opts, ref_backend, "cpu", n_threads)
                for batch in opts.batches:
                    label = (f"{name} {isa} threads={n_threads} batch={batch} "
                             f"({done + 1}/{total})")
                    cell = _cell(model, ref, batch, opts, label, progress)
                    cell.update(model=name, isa=isa, threads=n_threads, load_ms=round(load_ms, 3))
                    if cell["compare"] is not None:
                        cell["compare"]["load_ms"] = round(ref_load_ms or 0.0, 3)
                        cell["compare"]["threads_set"] = ref_backend == "onnx"
                    cells.append(cell)
                    done += 1
    finally:
        _core.set_isa(before_isa)
        set_thread_count(before_threads)
    return result


def _cell(model: Model, ref: Optional[Model], batch: int, opts: BenchOptions, label: str,
          progress: Optional[Callable[[str, float], None]]) -> dict[str, Any]:
    xs = input_arrays(model.inputs, batch, opts)
    x: Any = xs[0] if len(xs) == 1 else {s.name: a for s, a in zip(model.inputs, xs)}
    tick = (lambda f: progress(label, f)) if progress is not None else None
    reset = peak_rss_reset()
    # The first call is timed separately (it plans memory and may pack weights), and it is where
    # an input that does not fit the model shows: say so without a traceback.
    t0 = time.perf_counter()
    try:
        y = model.predict(x)
    except (ValueError, RuntimeError) as exc:
        shapes = ", ".join(f"{s.name}={_fmt(a.shape)}" for s, a in zip(model.inputs, xs))
        raise ValueError(f"the model does not run on inputs {shapes}: {exc}") from None
    first_ms = (time.perf_counter() - t0) * 1e3
    cell: dict[str, Any] = {"batch": batch, "input_shapes": [list(a.shape) for a in xs],
                            "compare": None, "profile": None}
    if ref is None:
        t = timing.measure(model.predict, args=(x,), runs=opts.runs, duration=opts.duration,
                           warmup=max(opts.warmup - 1, 0), progress=tick)
        t.first_ms = first_ms
    else:
        y_ref = ref.predict(x)
        diff, where = output_difference(y, y_ref, model, ref)
        if not diff <= opts.tolerance:
            raise OutputsDifferError(
                f"--compare {opts.compare}: outputs differ at batch {batch}: {where}, above the "
                f"tolerance {opts.tolerance:g} (--tolerance); not timing models that disagree")
        t, t_ref = timing.alternate([lambda: model.predict(x), lambda: ref.predict(x)],
                                    runs=opts.runs, duration=opts.duration,
                                    warmup=max(opts.warmup - 1, 0), block_s=COMPARE_BLOCK_S,
                                    progress=tick)
        t.first_ms = first_ms
        cell["compare"] = {"backend": ref.backend, "max_rel_diff": diff,
                           **_timing_json(t_ref, batch),
                           "ratio_p50": round(t.p50 / t_ref.p50, 4) if t_ref.p50 > 0 else None}
    cell.update(_timing_json(t, batch))
    cell["peak_rss_bytes"] = peak_rss_bytes()
    cell["peak_rss_scope"] = "cell" if reset else "process"
    if opts.profile:
        if hasattr(model, "profile"):
            report = model.profile(x, runs=opts.profile_runs)
            cell["profile"] = _profile_json(report)
        else:
            cell["profile"] = {"unavailable": f"the {model.backend} backend has no per-op "
                                              "profile (only the native engine does)"}
    return cell


def bench(models: Sequence[tuple[str, str]], opts: BenchOptions,
          progress: Optional[Callable[[str, float], None]] = None) -> dict[str, Any]:
    """The full record: the header and every model's cells (see docs/benchmarking.md).

    ``models`` is a list of (name, path).
    """
    head = machine.header()
    results = [bench_model(path, opts, name, progress) for name, path in models]
    return {
        "schema": SCHEMA_ID,
        "command": shlex.join(["pyengine", *sys.argv[1:]]) if sys.argv else "",
        "header": head,
        "options": {
            "batches": opts.batches, "threads": thread_counts(opts),
            "isas": isa_list(opts), "device": opts.device, "backend": opts.backend,
            "duration_s": opts.duration, "runs": opts.runs, "warmup": opts.warmup,
            "compare": opts.compare, "tolerance": opts.tolerance, "profile": opts.profile,
        },
        "models": results,
    }
