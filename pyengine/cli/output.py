"""The conventions every ``pyengine`` command follows: exit codes, ``--json``, and messages in
the command line's words (see docs/cli.md).

Exit codes
----------
0 (:data:`EXIT_OK`)
    The command did what it was asked.
1 (:data:`EXIT_FAILED`)
    The operation ran and failed (a deployment's resource failed, a function raised, the
    root's state is not healthy).
2 (:data:`EXIT_USAGE`)
    Usage or bad input: an unknown flag, a group file or model that breaks its schema, an
    input file that cannot be read, a refused confirmation.
3 (:data:`EXIT_UNAVAILABLE`)
    Something needed is not there: no core is running, a backend's framework or a device is
    not installed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class Unavailable(Exception):
    """Something the command needs is not there (exit code 3): no core is running, a backend's
    framework or a device is missing. The message says what and how to get it."""


class Refused(Exception):
    """The command refused to act on what it was given (exit code 2), e.g. ``reset`` without
    ``--yes`` and without a terminal to ask on."""


def add_json_flag(p: argparse.ArgumentParser, what: str = "the result") -> None:
    """The ``--json`` flag of a reporting command: ``what`` is printed as one JSON document on
    standard output (its shape is documented in docs/cli.md); messages go to standard error."""
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as JSON on standard output (shape: docs/cli.md)")


def print_json(data: Any, out: TextIO | None = None) -> None:
    """Print ``data`` as the command's JSON document (indented, non-JSON values as strings)."""
    print(json.dumps(data, indent=2, default=str), file=out or sys.stdout)


# Python keyword arguments in messages written for the API, and the flags that say the same.
_KEYWORD = re.compile(r"\b(backend|device)=(['\"])([^'\"]*)\2")


def cli_words(message: str) -> str:
    """``message`` with the API's keyword arguments (``backend='onnx'``) written as the
    command line's flags (``--backend onnx``)."""
    return _KEYWORD.sub(lambda m: f"--{m.group(1)} {m.group(3)}", message)


def print_table(rows: list[list[str]], header: list[str], out: TextIO | None = None) -> None:
    """Print ``rows`` under ``header`` in left-aligned columns (the last column unpadded)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]
        print("  ".join(cells).rstrip(), file=out or sys.stdout)
