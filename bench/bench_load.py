"""Zero-copy loading and sharing: load time vs model size, RSS on load, PSS across two
processes, and two threads on one model. Writes bench/results/load.md.

Usage: python bench/bench_load.py [--big-mb 1024] [--small-mb 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_markdown  # noqa: E402
from machine import describe  # noqa: E402

import pyengine  # noqa: E402
from pyengine.bench.timing import measure  # noqa: E402


def big_model(path: str, mb: int) -> str:
    """x[-1, 1024] -> Dense(W[1024, n]) where W holds `mb` megabytes (written in chunks)."""
    n = mb * 2**20 // (4 * 1024)
    g = pyengine.GraphBuilder()
    x = g.input("x", [-1, 1024])
    w = g.constant("w", np.lib.stride_tricks.as_strided(np.ones(1, np.float32), (1024, n), (0, 0)))
    g.output(g.node("Dense", [x, w]))
    return g.save(path)


def child(mode: str, path: str) -> None:
    """Runs in a subprocess: prints JSON measurements."""

    def rollup() -> dict[str, int]:
        out = {}
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].rstrip(":") in ("Rss", "Pss", "Shared_Clean", "Private_Clean"):
                    out[parts[0].rstrip(":")] = int(parts[1])
        return out

    if mode == "rss":
        before = rollup()["Rss"]
        t = time.perf_counter()
        model = pyengine.load(path)
        load_ms = (time.perf_counter() - t) * 1e3
        after = rollup()["Rss"]
        print(json.dumps({"load_ms": load_ms, "rss_growth_kb": after - before, "weights": model.weight_bytes}))
    elif mode == "share":
        model = pyengine.load(path)
        model.predict(np.ones((1, 1024), np.float32))  # touches every weight page
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()  # wait until the sibling has touched its pages too
        print(json.dumps(rollup()), flush=True)
        sys.stdin.readline()  # stay alive until the sibling has measured as well


def load_times(path: str, repeat: int = 30) -> float:
    """Median ms of ``repeat`` loads after one that warms the page cache."""
    return measure(pyengine.load, args=(path,), runs=repeat, warmup=1).p50


def spawn(mode: str, path: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--child", mode, path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def thread_rate(call: Callable[[], object], calls: int, threads: int) -> float:
    """Calls per second of ``threads`` threads started together, each making
    ``calls // threads`` calls of ``call``."""
    per = calls // threads

    def work() -> None:
        for _ in range(per):
            call()

    ts = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return per * threads / (time.perf_counter() - t0)


def two_threads(tmp: str) -> tuple[float, float, float]:
    """Throughput of one vs two threads calling predict on one model (>= 1 ms per call)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from models import cnn

    model = pyengine.load(cnn(os.path.join(tmp, "cnn.pyem"), size=56, channels=24))
    x = np.random.default_rng(0).standard_normal((8, 1, 56, 56)).astype(np.float32)  # >= 1 ms a call
    call_ms = measure(model.predict, args=(x,), runs=1, warmup=3).times_ms[0]
    n = max(20, int(2000 / max(call_ms, 0.1)))

    one = thread_rate(lambda: model.predict(x), n, 1)
    two = thread_rate(lambda: model.predict(x), n, 2)
    return call_ms, one, two


def control_threads() -> float:
    """Two-thread speed-up of work that has nothing to do with pyengine (zlib, which releases
    the GIL): how much parallelism the machine offers at the moment."""
    import zlib

    data = np.random.default_rng(1).integers(0, 4, 1 << 20, dtype=np.uint8).tobytes()

    def rate(threads: int) -> float:
        return thread_rate(lambda: zlib.compress(data, 6), 40, threads)

    return rate(2) / rate(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--small-mb", type=int, default=10)
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    os.environ.setdefault("PYENGINE_NUM_THREADS", "1")  # intra-op threads would blur the thread test
    with tempfile.TemporaryDirectory(dir=os.environ.get("PYENGINE_BENCH_TMP")) as tmp:
        small = big_model(os.path.join(tmp, "small.pyem"), args.small_mb)
        big = big_model(os.path.join(tmp, "big.pyem"), args.big_mb)
        t_small, t_big = load_times(small), load_times(big)
        rss = json.loads(subprocess.run([sys.executable, __file__, "--child", "rss", big], capture_output=True,
                                        text=True, check=True).stdout)
        share_model = big_model(os.path.join(tmp, "share.pyem"), 256)
        procs = [spawn("share", share_model) for _ in range(2)]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        stats = []
        for p in procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("go\n")
            p.stdin.flush()
            stats.append(json.loads(p.stdout.readline()))
        for p in procs:
            p.communicate("exit\n")
        call_ms, one, two = two_threads(tmp)
        control = control_threads()

    def yes(met: bool) -> str:
        return "yes" if met else "no"

    lines = [
        "# Loading and sharing (.pyem, zero-copy)\n",
        describe(),
        "Page cache warm; median of 30 loads. Generated by `python bench/bench_load.py` on "
        f"{time.strftime('%Y-%m-%d')}.\n",
        f"Load average (1 min) at the end of the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
        "logical cores (the two-thread figure needs two free cores).\n",
        "| measurement | value | target | met |",
        "|---|---|---|---|",
        f"| load {args.small_mb} MB model | {t_small:.3f} ms | < 10 ms | {'yes' if t_small < 10 else 'no'} |",
        f"| load {args.big_mb} MB model | {t_big:.3f} ms | < 10 ms and <= 2x the {args.small_mb} MB load "
        f"({t_big / t_small:.2f}x) | {yes(t_big < 10 and t_big <= 2 * t_small)} |",
        f"| RSS growth on loading the {args.big_mb} MB model | {rss['rss_growth_kb'] / 1024:.1f} MB | "
        f"far below {args.big_mb} MB | {yes(rss['rss_growth_kb'] < 0.05 * args.big_mb * 1024)} |",
    ]
    for i, s in enumerate(stats):
        lines.append(f"| process {i + 1} after touching a 256 MB model: Rss / Pss | {s['Rss'] / 1024:.0f} MB / "
                     f"{s['Pss'] / 1024:.0f} MB | Pss about half the shared weights | "
                     f"{yes(s['Pss'] < s['Rss'] - 100 * 1024)} |")
    lines += [
        f"| one thread, CNN call ({call_ms:.2f} ms per call) | {one:.1f} calls/s | | |",
        f"| two threads on the same model | {two:.1f} calls/s ({two / one:.2f}x) | >= 1.7x | {yes(two / one >= 1.7)} |",
        f"| control: zlib.compress on two threads vs one, right after | {control:.2f}x | | |",
        "",
        "Pss counts each shared page once across the processes that map it: with two processes",
        "touching the same 256 MB of weights, each is charged about 128 MB of them.",
    ]
    write_markdown("load", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
