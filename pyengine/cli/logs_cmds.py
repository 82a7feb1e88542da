"""``pyengine logs FUNCTION [--follow] [--since 10m]``: a function's log (``core`` for the
core's own), with its rotated files, from the root's ``logs/`` directory."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import IO, Optional

from pyengine.core.logs import CORE_LOG, LOG_DIR, line_time, log_files
from pyengine.deploy import default_root

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``10m``, ``30s``, ``2h``, ``1d`` (or bare seconds) as seconds.

    Raises
    ------
    ValueError
        Naming the value and the expected form.
    """
    m = _SPAN.match(text.strip())
    if m is None:
        raise ValueError(f"--since {text!r} is not a duration such as 30s, 10m, 2h or 1d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("function", help="the function's name, or 'core' for the core's own log")
    p.add_argument("--root", default=None, help="the core's root (default: $PYENGINE_ROOT, "
                   "/var/lib/pyengine as root, ~/.local/share/pyengine otherwise)")
    p.add_argument("--since", default=None, metavar="DURATION",
                   help="only lines from the last DURATION (30s, 10m, 2h, 1d)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing lines as they are written (Ctrl-C stops)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object a line: time (Unix seconds), line")


def _path(root: str, function: str) -> str:
    name = CORE_LOG if function == "core" else f"{function}.log"
    if "/" in function or function in ("", ".", ".."):
        raise ValueError(f"{function!r} is not a function name")
    path = os.path.join(root, LOG_DIR, name)
    if not log_files(path):
        there = sorted(n[:-4] for n in os.listdir(os.path.join(root, LOG_DIR))
                       if n.endswith(".log")) if os.path.isdir(os.path.join(root, LOG_DIR)) \
            else []
        raise ValueError(f"no log for {function!r} in {os.path.join(root, LOG_DIR)}; logs "
                         f"there: {', '.join(there) or 'none (has a core run in this root?)'}")
    return path


def _emit(line: bytes, as_json: bool, out: IO[str]) -> None:
    text = line.decode("utf-8", "replace").rstrip("\n")
    if as_json:
        out.write(json.dumps({"time": line_time(line), "line": text}) + "\n")
    else:
        out.write(text + "\n")


def _print_since(files: list[str], since: Optional[float], as_json: bool) -> None:
    keep = since is None
    for name in files:
        with open(name, "rb") as fh:
            for line in fh:
                if not keep:  # lines are in time order: once one is recent, the rest are
                    t = line_time(line)
                    keep = t is not None and t >= since  # type: ignore[operator]
                if keep:
                    _emit(line, as_json, sys.stdout)


def _follow(path: str, as_json: bool) -> None:
    """Print what is appended to ``path``, across rotations (a new file at the path)."""
    fh = open(path, "rb")  # noqa: SIM115 - reopened on rotation
    fh.seek(0, os.SEEK_END)
    ino = os.fstat(fh.fileno()).st_ino
    try:
        while True:
            line = fh.readline()
            if line.endswith(b"\n"):
                _emit(line, as_json, sys.stdout)
                continue
            if line:
                fh.seek(-len(line), os.SEEK_CUR)  # a line still being written
            sys.stdout.flush()
            time.sleep(0.2)
            try:
                if os.stat(path).st_ino != ino:
                    for rest in fh:  # the end of the rotated file, then the new one
                        _emit(rest, as_json, sys.stdout)
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115
                    ino = os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                pass
    finally:
        fh.close()


def logs_run(args: argparse.Namespace) -> int:
    root = args.root or default_root()
    path = _path(root, args.function)
    since = time.time() - parse_since(args.since) if args.since is not None else None
    _print_since(log_files(path), since, args.json)
    sys.stdout.flush()
    if args.follow:
        try:
            _follow(path, args.json)
        except KeyboardInterrupt:
            return 130
    return 0
