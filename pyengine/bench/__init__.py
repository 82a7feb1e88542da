"""Benchmarks on the target device: the timing core every benchmark in the project uses
(:mod:`pyengine.bench.timing`), the machine header (:mod:`pyengine.bench.machine`), and
``pyengine bench`` (:mod:`pyengine.bench.runner`, :mod:`pyengine.bench.report`,
:mod:`pyengine.bench.suite`). See docs/benchmarking.md.

>>> from pyengine.bench.timing import measure               # doctest: +SKIP
>>> t = measure(lambda: model.predict(x), duration=2.0, warmup=10, first=True)
>>> t.first_ms, t.p50, t.p99                                # doctest: +SKIP

This package imports nothing itself, so that :mod:`~pyengine.bench.machine` and
:mod:`~pyengine.bench.timing` (standard library only) load without the native core.
"""
