"""The one way this project times a call: :func:`measure` (one callable), :func:`alternate`
(several, taking turns) and :func:`closed_loop` (several threads calling at once).
``pyengine bench`` and the development benches in bench/ use them.

The loop is kept lean on purpose (two ``perf_counter_ns`` reads and a list append per call, the
deadline compared as integers, the progress callback called at most every 0.1 s) so that its own
cost stays far below a model call; bench/bench_timing.py measures it against a bare loop.
Only the standard library is used.
"""

from __future__ import annotations

import functools
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Optional, Sequence

#: Called with the fraction done (0..1) while a measurement runs.
Progress = Callable[[float], None]

_TICK_NS = 100_000_000  # progress updates at most every 0.1 s


_clock_ns: Optional[int] = None


def clock_overhead_ns() -> int:
    """What one ``perf_counter_ns`` read adds to a sample: the median of 2000 back-to-back read
    pairs, measured once per process. A sample ``t1 - t0`` spans the call plus about one read,
    so :func:`measure` and :func:`alternate` subtract this from every sample (bench/bench_timing.py
    shows the effect on the cheapest model call)."""
    global _clock_ns
    if _clock_ns is None:
        clock = time.perf_counter_ns
        d = []
        for _ in range(2000):
            t0 = clock()
            d.append(clock() - t0)
        _clock_ns = int(statistics.median(d))
    return _clock_ns


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``xs``, interpolated linearly (numpy's default)."""
    if not xs:
        return math.nan
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Timing:
    """The calls of one measurement.

    Attributes
    ----------
    times_ms
        Each timed call's milliseconds, in order (the first call and the warm-up excluded), the
        clock's own read time (:func:`clock_overhead_ns`) taken off.
    first_ms
        The first call's milliseconds (NaN when it was not timed separately).
    wall_s
        Seconds of the timed calls from the first start to the last end (loop included).
    """

    times_ms: list[float] = field(default_factory=list)
    first_ms: float = math.nan
    wall_s: float = 0.0

    @property
    def runs(self) -> int:
        return len(self.times_ms)

    def pct(self, q: float) -> float:
        """The ``q``-th percentile of :attr:`times_ms`."""
        return percentile(self.times_ms, q)

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p90(self) -> float:
        return self.pct(90)

    @property
    def p99(self) -> float:
        return self.pct(99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times_ms) if self.times_ms else math.nan


def _check(runs: Optional[int], duration: Optional[float], warmup: int) -> None:
    if runs is None and duration is None:
        raise ValueError("give runs or duration")
    if runs is not None and runs < 1:
        raise ValueError(f"runs={runs}: must be >= 1")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration={duration}: must be > 0 seconds")
    if warmup < 0:
        raise ValueError(f"warmup={warmup}: must be >= 0")


def measure(
    fn: Callable[..., object],
    *,
    args: tuple[Any, ...] = (),
    runs: Optional[int] = None,
    duration: Optional[float] = None,
    warmup: int = 0,
    first: bool = False,
    min_runs: int = 1,
    group: int = 1,
    progress: Optional[Progress] = None,
) -> Timing:
    """Time calls of ``fn()``.

    Parameters
    ----------
    fn, args
        The call to time: ``fn(*args)`` (pass the arguments here rather than wrapping the call
        in a lambda: one Python frame less per call).
    runs, duration
        Time ``runs`` calls, or calls until ``duration`` seconds have passed (at least
        ``min_runs``); with both, whichever comes first.
    warmup
        Untimed calls before the timed ones.
    first
        Time the very first call on its own (:attr:`Timing.first_ms`); it counts as the first
        warm-up call.
    group
        Calls per sample: each sample times ``group`` calls back to back and records their mean
        (for calls too short for the clock); ``runs`` then counts samples.
    progress
        Called with the fraction done, at most every 0.1 s.

    Raises
    ------
    ValueError
        Neither ``runs`` nor ``duration``, or one out of range.
    """
    _check(runs, duration, warmup)
    if group < 1:
        raise ValueError(f"group={group}: must be >= 1")
    if args:
        fn = functools.partial(fn, *args) if len(args) > 1 else fn
    single = len(args) == 1
    one = args[0] if single else None
    call: Callable[[], object] = (lambda: fn(one)) if single else fn
    clock = time.perf_counter_ns
    out = Timing()
    if first:
        t0 = clock()
        call()
        out.first_ms = (clock() - t0) / 1e6
        warmup -= 1
    for _ in range(max(warmup, 0)):
        call()
    ns: list[int] = []
    append = ns.append
    limit = runs if runs is not None else 1 << 62
    start = clock()
    deadline = start + int(duration * 1e9) if duration is not None else 1 << 62
    tick = start + _TICK_NS if progress is not None else 1 << 62
    total = float(deadline - start) if runs is None else float(limit)
    n = 0
    t1 = start
    if group > 1:
        calls = range(group)
        inner = call

        def grouped() -> None:
            for _ in calls:
                inner()

        fn, single = grouped, False
    # Two copies of the loop so that neither pays for a test or a frame per call.
    if single:
        while n < limit:
            t0 = clock()
            fn(one)
            t1 = clock()
            append(t1 - t0)
            n += 1
            if t1 >= deadline and n >= min_runs:
                break
            if t1 >= tick:
                assert progress is not None
                progress(min(1.0, (t1 - start) / total if runs is None else n / total))
                tick = t1 + _TICK_NS
    else:
        while n < limit:
            t0 = clock()
            fn()
            t1 = clock()
            append(t1 - t0)
            n += 1
            if t1 >= deadline and n >= min_runs:
                break
            if t1 >= tick:
                assert progress is not None
                progress(min(1.0, (t1 - start) / total if runs is None else n / total))
                tick = t1 + _TICK_NS
    out.wall_s = (t1 - start) / 1e9
    off = clock_overhead_ns() / group
    out.times_ms = [max(x / group - off, 0) / 1e6 for x in ns]
    if progress is not None:
        progress(1.0)
    return out


def alternate(
    fns: Sequence[Callable[[], object]],
    *,
    runs: Optional[int] = None,
    duration: Optional[float] = None,
    warmup: int = 0,
    first: bool = False,
    min_runs: int = 5,
    block_s: float = 0.0,
    progress: Optional[Progress] = None,
) -> list[Timing]:
    """Time several calls taking turns, one call of each per round, the order rotating each
    round (so that none always runs right after another's cache and thread wake-ups).

    ``runs`` counts each callable's timed calls; ``duration`` bounds the whole measurement (at
    least ``min_runs`` rounds, fewer when ``runs`` is reached first). With ``block_s`` > 0 each
    turn is a block: one untimed call, then timed calls until ``block_s`` seconds have passed
    (at least one), so that a runtime whose idle threads spin after its calls (onnxruntime's
    do) slows only its own block's first call. Other parameters as :func:`measure`, per
    callable.
    """
    _check(runs, duration, warmup)
    clock = time.perf_counter_ns
    outs = [Timing() for _ in fns]
    if first:
        for fn, out in zip(fns, outs):
            t0 = clock()
            fn()
            out.first_ms = (clock() - t0) / 1e6
        warmup -= 1
    for _ in range(max(warmup, 0)):
        for fn in fns:
            fn()
    k = len(fns)
    ns: list[list[int]] = [[] for _ in fns]
    limit = runs if runs is not None else 1 << 62
    start = clock()
    deadline = start + int(duration * 1e9) if duration is not None else 1 << 62
    tick = start + _TICK_NS
    t1 = start
    rnd = 0
    block_ns = int(block_s * 1e9)
    while True:
        for j in range(k):
            i = (rnd + j) % k
            fn, out_ns = fns[i], ns[i]
            if len(out_ns) >= limit:
                continue
            if block_ns:
                fn()
                end = clock() + block_ns
            while len(out_ns) < limit:
                t0 = clock()
                fn()
                t1 = clock()
                out_ns.append(t1 - t0)
                if not block_ns or t1 >= end:
                    break
        rnd += 1
        if rnd >= min_runs and (t1 >= deadline or min(len(x) for x in ns) >= limit):
            break
        if progress is not None and t1 >= tick:
            progress(min(1.0, (t1 - start) / (deadline - start) if runs is None
                         else min(len(x) for x in ns) / limit))
            tick = t1 + _TICK_NS
    off = clock_overhead_ns()
    for out, xs in zip(outs, ns):
        out.wall_s = (t1 - start) / 1e9
        out.times_ms = [max(x - off, 0) / 1e6 for x in xs]
    if progress is not None:
        progress(1.0)
    return outs


def closed_loop(client: Callable[[], ContextManager[Callable[[], object]]], clients: int,
                seconds: float) -> tuple[list[float], float]:
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
    return [x for lat in latencies for x in lat], elapsed
