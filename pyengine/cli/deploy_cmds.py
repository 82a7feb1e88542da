"""Deployment commands: deploy, rollback, reset, deployments, resources, policy (thin over
pyengine.deploy, which needs neither the native core nor any framework)."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from typing import IO, Optional

from pyengine import deploy as dp
from pyengine.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Refused,
    add_json_flag,
    print_json,
    print_table,
)

EXIT_FAILURE = EXIT_FAILED


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root",
        help="pyengine's directory (default: $PYENGINE_ROOT, else "
        "/var/lib/pyengine as root, ~/.local/share/pyengine otherwise)",
    )


def _mb(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def _when(t: Optional[float]) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


class Progress:
    """Renders deployment events: a bar per download on a terminal, plain lines otherwise."""

    def __init__(self, out: IO[str], tty: Optional[bool] = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.last = 0.0
        self.quarter: dict[str, int] = {}

    def __call__(self, e: dp.ProgressEvent) -> None:
        if e.event == "start":
            print(f"deployment {e.key}: group {e.message}: Building", file=self.out)
        elif e.event == "status":
            print(f"deployment {e.key}: {e.message}", file=self.out)
        elif e.event == "resource":
            if self.tty:
                self.out.write("\r\x1b[K")
            where = f"{e.key}: " if e.key else ""
            size = f" ({_mb(e.total)})" if e.total else ""
            print(f"  {where}{e.message}{size}", file=self.out)
        elif e.event == "bytes":
            if self.tty:
                now = time.monotonic()
                if now - self.last < 0.1 and e.done != e.total:
                    return
                self.last = now
                frac = e.done / e.total if e.total else 0.0
                bar = "#" * int(30 * frac)
                self.out.write(
                    f"\r\x1b[K  {e.key}: [{bar:<30}] {100 * frac:5.1f}% "
                    f"{_mb(e.done)}/{_mb(e.total)}"
                )
                self.out.flush()
            elif e.total:
                q = int(4 * e.done / e.total)
                if q > self.quarter.get(e.key, 0):
                    self.quarter[e.key] = q
                    print(f"  {e.key}: {25 * q}% ({_mb(e.done)} of {_mb(e.total)})", file=self.out)
        elif e.event == "done":
            if self.tty:
                self.out.write("\r\x1b[K")
            print(f"  {e.key}: {e.message}", file=self.out)
        self.out.flush()


def print_deployment(d: dp.Deployment, out: IO[str] = sys.stdout) -> None:
    """The summary of a deployment: id, status, and one line per resource."""
    took = f" in {d.finished - d.started:.2f} s" if d.finished and d.started else ""
    print(f"deployment {d.id} ({d.kind}) of group {d.group_name}: {d.status}{took}", file=out)
    if d.message:
        print(f"  {d.message}", file=out)
    for it in d.items:
        extra = []
        if it.version:
            extra.append(it.version)
        if it.bytes:
            extra.append(f"{_mb(it.bytes)} downloaded")
        if it.attempts > 1:
            extra.append(f"{it.attempts} attempts")
        line = f"  {it.kind:<8} {it.key:<24} {it.outcome:<12} {', '.join(extra)}"
        print(line.rstrip(), file=out)
        if it.message and it.outcome in ("failed", "rolled-back", "skipped", "modified",
                                         "installed"):
            for ml in it.message.splitlines():
                print(f"      {ml}", file=out)
    print(f"  downloaded {d.bytes_downloaded} bytes", file=out)


def deploy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", help="group file (YAML or JSON)")
    _root_arg(p)
    p.add_argument(
        "--on-failure",
        choices=("rollback", "keep"),
        default="rollback",
        help="rollback (default): keep the previous group if any resource fails; "
        "keep: install what succeeded",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for a running deployment instead of refusing at once",
    )
    p.add_argument(
        "--retries", type=int, default=4, help="download retries per resource (default 4)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    p.add_argument("--dry-run", action="store_true",
                   help="only check the group file and its local sources, as `pyengine "
                   "validate` does: print every problem, touch nothing")
    add_json_flag(p, "the deployment (no progress lines)")


def deploy_run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return validate_run(args)
    progress = None if args.quiet or args.json else Progress(sys.stdout)
    d = dp.deploy(
        args.group,
        args.root,
        on_failure=args.on_failure,
        wait_s=args.wait,
        progress=progress,
        retries=args.retries,
    )
    if args.json:
        print_json(d.as_dict())
    else:
        print_deployment(d)
    return EXIT_OK if d.status == "Success" else EXIT_FAILED


def validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", help="group file (YAML or JSON)")
    add_json_flag(p, "the group's name and its problems")


def validate_run(args: argparse.Namespace) -> int:
    """``validate`` and ``deploy --dry-run``: every problem of the group file, nothing written."""
    problems = dp.group_file_problems(args.group)
    group = None if problems else dp.load_group(args.group)
    if args.json:
        print_json({"group": os.path.abspath(args.group),
                    "name": group.name if group is not None else None,
                    "valid": not problems, "problems": problems})
    elif problems:
        print(f"{args.group}: {len(problems)} problem(s):")
        for line in problems:
            print(f"  {line}")
    else:
        assert group is not None
        print(f"{args.group}: group {group.name!r} is valid ({len(group.resources)} "
              f"resource(s), {len(group.functions)} function(s))")
    return EXIT_USAGE if problems else EXIT_OK


def _wait_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for a running deployment instead of refusing at once")


def rollback_args(p: argparse.ArgumentParser) -> None:
    _root_arg(p)
    _wait_arg(p)
    add_json_flag(p, "the rollback's deployment")


def rollback_run(args: argparse.Namespace) -> int:
    d = dp.rollback(args.root, wait_s=args.wait)
    if args.json:
        print_json(d.as_dict())
    else:
        print_deployment(d)
    return EXIT_OK if d.status == "Success" else EXIT_FAILED


def reset_args(p: argparse.ArgumentParser) -> None:
    _root_arg(p)
    _wait_arg(p)
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask for confirmation (needed when standard input is not a "
                   "terminal)")
    add_json_flag(p, "the root and the paths removed")


def _confirm_reset(root: str) -> None:
    """Ask on the terminal before removing what ``root`` has deployed; Refused when the answer
    is not yes, or when there is no terminal to ask on."""
    # A damaged state raises here, naming `pyengine doctor --repair`.
    what = f"{len(dp.list_installed(root))} installed resource(s) and function(s)"
    if not sys.stdin.isatty():
        raise Refused(f"reset would remove {what} in {root} and its state; standard input is "
                      "not a terminal to confirm on, so pass --yes to reset")
    print(f"remove {what} in {root}, with its state? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise Refused(f"reset not confirmed ({answer!r}); nothing removed")


def reset_run(args: argparse.Namespace) -> int:
    root = dp.resolve_root(args.root)
    if dp.has_state(root) and not args.yes:
        _confirm_reset(root)
    removed = dp.reset(args.root, wait_s=args.wait)
    if args.json:
        print_json({"root": root, "removed": removed})
        return EXIT_OK
    if not removed:
        print(f"nothing deployed in {root}")
    for p in removed:
        print(f"removed {p}")
    return EXIT_OK


def deployments_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "show"),
                   help="list: every deployment, newest first; show: one with its items")
    p.add_argument("id", nargs="?", type=int, help="deployment id (show; default the latest)")
    _root_arg(p)
    add_json_flag(p, "the deployments (list) or the deployment (show)")


def deployments_run(args: argparse.Namespace) -> int:
    deps = dp.list_deployments(args.root)
    if args.action == "list":
        if args.json:
            print_json([d.as_dict(items=False) for d in deps])
        elif not deps:
            print(f"no deployments in {dp.resolve_root(args.root)}")
        else:
            print_table([[str(d.id), d.kind, d.status, _when(d.started), d.group_name or "-",
                          d.message or ""] for d in deps],
                        ["ID", "KIND", "STATUS", "STARTED", "GROUP", "MESSAGE"])
        return 0
    if args.id is None and not deps:
        raise dp.DeployError(f"no deployments in {dp.resolve_root(args.root)}")
    d = dp.get_deployment(args.id if args.id is not None else deps[0].id, args.root)
    if args.json:
        print_json(d.as_dict())
    else:
        print_deployment(d)
    return 0


def resources_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "show"),
                   help="list: every installed resource and function; show: one in detail")
    p.add_argument("id", nargs="?", help="resource id or function name (show)")
    _root_arg(p)
    add_json_flag(p, "the installed resources and functions")


def resources_run(args: argparse.Namespace) -> int:
    rows = dp.list_installed(args.root)
    if args.action == "show":
        if not args.id:
            raise ValueError("resources show needs a resource id or function name")
        rows = [r for r in rows if r["key"] == args.id]
        if not rows:
            raise ValueError(  # the name given is wrong: bad input (exit 2)
                f"no resource or function {args.id!r} is deployed in {dp.resolve_root(args.root)}"
            )
        for r in rows:
            if args.json:
                print_json(r)
                continue
            for k in (
                "kind",
                "key",
                "destination",
                "version",
                "version_path",
                "source",
                "token",
                "deployment_id",
            ):
                print(f"{k + ':':<15}{r[k] if r[k] is not None else '-'}")
            if r["version_path"] and os.path.isdir(r["version_path"]):
                n = sum(len(fs) for _, _, fs in os.walk(r["version_path"]))
                print(f"{'files:':<15}{n}")
        return 0
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"nothing deployed in {dp.resolve_root(args.root)}")
        return 0
    print_table([[r["kind"], r["key"], r["version"] or "-", str(r["deployment_id"]),
                  r["destination"] or "-", r["source"] or "-"] for r in rows],
                ["KIND", "NAME", "VERSION", "DEPLOYMENT", "DESTINATION", "SOURCE"])
    return 0


def policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", help="group file (YAML or JSON)")
    p.add_argument("--json", action="store_true",
                   help="accepted for uniformity: the policy is always printed as JSON")


def policy_run(args: argparse.Namespace) -> int:
    g = dp.load_group(args.group)
    print_json(dp.group_policy(g))
    if any(r.model and r.model.source.startswith("sagemaker://") for r in g.resources):
        print(
            "note: a training job's artifact bucket is only known at deploy time; grant "
            "s3:GetObject on it too",
            file=sys.stderr,
        )
    return 0


def doctor_args(p: argparse.ArgumentParser) -> None:
    _root_arg(p)
    p.add_argument("--repair", action="store_true",
                   help="repair a damaged or emptied state database: restore its backup, or "
                   "rebuild what can be read (see docs/deploy.md)")
    p.add_argument("--quick", action="store_true",
                   help="hash only installed versions whose files' ctime moved (not every byte)")
    _wait_arg(p)
    add_json_flag(p, "the root, whether it is healthy, what was repaired and the findings")


def doctor_run(args: argparse.Namespace) -> int:
    from pyengine.deploy import doctor

    if args.repair:
        report = doctor.repair(args.root, wait_s=args.wait)
    else:
        report = doctor.check(args.root, thorough=not args.quick)
    if args.json:
        print_json({"root": report.root, "healthy": report.healthy,
                    "repaired": report.repaired,
                    "findings": [{"level": f.level, "what": f.what} for f in report.findings]})
    else:
        for line in report.repaired:
            print(f"repaired: {line}")
        for f in report.findings:
            print(f"{f.level:<8} {f.what}")
        print(f"{report.root}: {'healthy' if report.healthy else 'NOT healthy'}")
    return 0 if report.healthy else EXIT_FAILURE


ERRORS = (dp.DeployError, dp.GroupError, dp.UnpackError)
