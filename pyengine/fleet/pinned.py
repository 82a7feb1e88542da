"""What a core downloads for a fleet document, pinned by what the document signs: function code
(size and SHA-256) and the sizes of model packages (checked before the deploy fetches them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from typing import Any

from pyengine.deploy import DeployError, fetch, unpack
from pyengine.fleet.store import Fleet
from pyengine.sources import S3Source, open_source


def fetch_code(fleet: Fleet, folder: str, name: str, spec: dict[str, Any]) -> str:
    """Function ``name``'s code from the bucket, no larger than the signed size, checked against
    the signed SHA-256, unpacked under ``folder/code/<sha256>`` (kept: a later document with the
    same code reuses it); returns that directory.

    Raises
    ------
    DeployError
        The object is not of the signed size (refused before a byte is read).
    """
    sha, size = str(spec["sha256"]), int(spec["size"])
    dest = os.path.join(folder, "code", sha)
    if os.path.isdir(dest):
        return dest
    src = S3Source(str(spec["uri"]), fleet.s3)
    info = src.resolve()
    if info.size != size:
        # Refused before a byte of it is read; the GET below is pinned to this object's
        # ETag, so what it streams cannot grow either.
        raise DeployError(f"code of {name!r}: {info.location} has {info.size} bytes, but "
                          f"the document signs {size}")
    downloads = os.path.join(folder, "downloads")
    os.makedirs(downloads, exist_ok=True)
    part = os.path.join(downloads, f"{sha}.part")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part)  # never resume into a file of unknown origin
    fetch(src, dataclasses.replace(info, size=size), part, sha256=sha, attempts=3)
    staging = f"{dest}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        unpack(part, staging, name=f"{name}.tar.gz")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
    os.rename(staging, dest)
    return dest


def check_package_sizes(doc: dict[str, Any], group: Any) -> None:
    """Refuse a model package whose object is not of the signed size before the deploy
    downloads it (the deploy then streams that object, pinned by its ETag, and checks the
    signed SHA-256).

    Raises
    ------
    DeployError
        Naming the resource, the object, its size and the signed one.
    """
    sizes = doc.get("packages") or {}
    for r in group.resources:
        want = (sizes.get(r.id) or {}).get("size")
        if r.model is None or not isinstance(want, int):
            continue
        info = open_source(r.model.source, group.s3, group.sagemaker).resolve()
        if info.size is not None and info.size != want:
            raise DeployError(f"resource {r.id!r}: {info.location} has {info.size} bytes, "
                              f"but the document signs {want}")
