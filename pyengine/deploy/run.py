"""A deployment run: plan -> fetch/install -> commit (see :func:`deploy`).

Building: every source is resolved and what changed is decided (nothing is downloaded yet, so a
missing object or a bad device fails the deployment before any transfer). InProgress: what
changed is fetched, verified and unpacked into new versions. Then everything switches at once
(:mod:`pyengine.deploy.commit`), or, when something failed, nothing does.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Callable, Optional

from pyengine.common.paths import resolve_root
from pyengine.deploy import private
from pyengine.deploy.commit import commit, switch_all
from pyengine.deploy.destinations import destination_problems
from pyengine.deploy.errors import DeployError, GroupError, UnpackError
from pyengine.deploy.group import Group
from pyengine.deploy.install import Installer
from pyengine.deploy.layout import free_bytes, no_space, remove_partial_downloads
from pyengine.deploy.plan import VERIFIED_KINDS
from pyengine.deploy.reach import reach_problems
from pyengine.deploy.records import Deployment, ItemResult, ProgressCallback, load_deployment
from pyengine.deploy.recovery import Session
from pyengine.deploy.validate import load_group
from pyengine.sources.base import SourceError

#: What a failing step raises; the item fails with its message, the deployment goes on planning.
STEP_ERRORS = (DeployError, UnpackError, SourceError, OSError, ValueError)

Plan = Callable[[ItemResult], Optional[Callable[[], None]]]


class Run(Installer):
    """One deployment of a group."""

    def units(self) -> list[tuple[str, str, Plan]]:
        """(kind, key, plan) of every resource and function, in the group's order."""
        out: list[tuple[str, str, Plan]] = []
        for r in self.group.resources:
            if r.model is not None:
                out.append(("model", r.id, functools.partial(self.prepare_model, r)))
            elif r.device is not None:
                out.append(("device", r.id, functools.partial(self.prepare_device, r)))
            else:
                out.append(("volume", r.id, functools.partial(self.prepare_volume, r)))
        for f in self.group.functions:
            out.append(("function", f.name, functools.partial(self.prepare_function, f)))
        return out

    def plan(self) -> tuple[list[tuple[ItemResult, Callable[[], None]]], bool]:
        """Building: plan every unit; the steps still to run, and whether a unit failed."""
        builds: list[tuple[ItemResult, Callable[[], None]]] = []
        failed = False
        self.resolve_all()
        for kind, key, plan in self.units():
            it = ItemResult(kind, key, "pending")
            self.items.append(it)
            t0 = time.monotonic()
            try:
                build = plan(it)
            except STEP_ERRORS as exc:
                it.outcome, it.message = "failed", str(exc)
                failed = True
                build = None
            it.seconds = time.monotonic() - t0
            if build is not None:
                builds.append((it, build))
            else:
                self.record(it)
                self.emit(event="done", key=key, kind=kind, message=it.outcome)
        return builds, failed

    def build(self, builds: list[tuple[ItemResult, Callable[[], None]]], failed: bool) -> bool:
        """InProgress: fetch, verify and unpack what changed; whether anything failed."""
        self.state.set_status(self.dep, "InProgress")
        self.emit(event="status", key=str(self.dep), message="InProgress")
        for it, build in builds:
            if failed and self.on_failure == "rollback":
                it.outcome, it.message = "skipped", "not attempted: another resource failed"
            else:
                t0 = time.monotonic()
                try:
                    build()
                except STEP_ERRORS as exc:
                    it.outcome, it.message = "failed", str(exc)
                    failed = True
                it.seconds += time.monotonic() - t0
            if it.outcome != "installed":
                self.record(it)
            self.emit(event="done", key=it.key, kind=it.kind, done=it.bytes, message=it.outcome)
        return failed

    def run(self) -> int:
        """Run the deployment; its id."""
        g = self.group
        self.dep = self.state.start_deployment(
            "deploy", g.name, g.path, json.dumps(private.store_environments(self.s.root,
                                                                            g.to_dict())),
            "Building", self.on_failure)
        self.emit(event="start", key=str(self.dep), message=g.name)
        failed = self.build(*self.plan())

        in_group = {(it.kind, it.key) for it in self.items}
        installed = self.state.installed()
        removed = [
            ItemResult(row["kind"], row["key"], "removed", path=row["destination"])
            for row in installed
            if (row["kind"], row["key"]) not in in_group and row["kind"] not in VERIFIED_KINDS
        ]
        apply = not failed or self.on_failure == "keep"
        if apply:
            # Resources dropped from the group go too (with --on-failure=keep as well: only
            # the failed resources keep their previous version).
            moves = [(it, it.version_path) for it in self.items if it.outcome == "installed"]
            try:
                switch_all(self, moves + [(it, None) for it in removed])
            except (OSError, DeployError) as exc:
                failed, apply = True, False
                for it in self.items:
                    if it.outcome == "installed":
                        it.outcome, it.message = "rolled-back", f"switching failed: {exc}"
        uninstall: list[tuple[str, str]] = []
        if apply:
            uninstall = [(it.kind, it.key) for it in removed] + [
                (row["kind"], row["key"]) for row in installed
                if row["kind"] in VERIFIED_KINDS and (row["kind"], row["key"]) not in in_group]
        else:
            for it in self.items:
                if it.outcome == "installed":
                    it.outcome = "rolled-back"
                    it.message = (
                        "prepared, not installed: the deployment failed and was rolled back"
                    )
            removed = []
        status = "Failure" if failed else "Success"
        bad = [it for it in self.items if it.outcome == "failed"]
        if not failed:
            msg = ""
        elif apply:
            msg = f"{len(bad)} resource(s) failed; the others were installed (--on-failure=keep)"
        else:
            msg = f"{len(bad) or 1} resource(s) failed; rolled back to the previous group"
        install = [it.installed_row() for it in self.items
                   if apply and it.outcome in ("installed", "verified")]
        commit(self, self.items + removed, status=status, applied=apply, message=msg,
               install=install, uninstall=uninstall)
        remove_partial_downloads(self.s.root)
        self.emit(event="end", key=str(self.dep), message=status)
        return self.dep


def deploy(
    group: Group | str,
    root: Optional[str] = None,
    *,
    on_failure: str = "rollback",
    wait_s: float = 0.0,
    progress: Optional[ProgressCallback] = None,
    retries: int = 4,
    backoff_s: float = 0.2,
) -> Deployment:
    """Deploy a group into ``root``.

    Parameters
    ----------
    group:
        A validated :class:`Group` or the path of a group file.
    root:
        pyengine's directory (see :func:`default_root`).
    on_failure:
        "rollback" (default): any failing resource leaves the previous group in place.
        "keep": install what succeeded; failed resources keep their previous version.
    wait_s:
        How long to wait for another running deployment before refusing.
    progress:
        Called with :class:`ProgressEvent` as the deployment goes.
    retries, backoff_s:
        Download attempts per resource and the first backoff (doubling, at most 5 s).

    Returns
    -------
    Deployment
        Its ``status`` is "Success" or "Failure"; ``items`` hold each resource's outcome.
    """
    if on_failure not in ("rollback", "keep"):
        raise ValueError(f"on_failure={on_failure!r}; expected 'rollback' or 'keep'")
    g = load_group(group) if isinstance(group, str) else group
    # Checked on this machine, as this user (a fleet's publisher validates elsewhere): nothing
    # is made, and the previous group stays, when a destination cannot be installed at.
    problems = destination_problems(g) + reach_problems(g)
    if problems:
        raise GroupError(g.path or "<group>", problems)
    try:
        s = Session(root, wait_s, f"deploy of group {g.name}")
        try:
            dep = Run(s, g, on_failure, progress, max(1, retries + 1), backoff_s).run()
            return load_deployment(s.state, dep)
        finally:
            s.close()
    except OSError as exc:
        if not no_space(exc):
            raise
        r = resolve_root(root)
        raise DeployError(
            f"no space left on the filesystem of {exc.filename or r} ({exc.strerror}; "
            f"{free_bytes(r)} bytes available in {r}); free some space and deploy again (the "
            "previous deployment keeps serving)") from None
