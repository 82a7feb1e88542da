"""Deployment commands: deploy, rollback, reset, deployments, resources, policy (thin over
pyengine.deploy, which needs neither the native core nor any framework)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import IO, Optional

from pyengine import deploy as dp

EXIT_FAILURE = 1


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


def deploy_run(args: argparse.Namespace) -> int:
    progress = None if args.quiet else Progress(sys.stdout)
    d = dp.deploy(
        args.group,
        args.root,
        on_failure=args.on_failure,
        wait_s=args.wait,
        progress=progress,
        retries=args.retries,
    )
    print_deployment(d)
    return 0 if d.status == "Success" else EXIT_FAILURE


def rollback_args(p: argparse.ArgumentParser) -> None:
    _root_arg(p)
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")


def rollback_run(args: argparse.Namespace) -> int:
    print_deployment(dp.rollback(args.root, wait_s=args.wait))
    return 0


def reset_args(p: argparse.ArgumentParser) -> None:
    _root_arg(p)
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")


def reset_run(args: argparse.Namespace) -> int:
    removed = dp.reset(args.root, wait_s=args.wait)
    if not removed:
        print(f"nothing deployed in {dp.resolve_root(args.root)}")
    for p in removed:
        print(f"removed {p}")
    return 0


def deployments_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "show"))
    p.add_argument("id", nargs="?", type=int, help="deployment id (show; default the latest)")
    _root_arg(p)
    p.add_argument("--json", action="store_true")


def deployments_run(args: argparse.Namespace) -> int:
    if args.action == "list":
        deps = dp.list_deployments(args.root)
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "id": d.id,
                            "kind": d.kind,
                            "group": d.group_name,
                            "status": d.status,
                            "started": d.started,
                            "finished": d.finished,
                            "message": d.message,
                        }
                        for d in deps
                    ],
                    indent=2,
                )
            )
            return 0
        if not deps:
            print(f"no deployments in {dp.resolve_root(args.root)}")
        for d in deps:
            print(
                f"{d.id:>5}  {d.kind:<8} {d.status:<10} {_when(d.started)}  {d.group_name}  "
                f"{d.message or ''}".rstrip()
            )
        return 0
    deps = dp.list_deployments(args.root)
    if args.id is None and not deps:
        raise dp.DeployError(f"no deployments in {dp.resolve_root(args.root)}")
    d = dp.get_deployment(args.id if args.id is not None else deps[0].id, args.root)
    if args.json:
        print(
            json.dumps(
                {
                    "id": d.id,
                    "kind": d.kind,
                    "group": d.group_name,
                    "status": d.status,
                    "message": d.message,
                    "items": [
                        {
                            "kind": i.kind,
                            "key": i.key,
                            "outcome": i.outcome,
                            "version": i.version,
                            "path": i.path,
                            "bytes": i.bytes,
                            "attempts": i.attempts,
                            "message": i.message,
                        }
                        for i in d.items
                    ],
                },
                indent=2,
            )
        )
    else:
        print_deployment(d)
    return 0


def resources_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "show"))
    p.add_argument("id", nargs="?", help="resource id or function name (show)")
    _root_arg(p)
    p.add_argument("--json", action="store_true")


def resources_run(args: argparse.Namespace) -> int:
    rows = dp.list_installed(args.root)
    if args.action == "show":
        if not args.id:
            raise ValueError("resources show needs a resource id or function name")
        rows = [r for r in rows if r["key"] == args.id]
        if not rows:
            raise dp.DeployError(
                f"no resource or function {args.id!r} is deployed in {dp.resolve_root(args.root)}"
            )
        for r in rows:
            if args.json:
                print(json.dumps(r, indent=2))
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
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"nothing deployed in {dp.resolve_root(args.root)}")
    for r in rows:
        print(
            f"{r['kind']:<8} {r['key']:<24} {r['version'] or '-':<16} {r['destination']}  "
            f"(deployment {r['deployment_id']}, {r['source'] or '-'})"
        )
    return 0


def policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", help="group file (YAML or JSON)")


def policy_run(args: argparse.Namespace) -> int:
    g = dp.load_group(args.group)
    print(json.dumps(dp.group_policy(g), indent=2))
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
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true")


def doctor_run(args: argparse.Namespace) -> int:
    from pyengine.deploy import doctor

    if args.repair:
        report = doctor.repair(args.root, wait_s=args.wait)
    else:
        report = doctor.check(args.root, thorough=not args.quick)
    if args.json:
        print(json.dumps({"root": report.root, "healthy": report.healthy,
                          "repaired": report.repaired,
                          "findings": [{"level": f.level, "what": f.what}
                                       for f in report.findings]}, indent=2))
    else:
        for line in report.repaired:
            print(f"repaired: {line}")
        for f in report.findings:
            print(f"{f.level:<8} {f.what}")
        print(f"{report.root}: {'healthy' if report.healthy else 'NOT healthy'}")
    return 0 if report.healthy else EXIT_FAILURE


ERRORS = (dp.DeployError, dp.GroupError, dp.UnpackError)
