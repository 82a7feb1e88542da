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


def _print_since(path: str, since: Optional[float], as_json: bool) -> IO[bytes]:
    """Print the lines of ``path``'s rotated files and then of ``path`` (from ``since`` on);
    ``path`` open at the end of its last whole line, for --follow to go on from."""
    keep = since is None
    files = log_files(path)
    for name in files[:-1]:
        with open(name, "rb") as fh:
            keep = _print_lines(fh, keep, since, as_json)
    fh = open(path, "rb")  # noqa: SIM115 - the caller's
    _print_lines(fh, keep, since, as_json)
    return fh


def _print_lines(fh: IO[bytes], keep: bool, since: Optional[float], as_json: bool) -> bool:
    while True:
        line = fh.readline()
        if not line.endswith(b"\n"):
            fh.seek(-len(line), os.SEEK_CUR)  # a line still being written: --follow's
            return keep
        if not keep:  # lines are in time order: once one is recent, the rest are
            t = line_time(line)
            keep = since is None or (t is not None and t >= since)
        if keep:
            _emit(line, as_json, sys.stdout)


def _follow(fh: IO[bytes], path: str, as_json: bool) -> None:
    """Print what is appended to ``fh`` (``path``), across rotations (a new file at the path)."""
    ino = os.fstat(fh.fileno()).st_ino
    try:
        while True:
            _print_lines(fh, True, None, as_json)
            sys.stdout.flush()
            time.sleep(0.2)
            try:
                if os.stat(path).st_ino != ino:
                    _print_lines(fh, True, None, as_json)  # the end of the rotated file
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
    fh = _print_since(path, since, args.json)
    sys.stdout.flush()
    if not args.follow:
        fh.close()
        return 0
    try:
        _follow(fh, path, args.json)
    except KeyboardInterrupt:
        return 130
    return 0
