"""The pyengine command line: thin commands over the public API."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from pyengine.cli import commands
from pyengine.errors import DeviceUnavailableError

# Each entry: (name, help, add_arguments, run). Later areas append their commands here.
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = [
    ("info", "show version, CPU features, kernels and backends", commands.info_args, commands.info_run),
    ("run", "run a model on a .npy input", commands.run_args, commands.run_run),
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyengine`` command."""
    parser = argparse.ArgumentParser(prog="pyengine", description="Edge ML inference runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for name, help_text, add_args, run in COMMANDS:
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        runners[name] = run
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args)
    except (ValueError, OSError, ImportError, DeviceUnavailableError) as exc:
        print(f"pyengine {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
