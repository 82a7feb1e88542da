"""Committing a deployment: the one path by which a run and a rollback switch destinations and
record what is installed.

Every switch is journalled before it is made (:mod:`pyengine.deploy.recovery` undoes a killed
one); a switch that fails undoes those made before it, so the previous group keeps serving.
Then one transaction records what is installed and the deployment's outcome, versions no longer
kept are collected, and the state is copied (:meth:`pyengine.deploy.state.State.backup`).
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence

from pyengine.deploy.destinations import real_destination
from pyengine.deploy.errors import DeployError
from pyengine.deploy.layout import PlaceCheck, current_target, point, store_for
from pyengine.deploy.plan import Planner
from pyengine.deploy.records import ItemResult
from pyengine.deploy.recovery import backup_state, collect


def switch(p: Planner, it: ItemResult, target: Optional[str]) -> None:
    """Point ``it``'s path at ``target`` (None: remove the link), journalled first; a model's
    destination is checked again at the directory the change lands in."""
    assert it.path is not None
    dest = it.path
    check: Optional[PlaceCheck] = None
    if it.kind == "model":
        # Checked again here, right before the switch: a link swapped into the path since
        # validation is refused as it would have been then.
        def check(real: str) -> None:
            p.check_place(it.key, dest, real)

        check(real_destination(dest))  # before any directory is made on the way
    tmp_dir = _link_dir(it)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.makedirs(tmp_dir, exist_ok=True)
    p.state.journal(p.dep, "switch", it.kind, it.key, dest, target, current_target(dest))
    point(dest, target, tmp_dir, check)


def _link_dir(it: ItemResult) -> str:
    """Where the temporary link for ``it``'s path is made: beside a function's ``current``, in
    a model's store."""
    return os.path.dirname(it.path or "") if it.kind == "function" else store_for(it.path or "")


def switch_all(p: Planner, moves: Sequence[tuple[ItemResult, Optional[str]]]) -> None:
    """Point each item's path at its target (None: remove it). An item whose destination moved
    since it was installed has its old link removed first. When a switch fails, those made are
    undone from the journal's previous targets and the error is raised."""
    current = {(r["kind"], r["key"]): r["destination"] for r in p.state.installed()}
    switched: list[ItemResult] = []
    try:
        for it, target in moves:
            old = current.get((it.kind, it.key))
            if old and old != it.path:  # the destination moved: the old link goes
                gone = ItemResult(it.kind, it.key, "moved", path=old)
                switch(p, gone, None)
                switched.append(gone)
            switch(p, it, target)
            switched.append(it)
    except (OSError, DeployError):
        for it in reversed(switched):
            point(it.path or "", p.state.previous_target(p.dep, it.kind, it.key, it.path or ""),
                  _link_dir(it))
        raise


def commit(p: Planner, items: Iterable[ItemResult], *, status: str, applied: bool,
           message: Optional[str], install: Iterable[Sequence[object]] = (),
           uninstall: Iterable[tuple[str, str]] = (), replace_all: bool = False) -> None:
    """Record deployment ``p.dep``'s outcome (see :meth:`pyengine.deploy.state.State.finish`),
    collect the versions no longer kept, and copy the state when it ``applied``."""
    p.state.finish(p.dep, status=status, applied=applied, message=message,
                   items=[it.row() for it in items], install=install, uninstall=uninstall,
                   replace_all=replace_all)
    collect(p.state)
    if applied:
        backup_state(p.state, p.emit)
