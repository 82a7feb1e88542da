"""The pyengine command line: thin commands over the public API."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from pyengine.cli import commands, core_cmds, deploy_commands, fleet_cmds
from pyengine.cli import convert as convert_cmd

# Each entry: (name, help, add_arguments, run). Later areas append their commands here.
COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = [
    ("info", "show version, CPU features, kernels and backends", commands.info_args, commands.info_run),
    ("run", "run a model on a .npy input", commands.run_args, commands.run_run),
    ("convert", "convert a TensorFlow/MXNet/Chainer/ONNX model to .pyem",
     convert_cmd.convert_args, convert_cmd.convert_run),
    ("core", "run the deployed group's functions (core start)", core_cmds.core_args,
     core_cmds.core_run),
    ("invoke", "invoke a function on the running core", core_cmds.invoke_args,
     core_cmds.invoke_run),
    ("deploy", "deploy a group's resources and functions", deploy_commands.deploy_args,
     deploy_commands.deploy_run),
    ("rollback", "go back to the previous deployed group", deploy_commands.rollback_args,
     deploy_commands.rollback_run),
    ("reset", "remove everything deployed and its state", deploy_commands.reset_args,
     deploy_commands.reset_run),
    ("deployments", "list or show deployments", deploy_commands.deployments_args,
     deploy_commands.deployments_run),
    ("resources", "list or show installed resources", deploy_commands.resources_args,
     deploy_commands.resources_run),
    ("policy", "print the IAM policy a group's sources need", deploy_commands.policy_args,
     deploy_commands.policy_run),
    ("fleet", "publish a group to a fleet of cores; promote, roll back, status",
     fleet_cmds.fleet_args, fleet_cmds.fleet_run),
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
    except (ValueError, OSError, ImportError, *deploy_commands.ERRORS, *fleet_cmds.ERRORS) as exc:
        print(f"pyengine {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
