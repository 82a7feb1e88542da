"""Planning a deployment: where each resource goes, whether that place may be used, what is
already installed, whether the disk has room; devices and volumes are checked where they are.

:class:`Planner` holds one deployment's context (its session, group and id); the installing
steps (:mod:`pyengine.deploy.install`) and the run (:mod:`pyengine.deploy.run`) build on it.
"""

from __future__ import annotations

import concurrent.futures
import os
import stat
from typing import Callable, Optional

from pyengine.common.paths import denied_destination
from pyengine.deploy.destinations import real_destination
from pyengine.deploy.errors import DeployError
from pyengine.deploy.group import Function, Group, ModelSpec, Resource
from pyengine.deploy.layout import current_target, free_bytes, remove_partial_downloads, store_for
from pyengine.deploy.records import ItemResult, ProgressCallback, ProgressEvent
from pyengine.deploy.recovery import Session
from pyengine.deploy.schema import known_stores
from pyengine.deploy.state import dumps
from pyengine.deploy.writer import DEFAULT_MAX_FILES, TREE_MAX_BYTES
from pyengine.device_files import device_nodes
from pyengine.sources import open_source
from pyengine.sources.base import Source, SourceError, SourceInfo

#: Resources that are checked where they are, never installed (nothing to link or remove).
VERIFIED_KINDS = ("device", "volume")


def model_spec(m: ModelSpec) -> str:
    """What, besides the source's token, decides whether an installed model is still right."""
    owner = None if m.owner is None else [m.owner.group, m.owner.permission]
    return dumps(
        {"source": m.source, "destination": m.destination, "owner": owner, "sha256": m.sha256}
    )


def keep_installed(it: ItemResult, prev: Optional[dict], token: str, dest: str) -> bool:
    """Whether the installed version ``prev`` (a state row) has ``token`` and is still complete
    and what ``dest`` points to; if so ``it`` is marked unchanged with that version."""
    if not (
        prev
        and prev["token"] == token
        and prev["version_path"]
        and os.path.isdir(prev["version_path"])
        and current_target(dest) == prev["version_path"]
    ):
        return False
    it.outcome, it.version, it.version_path = ("unchanged", prev["version"], prev["version_path"])
    return True


def code_limits(f: Function) -> tuple[int, int]:
    """The caps (bytes, entries) on copying ``f``'s code: the group's, else the defaults."""
    return f.max_code_bytes or TREE_MAX_BYTES, f.max_code_files or DEFAULT_MAX_FILES


class Planner:
    """One deployment's context and the checks its plan makes on this machine."""

    def __init__(
        self,
        s: Session,
        group: Group,
        on_failure: str,
        progress: Optional[ProgressCallback],
        retries: int,
        backoff_s: float,
    ) -> None:
        self.s = s
        self.state = s.state
        self.group = group
        self.on_failure = on_failure
        self.progress = progress or (lambda e: None)
        self.retries = retries
        self.backoff_s = backoff_s
        self.items: list[ItemResult] = []
        self.dep = 0
        self.resolved: dict[str, tuple[Optional[Source], object]] = {}

    def emit(self, **kw: object) -> None:
        """Report progress (the fields of :class:`ProgressEvent`)."""
        self.progress(ProgressEvent(**kw))  # type: ignore[arg-type]

    def record(self, it: ItemResult) -> None:
        """Record one item's outcome."""
        self.state.record(self.dep, [it.row()])

    def installed(self, kind: str, key: str) -> Optional[dict]:
        """The installed row of ``kind`` ``key``, or None."""
        return self.state.installed_one(kind, key)

    # -- planning checks that need the filesystem
    def protected(self, key: str, dest: str) -> list[tuple[str, str]]:
        """Real paths the destination ``dest`` of model ``key`` may neither be in nor contain,
        each with what it is: the root, and every other resource's destination, installed
        version and version store (those of this group, those installed, and every store this
        root has made)."""
        root = self.s.root
        out = [(os.path.realpath(root), f"pyengine's root {root}")]
        dests = {r.id: r.model.destination for r in self.group.resources if r.model}
        for row in self.state.installed("model"):
            # An installed resource's place may be taken over by another id in the same
            # deployment (the old one is removed); nesting stays refused.
            if row["destination"] != dest:
                dests.setdefault(row["key"], row["destination"])
        for rid, other in dests.items():
            if rid == key or not other:
                continue
            what = f"resource {rid!r}"
            out.append((real_destination(other), f"the destination of {what} ({other})"))
            out.append((os.path.realpath(other), f"the installed version of {what}"))
            out.append((os.path.realpath(store_for(other)), f"the version store of {what}"))
        own = store_for(dest)
        for path in self.state.stores():
            if path != own:
                out.append((os.path.realpath(path), f"the version store {path}"))
        return out

    def check_place(self, key: str, dest: str, real: Optional[str] = None) -> None:
        """Refuse (DeployError) a destination whose real path (its parent resolved) is denied
        by the group rules, or is in, is, or contains a place of :meth:`protected`."""
        real = real or real_destination(dest)
        ids = [r.id for r in self.group.resources]
        name = (
            f"resources[{ids.index(key)}].model.destination {dest}"
            if key in ids
            else f"the destination {dest} of resource {key!r}"
        )
        via = f" (through symbolic links: {real})" if real != dest else ""
        problem = denied_destination(real)
        if problem:
            raise DeployError(f"{name}{via} is {problem}; refused")
        for place, what in self.protected(key, dest):
            if real == place or real.startswith(place + "/"):
                rel = "is" if real == place else "is inside"
            elif place.startswith(real + "/"):
                rel = "contains"
            else:
                continue
            raise DeployError(
                f"{name}{via} {rel} {what}; refused: choose a directory of its own"
            )

    def check_destination(self, r: Resource) -> None:
        assert r.model is not None
        dest = r.model.destination
        self.check_place(r.id, dest)
        store = store_for(dest)
        if os.path.islink(store):
            raise DeployError(
                f"the version store {store} of {dest} is a symbolic link (to "
                f"{os.readlink(store)!r}), which pyengine did not make; remove it"
            )
        if os.path.lexists(dest):
            if os.path.islink(dest):
                target = current_target(dest) or ""
                if not target.startswith(store_for(dest) + "/"):
                    raise DeployError(
                        f"destination {dest} is a link to {os.readlink(dest)!r}, which "
                        "pyengine did not make; remove it or choose another destination"
                    )
                if not self.state.is_version(target) and \
                        not self.adopt(r, target):
                    raise DeployError(
                        f"destination {dest} is managed by another pyengine root (it links to "
                        f"{target}, which {self.s.root} did not install); deploy with that "
                        "root, or `pyengine reset` it first"
                    )
            elif os.path.isdir(dest):
                if os.listdir(dest):
                    raise DeployError(
                        f"destination {dest} is a non-empty directory that pyengine does "
                        "not manage; move it away or choose another destination"
                    )
            else:
                raise DeployError(
                    f"destination {dest} exists and is not a directory; remove it or "
                    "choose another destination"
                )

    def adopt(self, r: Resource, target: str) -> bool:
        """Record the version ``target`` that ``r``'s destination links to when
        ``ROOT/stores.list`` says this root made its store (a state rebuilt by ``pyengine doctor
        --repair`` lost its rows); it keeps serving until this deployment replaces it. False
        when the store is not this root's."""
        assert r.model is not None
        store = store_for(r.model.destination)
        if store not in known_stores(self.s.root) or not os.path.isdir(target):
            return False
        self.state.adopt("model", r.id, store, r.model.destination, target)
        return True

    def resolve_all(self) -> None:
        """Resolve every model's source at once (HEAD requests, file hashes run in parallel);
        the results wait in ``self.resolved`` for :meth:`prepare_model`."""
        jobs: list[tuple[str, Source, Optional[str]]] = []
        for r in self.group.resources:
            if r.model is None:
                continue
            prev = self.installed("model", r.id)
            spec = model_spec(r.model)
            try:
                source = open_source(r.model.source, self.group.s3, self.group.sagemaker)
            except (SourceError, ValueError) as exc:
                self.resolved[r.id] = (None, exc)
                continue
            jobs.append(
                (r.id, source, prev["token"] if prev and prev["spec_json"] == spec else None)
            )
        if not jobs:
            return
        self.emit(
            event="resource", key="", kind="model", message=f"resolving {len(jobs)} source(s)"
        )

        def one(job: tuple[str, Source, Optional[str]]) -> tuple[Source, object]:
            try:
                return job[1], job[1].resolve(job[2])
            except (SourceError, ValueError, OSError) as exc:
                return job[1], exc

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
            for job, res in zip(jobs, pool.map(one, jobs)):
                self.resolved[job[0]] = res

    def prepare_device(self, r: Resource, it: ItemResult) -> Optional[Callable[[], None]]:
        assert r.device is not None
        p = r.device.path
        it.path = p
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise DeployError(f"device {p} does not exist on this machine") from None
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise DeployError(f"{p} is not a character or block device; device resources must be")
        _, missing = device_nodes(p)
        if missing:
            raise DeployError(
                f"GPU {p} needs {', '.join(missing)}, which does not exist on this machine: load "
                "the driver's modules (for /dev/nvidia-uvm: `nvidia-modprobe -u -c 0`, or run "
                "one CUDA program as root) and deploy again"
            )
        it.outcome = "verified"
        return None

    def prepare_volume(self, r: Resource, it: ItemResult) -> Optional[Callable[[], None]]:
        assert r.volume is not None
        p = r.volume.path
        it.path = p
        real = os.path.realpath(p)
        if not os.path.isdir(real):
            raise DeployError(f"volume {p} is not an existing directory on this machine; create "
                              "it (owned by the group the functions should share it through)")
        problem = denied_destination(real)  # again: links may have moved since validation
        if problem:
            raise DeployError(f"volume {p} is, through symbolic links, {real}, which is {problem}")
        root = os.path.realpath(self.s.root)
        if real == root or real.startswith(root.rstrip("/") + "/") or \
                root.startswith(real.rstrip("/") + "/"):
            raise DeployError(f"volume {p} ({real}) overlaps the core's root {root}, which no "
                              "function may see; choose a directory outside it")
        it.outcome = "verified"
        return None

    def space_message(self, r: Resource, what: str, need: Optional[int], where: str) -> str:
        """The error for resource ``r`` lacking space on ``where``'s filesystem."""
        needs = f"needs {need} bytes, " if need is not None else ""
        return (f"resource {r.id!r}: not enough disk space: {what}; {needs}"
                f"{free_bytes(where)} bytes are available on the filesystem of {where}; "
                "free some space and deploy again (the previous version keeps serving)")

    def check_space(self, r: Resource, info: SourceInfo, part: str, store: str) -> None:
        """Refuse (DeployError) to start a download that cannot fit: what is left of the
        package goes to ``part``, and at least the package's size (more once unpacked, up to
        the resource's cap) into ``store``. Partial downloads of other deployments are given up
        first when they stand in the way."""
        if info.size is None:
            return  # unknown until it arrives: running out of space is caught as it happens
        have = os.path.getsize(part) if os.path.exists(part) else 0
        need_dl, need_store = max(0, info.size - have), info.size
        downloads = os.path.dirname(part)
        same = os.stat(downloads).st_dev == os.stat(store).st_dev
        needs = [(downloads, need_dl + (need_store if same else 0))]
        if not same:
            needs.append((store, need_store))
        for where, need in needs:
            if free_bytes(where) < need and where == downloads:
                remove_partial_downloads(self.s.root, keep=part)
            if free_bytes(where) < need:
                cap = r.model.max_unpacked_bytes if r.model else None
                what = (f"{info.location} is {info.size} bytes (downloaded to {downloads}"
                        f"{', then unpacked on the same filesystem' if same else ''}"
                        f"{f', up to {cap} bytes unpacked' if cap else ''})")
                raise DeployError(self.space_message(r, what, need, where))
