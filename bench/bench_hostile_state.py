"""Hostile group files and state checks: what reading a hostile group file costs with pyengine's
limits (``load_group``) against a plain ``yaml.safe_load``/``json.loads`` of the same file, and
what checking an installed version costs (the deploy's ctime walk against a full content digest,
as ``pyengine doctor`` does). Writes bench/results/hostile_state.md.

Each parse runs in a child process with a 1 GiB address-space limit and a time limit, so the
plain side's blow-ups are measured without taking the machine down.

Usage: python bench/bench_hostile_state.py [--limit-s 30] [--model-mb 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write_markdown  # noqa: E402
from machine import describe  # noqa: E402

from pyengine.deploy.versions import changed_since, version_digest  # noqa: E402

CHILD = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
how, path = sys.argv[1], sys.argv[2]
import yaml
from pyengine.deploy import load_group, GroupError
t = time.perf_counter()
try:
    if how == "pyengine":
        try:
            load_group(path)
            out = "accepted"
        except GroupError as e:
            out = "GroupError: " + e.problems[0][:60]
    else:
        text = open(path, encoding="utf-8").read()
        if path.endswith(".json"):
            json.loads(text)
        else:
            yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        out = "parsed"
except BaseException as e:
    out = f"{type(e).__name__} (traceback)"
took = time.perf_counter() - t
# VmHWM: this process's own peak (ru_maxrss keeps the parent's across fork and exec).
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
print(json.dumps({"s": took, "out": out, "rss_mb": hwm / 1024}))
"""


def files(d: str) -> dict[str, str]:
    """The hostile inputs of issue 18, written into ``d``: name -> path."""
    out = {}

    def put(name: str, text: str) -> None:
        out[name] = os.path.join(d, name)
        with open(out[name], "w", encoding="utf-8") as f:
            f.write(text)

    lines = ["name: g", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for n in "bcdefghi":
        lines.append(f"{n}: &{n} [{', '.join(['*' + prev] * 9)}]")
        prev = n
    put("laughs.yaml", "\n".join(lines) + "\n")
    put("deep-100k.json", '{"name": "g", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    put("deep-2k.yaml", "name: g\n" + "".join(" " * i + "k:\n" for i in range(2000)))
    fns = "".join(f"- name: f{i}\n  handler: a.b\n  code: /nonexistent\n" for i in range(60_000))
    put("60k-functions.yaml", "name: g\nfunctions:\n" + fns)
    # Just under the value cap: the slowest file that is read in full.
    put("14k-functions.yaml", "name: g\nfunctions:\n" + fns[: len(fns) * 14 // 60])
    put("50mb.json", json.dumps({"name": "g", "x": "a" * (50 << 20)}))
    put("dup.yaml", "name: a\nname: b\n")
    return out


def parse_rows(limit_s: float) -> list[str]:
    rows = []
    env = {**os.environ, "PYTHONPATH": ROOT}
    with tempfile.TemporaryDirectory() as d:
        for name, path in files(d).items():
            cells = [f"{name} ({os.path.getsize(path) / 1e6:.2f} MB)"]
            for how in ("plain", "pyengine"):
                try:
                    r = subprocess.run([sys.executable, "-c", CHILD, how, path], env=env,
                                       capture_output=True, text=True, timeout=limit_s)
                    res = json.loads(r.stdout.strip().splitlines()[-1])
                    cells.append(f"{res['s'] * 1000:.0f} ms, {res['rss_mb']:.0f} MB: "
                                 f"{res['out']}")
                except subprocess.TimeoutExpired:
                    cells.append(f"stopped after {limit_s:.0f} s")
                except (IndexError, ValueError):
                    cells.append("died (no result)")
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def check_rows(model_mb: int) -> list[str]:
    with tempfile.TemporaryDirectory() as d:
        for i in range(8):
            with open(os.path.join(d, f"w{i}.bin"), "wb") as f:
                f.write(os.urandom(model_mb * (1 << 20) // 8))
        created = time.time() + 1
        t = time.perf_counter()
        assert changed_since(d, created) is None
        walk = time.perf_counter() - t
        t = time.perf_counter()
        version_digest("model", d)
        digest = time.perf_counter() - t
    return [f"| ctime walk (every deploy of an unchanged version) | {walk * 1000:.2f} ms |",
            f"| content digest (`pyengine doctor`; a deploy when a ctime moved) | "
            f"{digest * 1000:.0f} ms ({model_mb / digest:.0f} MB/s) |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit-s", type=float, default=30.0)
    ap.add_argument("--model-mb", type=int, default=200)
    args = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    lines = [
        "# Hostile group files and state checks",
        "",
        describe().rstrip(),
        "",
        f"Generated by `python bench/bench_hostile_state.py --limit-s {args.limit_s:g} "
        f"--model-mb {args.model_mb}` on {time.strftime('%Y-%m-%d')}. Each parse runs in its own "
        f"process limited to 1 GiB of address space and {args.limit_s:g} s; time and peak RSS "
        "are the child's (interpreter and imports included in RSS, not in time). Plain: "
        "`yaml.load(CSafeLoader)` or `json.loads` of the whole text (how main parsed before "
        "issue 18). pyengine: `load_group` (size cap, event pass for aliases, depth and value "
        "count, duplicate keys, then validation). PyYAML keeps aliases as shared references, "
        "so the billion-laughs file parses quickly; the blow-up comes when something walks the "
        "value (main's validation: 38 s and 2.2 GB, then MemoryError, per issue 18).",
        "",
        "| file | plain | pyengine |",
        "|---|---|---|",
        *parse_rows(args.limit_s),
        "",
        f"Checking an installed version of {args.model_mb} MB (8 files, page cache warm):",
        "",
        "| check | time |",
        "|---|---|",
        *check_rows(args.model_mb),
    ]
    print(write_markdown("hostile_state", lines))


if __name__ == "__main__":
    main()
