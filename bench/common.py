"""Helpers the benches share: timing a call, percentiles, the latency table rows and writing a
result table to bench/results/<name>.md."""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Callable, ContextManager

import numpy as np
import numpy.typing as npt

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
    return float(np.percentile(np.asarray(xs), q))


def timed(fn: Callable[[int], object], n: int, warmup: int = 20) -> list[float]:
    """Milliseconds of each of ``n`` calls ``fn(i)``, after ``min(warmup, n)`` untimed calls.

    The warm-up calls get ``i`` = -1, -2, ...; the timed ones 0 .. n-1.
    """
    for i in range(min(warmup, n)):
        fn(-1 - i)
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def closed_loop(client: Callable[[], ContextManager[Callable[[], None]]], clients: int,
                seconds: float) -> tuple[np.ndarray, float]:
    """``clients`` threads each calling back to back for ``seconds``, all starting together.

    Each thread enters ``client()`` once for its call (and leaves it when done, e.g. to close a
    connection). A call that raises stops its thread; the first such error is raised here once
    every thread has finished. Returns every call's latency in seconds and the elapsed seconds.
    """
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def run(i: int) -> None:
        lat = latencies[i]
        clock = time.perf_counter
        with client() as call:
            start.wait()
            while True:
                t0 = clock()
                try:
                    call()
                except Exception as e:  # noqa: BLE001 - raised again in the calling thread
                    errors.append(e)
                    break
                t1 = clock()
                lat.append(t1 - t0)
                if t1 >= stop_at[0]:
                    break

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    stop_at[0] = t_start + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    if errors:
        raise errors[0]
    return np.concatenate([np.asarray(x) for x in latencies]), elapsed


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
