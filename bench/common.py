"""Helpers the benches share: timing a call and percentiles (over pyengine.bench.timing, the one
timing core of the project), the latency table rows and writing a result table to
bench/results/<name>.md."""

from __future__ import annotations

import os
import statistics
from typing import Callable, ContextManager

import numpy as np
import numpy.typing as npt

from pyengine.bench.timing import closed_loop as _closed_loop
from pyengine.bench.timing import measure, percentile

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

#: A function handler that loads the model resource ``{rid}`` and answers one input row shaped
#: ``{shape}`` with its class and probability; fill it in with ``str.format``.
CLASSIFIER_HANDLER = """
import numpy as np
import pyengine

model = pyengine.load("{rid}")

def function_handler(event, context):
    x = np.asarray(event["x"], dtype=np.float32).reshape({shape})
    probs = model.predict(x)[0]
    return {{"class": int(probs.argmax()), "p": float(probs.max())}}
"""


def pct(xs: npt.ArrayLike, q: float) -> float:
    """The ``q``-th percentile of ``xs``."""
    return percentile(np.asarray(xs, dtype=np.float64).ravel().tolist(), q)


def timed(fn: Callable[[int], object], n: int, warmup: int = 20) -> list[float]:
    """Milliseconds of each of ``n`` calls ``fn(i)``, after ``min(warmup, n)`` untimed calls,
    timed by pyengine's timing core.

    The warm-up calls get ``i`` = -1, -2, ...; the timed ones 0 .. n-1.
    """
    for i in range(min(warmup, n)):
        fn(-1 - i)
    index = iter(range(n))
    return measure(lambda: fn(next(index)), runs=n).times_ms


def closed_loop(client: Callable[[], ContextManager[Callable[[], None]]], clients: int,
                seconds: float) -> tuple[np.ndarray, float]:
    """:func:`pyengine.bench.timing.closed_loop` with the latencies (seconds) as an array."""
    lat, elapsed = _closed_loop(client, clients, seconds)
    return np.asarray(lat), elapsed


def latency_rows(rows: list[tuple[str, list[float]]], base_p50: float) -> list[str]:
    """Markdown rows ``| name | p50 | p99 | mean | p50 - base_p50 |`` (ms) for ``rows``."""
    return [f"| {name} | {pct(xs, 50):.3f} | {pct(xs, 99):.3f} | "
            f"{statistics.fmean(xs):.3f} | {pct(xs, 50) - base_p50:.3f} |" for name, xs in rows]


def write_markdown(name: str, lines: list[str]) -> str:
    """Write ``lines`` as bench/results/``name``.md (one line each) and return its path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def top_ops_section(title: str, rows: list[str]) -> list[str]:
    """A markdown section of the profiler's top ops (rows already formatted as table rows)."""
    return [
        f"## Top five ops: {title}",
        "",
        "| node | op | input -> output | layout | kernel | p50 ms | mean ms | share of p50s |",
        "|---|---|---|---|---|---:|---:|---:|",
        *rows,
        "",
    ]
