"""The pyengine command line: thin commands over the public API.

Each command lives in a module of this package that defines ``<stem>_args(parser)`` and
``<stem>_run(args) -> int`` (and may define ``ERRORS``, the exception types it reports as
plain errors). Only the module of the command being run is imported, so ``pyengine deploy``
never loads the core, the native engine or a framework, and every command starts quickly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# (name, help, module in pyengine.cli, function stem). Later areas append their commands here.
COMMANDS: list[tuple[str, str, str, str]] = [
    ("info", "show version, CPU features, kernels and backends", "commands", "info"),
    ("run", "run a model on a .npy input", "commands", "run"),
    ("bench", "time a model or the standard suite on this device; merge devices' reports",
     "bench_cmds", "bench"),
    ("convert", "convert a TensorFlow/MXNet/Chainer/ONNX model to .pyem", "convert", "convert"),
    ("core", "run the deployed group's functions (core start)", "core_cmds", "core"),
    ("invoke", "invoke a function on the running core", "core_cmds", "invoke"),
    ("logs", "print a function's log (or the core's): --follow, --since 10m", "logs_cmds",
     "logs"),
    ("deploy", "deploy a group's resources and functions", "deploy_commands", "deploy"),
    ("rollback", "go back to the previous deployed group", "deploy_commands", "rollback"),
    ("reset", "remove everything deployed and its state", "deploy_commands", "reset"),
    ("deployments", "list or show deployments", "deploy_commands", "deployments"),
    ("resources", "list or show installed resources", "deploy_commands", "resources"),
    ("policy", "print the IAM policy a group's sources need", "deploy_commands", "policy"),
    ("doctor", "check the root's state and installed versions; --repair a damaged state",
     "deploy_commands", "doctor"),
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyengine`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen(argv)
    parser = argparse.ArgumentParser(prog="pyengine", description="Edge ML inference runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    module = None
    for name, help_text, module_name, stem in COMMANDS:
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            module = importlib.import_module(f"pyengine.cli.{module_name}")
            getattr(module, f"{stem}_args")(p)
            p.set_defaults(_run=getattr(module, f"{stem}_run"))
    args = parser.parse_args(argv)
    errors = (ValueError, OSError, ImportError, *getattr(module, "ERRORS", ()))
    try:
        return int(args._run(args))
    except errors as exc:
        print(f"pyengine {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
