"""The pyengine command line: thin commands over the public API.

Each command lives in a module ``<area>_cmds.py`` of this package that defines
``<stem>_args(parser)`` and ``<stem>_run(args) -> int`` (and may define ``ERRORS``, the exception types it reports as
plain errors, and ``UNAVAILABLE``, those that mean something needed is missing: exit code 3).
The conventions (exit codes, ``--json``) are in :mod:`pyengine.cli.output`. Only the module
of the command being run is imported, so ``pyengine deploy`` never loads the core, the native
engine or a framework, and every command starts quickly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Any, Sequence

from pyengine.cli.output import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Refused,
    Unavailable,
    cli_words,
)

# (name, help, module in pyengine.cli, function stem). Later areas append their commands here.
COMMANDS: list[tuple[str, str, str, str]] = [
    ("info", "show version, CPU features, kernels and backends", "engine_cmds", "info"),
    ("validate", "check a group file and its local sources; print every problem, touch nothing",
     "deploy_cmds", "validate"),
    ("run", "run a model on a .npy input", "engine_cmds", "run"),
    ("bench", "time a model or the standard suite on this device; merge devices' reports",
     "bench_cmds", "bench"),
    ("convert", "convert a TensorFlow/MXNet/Chainer/ONNX model to .pyem", "convert_cmds", "convert"),
    ("quantize", "quantize a float .pyem to int8 with calibration data", "quantize_cmds",
     "quantize"),
    ("core", "run the deployed group's functions (core start), or stop one or show its status",
     "core_cmds", "core"),
    ("invoke", "invoke a function on the running core", "core_cmds", "invoke"),
    ("logs", "print a function's log (or the core's): --follow, --since 10m", "logs_cmds",
     "logs"),
    ("deploy", "deploy a group's resources and functions", "deploy_cmds", "deploy"),
    ("rollback", "go back to the previous deployed group", "deploy_cmds", "rollback"),
    ("reset", "remove everything deployed and its state", "deploy_cmds", "reset"),
    ("deployments", "list or show deployments", "deploy_cmds", "deployments"),
    ("resources", "list or show installed resources", "deploy_cmds", "resources"),
    ("policy", "print the IAM policy a group's sources need", "deploy_cmds", "policy"),
    ("doctor", "check the root's state and installed versions; --repair a damaged state",
     "deploy_cmds", "doctor"),
    ("fleet", "publish a group to a fleet of cores; promote, roll back, status", "fleet_cmds",
     "fleet"),
]


def _chosen(argv: Sequence[str]) -> str | None:
    """The command named on the command line (its first non-option word), if any."""
    names = {c[0] for c in COMMANDS}
    for word in argv:
        if not word.startswith("-"):
            return word if word in names else None
    return None


class _VersionAction(argparse.Action):
    """``--version``: print ``pyengine VERSION`` and exit 0 (the version read only when asked,
    since it comes from the native core)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print pyengine's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        import pyengine

        print(f"pyengine {pyengine.__version__}")
        parser.exit(0)


def exit_code(exc: BaseException, unavailable: tuple[type[BaseException], ...] = ()) -> int:
    """The documented exit code (docs/cli.md) of a command that raised ``exc``: 3 when
    something needed is missing, 2 for bad input, 1 when the operation failed."""
    if isinstance(exc, (Unavailable, ImportError, *unavailable)):
        return EXIT_UNAVAILABLE
    if isinstance(exc, (Refused, ValueError, FileNotFoundError, FileExistsError,
                        IsADirectoryError, NotADirectoryError)):
        return EXIT_USAGE
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyengine`` command; returns its exit code (docs/cli.md)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen(argv)
    parser = argparse.ArgumentParser(
        prog="pyengine", description="Edge ML inference runtime",
        epilog="exit codes: 0 ok, 1 the operation failed, 2 usage or bad input, 3 unavailable "
        "(no core running, backend or device not installed); see docs/cli.md")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    module = None
    for name, help_text, module_name, stem in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(f"pyengine.cli.{module_name}")
            getattr(module, f"{stem}_args")(p)
            p.set_defaults(_run=getattr(module, f"{stem}_run"))
    args = parser.parse_args(argv)
    unavailable = tuple(getattr(module, "UNAVAILABLE", ()))
    errors = (ValueError, OSError, ImportError, Unavailable, Refused, *unavailable,
              *getattr(module, "ERRORS", ()))

    def show_warning(message: Warning | str, category: type[Warning], filename: str,
                     lineno: int, file: Any = None, line: str | None = None) -> None:
        # A warning is advice to the person at the command line: in its words, not Python's.
        print(f"pyengine {args.command}: warning: {cli_words(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            return int(args._run(args))
        except errors as exc:
            print(f"pyengine {args.command}: error: {cli_words(str(exc))}", file=sys.stderr)
            return exit_code(exc, unavailable)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
