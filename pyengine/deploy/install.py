"""Installing: the fetch -> verify -> unpack steps that make a new complete version of a model
(or a function's code) in its store, journalled so a killed deploy can be undone."""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Callable, Optional

from pyengine.deploy.download import fetch
from pyengine.deploy.errors import DeployError, UnpackError
from pyengine.deploy.group import Function, Resource
from pyengine.deploy.layout import fd_path, no_space, open_dir, rmtree, store_for, version_name
from pyengine.deploy.packages import apply_owner, unpack
from pyengine.deploy.plan import Planner, code_limits, keep_installed, model_spec
from pyengine.deploy.records import ItemResult
from pyengine.deploy.tree import copy_tree, tree_digest
from pyengine.deploy.versions import changed_in_place, changed_since, version_digest
from pyengine.deploy.writer import fsync_dir
from pyengine.sources.base import SourceInfo


class Installer(Planner):
    """A deployment's plan plus the steps that install each model and function."""

    def prepare_model(self, r: Resource, it: ItemResult) -> Optional[Callable[[], None]]:
        """Plan model ``r``: None when its installed version stays, else the step that
        downloads, verifies and unpacks the new one into its store."""
        assert r.model is not None
        m = r.model
        spec = model_spec(m)
        it.path = m.destination
        it.source = m.source
        it.spec = spec
        self.check_destination(r)
        prev = self.installed("model", r.id)
        source, got = self.resolved.pop(r.id)
        if isinstance(got, BaseException):
            raise got
        assert source is not None and isinstance(got, SourceInfo)
        info = got
        it.token = info.token
        if prev and prev["spec_json"] == spec and keep_installed(it, prev, info.token, m.destination):
            if m.owner and m.owner.permission == "rw":
                # The function granted rw writes this version in place and keeps what it wrote;
                # a deploy that did not install it cannot vouch for it, so it does not call it
                # "unchanged" once anything in it changed (a change moves an inode's ctime,
                # which no user can set back).
                row = self.state.version("model", r.id, prev["version"])
                changed = (changed_since(prev["version_path"], row["created"])
                           if row is not None and row["created"] else None)
                if changed is not None:
                    it.outcome = "modified"
                    it.message = (f"kept as the function granted rw left it: {changed} changed "
                                  "after the deploy installed it, so it no longer matches the "
                                  "source (change the source, or reset, to install it again)")
                return None
            damage = changed_in_place(self.state, "model", r.id, prev["version"],
                                      prev["version_path"])
            if damage is None:
                return None
            # Changed in place (not by a function: none may write it): installed again.
            it.outcome, it.version, it.version_path = "pending", None, None
            it.message = f"installed again: version {prev['version']} {damage}"

        def build() -> None:
            store = store_for(m.destination)
            parent, store_name = os.path.split(store)
            # Checked again before anything is made on the way (the download took a while).
            self.check_place(r.id, m.destination)
            os.makedirs(parent, exist_ok=True)
            pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            sfd = gfd = -1
            try:
                # From here every step goes through descriptors of directories whose real path
                # was checked: a link swapped into the destination's path changes nothing.
                self.check_place(
                    r.id, m.destination, os.path.join(fd_path(pfd, parent), os.path.basename(
                        m.destination))
                )
                with contextlib.suppress(FileExistsError):
                    os.mkdir(store_name, 0o755, dir_fd=pfd)
                try:
                    sfd = open_dir(store_name, pfd)
                except OSError as exc:
                    raise DeployError(
                        f"the version store {store} cannot be opened as a directory of its "
                        f"own ({exc.strerror}); is it a symbolic link? remove it"
                    ) from None
                self.state.add_store(store)
                version = version_name(self.dep, info.token, store)
                vpath = os.path.join(store, version)
                staging_name = f"staging-{self.dep}"
                staging = os.path.join(store, staging_name)
                self.state.journal(self.dep, "stage", "model", r.id, staging, vpath, None)
                downloads = os.path.join(self.s.root, "downloads")
                os.makedirs(downloads, exist_ok=True)
                part = os.path.join(
                    downloads,
                    hashlib.sha256(f"{r.id}\0{info.token}".encode()).hexdigest()[:24] + ".part",
                )
                self.emit(
                    event="resource",
                    key=r.id,
                    kind="model",
                    total=info.size,
                    message=f"downloading {info.location}",
                )

                def on_bytes(done: int, total: Optional[int]) -> None:
                    self.emit(event="bytes", key=r.id, kind="model", done=done, total=total)

                name = info.location.rsplit("/", 1)[-1]
                self.check_space(r, info, part, store)
                # Only verified bytes are unpacked: the download (and its digests) completes
                # first.
                try:
                    res = fetch(
                        source,
                        info,
                        part,
                        sha256=m.sha256,
                        attempts=self.retries,
                        backoff_s=self.backoff_s,
                        progress=on_bytes,
                    )
                except OSError as exc:
                    if not no_space(exc):
                        raise
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(part)  # a partial file no one can finish only takes space
                    raise DeployError(self.space_message(r, f"the download into {part} ran "
                                                         f"out of space ({exc.strerror})",
                                                         info.size, downloads)) from None
                it.bytes, it.attempts = res.downloaded, res.attempts
                self.emit(event="resource", key=r.id, kind="model", message="unpacking")
                rmtree(os.path.join(fd_path(sfd, store), staging_name))
                os.mkdir(staging_name, 0o700, dir_fd=sfd)
                gfd = open_dir(staging_name, sfd)
                # The staging directory by its descriptor: unpacking and ownership go there
                # whatever happens to the path above it.
                at = f"/proc/self/fd/{gfd}" if os.path.isdir(f"/proc/self/fd/{gfd}") else staging
                try:
                    unpack(
                        part,
                        at,
                        name=name,
                        max_bytes=m.max_unpacked_bytes,
                        max_files=m.max_files,
                    )
                    apply_owner(
                        at,
                        m.owner.group if m.owner else None,
                        m.owner.permission if m.owner else None,
                    )
                except UnpackError as exc:
                    rmtree(os.path.join(fd_path(sfd, store), staging_name))
                    os.unlink(part)
                    raise UnpackError(f"{name}: {exc}") from None
                except OSError as exc:
                    if not no_space(exc):
                        raise
                    rmtree(os.path.join(fd_path(sfd, store), staging_name))
                    os.unlink(part)
                    raise DeployError(self.space_message(r, f"unpacking into {store} ran out "
                                                         f"of space ({exc.strerror})", None,
                                                         store)) from None
                digest = version_digest("model", at)
                os.fsync(gfd)
                os.rename(staging_name, version, src_dir_fd=sfd, dst_dir_fd=sfd)
                os.fsync(sfd)
            finally:
                for fd in (gfd, sfd, pfd):
                    if fd >= 0:
                        os.close(fd)
            self.state.add_version("model", r.id, version, vpath, info.token, self.dep, digest)
            os.unlink(part)
            it.outcome, it.version, it.version_path = "installed", version, vpath

        return build

    def prepare_function(self, f: Function, it: ItemResult) -> Optional[Callable[[], None]]:
        """Plan function ``f``: None when its installed code stays, else the step that copies
        its code into a new version."""
        where = f"functions[{self.group.functions.index(f)}].code"

        def refused(exc: Exception) -> UnpackError:
            return UnpackError(f"{where} ({f.code}): {exc}")

        max_bytes, max_files = code_limits(f)
        try:
            token = "code:" + tree_digest(f.code, max_bytes=max_bytes, max_files=max_files)
        except (UnpackError, OSError) as exc:
            raise refused(exc) from None
        it.token, it.source = token, f.code
        store = os.path.join(self.s.root, "functions", f.name)
        dest = os.path.join(store, "current")
        it.path = dest
        prev = self.installed("function", f.name)
        if keep_installed(it, prev, token, dest):
            assert prev is not None
            damage = changed_in_place(self.state, "function", f.name, prev["version"],
                                      prev["version_path"])
            if damage is None:
                return None
            it.outcome, it.version, it.version_path = "pending", None, None
            it.message = f"installed again: version {prev['version']} {damage}"

        def build() -> None:
            os.makedirs(store, exist_ok=True)
            self.state.add_store(store)
            staging = os.path.join(store, f"staging-{self.dep}")
            self.state.journal(self.dep, "stage", "function", f.name, staging, None, None)
            rmtree(staging)
            os.mkdir(staging, 0o700)
            try:
                _, digest = copy_tree(
                    f.code, staging, max_bytes=max_bytes, max_files=max_files
                )
            except (UnpackError, OSError) as exc:
                rmtree(staging)
                raise refused(exc) from None
            # What was copied decides the version (the tree may have changed since planning).
            it.token = "code:" + digest
            installed_digest = version_digest("function", staging)
            version = version_name(self.dep, it.token, store)
            vpath = os.path.join(store, version)
            self.state.journal(self.dep, "stage", "function", f.name, staging, vpath, None)
            os.rename(staging, vpath)
            fsync_dir(store)
            self.state.add_version("function", f.name, version, vpath, it.token, self.dep,
                                   installed_digest)
            it.outcome, it.version, it.version_path = "installed", version, vpath

        return build
