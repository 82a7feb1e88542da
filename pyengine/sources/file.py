"""``file://`` sources: a package on the local filesystem (needs nothing else installed)."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Iterator, Optional

from pyengine.sources.base import Scheme, Source, SourceError, SourceInfo


def file_sha256(path: str, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk_size)
            if not b:
                return h.hexdigest()
            h.update(b)


class FileSource(Source):
    """A local file, named by an absolute path.

    The change token is ``size:mtime_ns:sha256``. When size and mtime equal the previous token's,
    the file is taken as unchanged without hashing it again; otherwise it is hashed, so a file
    that was only touched is still reported unchanged.
    """

    def __init__(self, uri: str, path: str) -> None:
        if not os.path.isabs(path):
            raise SourceError(f"file source {uri!r}: the path {path!r} is not absolute")
        self.uri = uri
        self.path = path

    def resolve(self, previous_token: Optional[str] = None) -> SourceInfo:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise SourceError(f"{self.uri}: no such file {self.path!r}") from None
        except OSError as exc:
            raise SourceError(f"{self.uri}: cannot read {self.path!r}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{self.uri}: {self.path!r} is not a regular file")
        prefix = f"{st.st_size}:{st.st_mtime_ns}:"
        if previous_token and previous_token.startswith(prefix):
            token = previous_token
        else:
            try:
                token = prefix + file_sha256(self.path)
            except OSError as exc:
                raise SourceError(f"{self.uri}: cannot read {self.path!r}: {exc}") from None
            if previous_token and previous_token.rsplit(":", 1)[-1] == token.rsplit(":", 1)[-1]:
                token = previous_token  # touched, same bytes: unchanged
        return SourceInfo(self.uri, self.path, st.st_size, token, sha256=token.rsplit(":", 1)[-1])

    def stream(
        self, info: SourceInfo, offset: int = 0, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                while True:
                    b = f.read(chunk_size)
                    if not b:
                        return
                    yield b
        except OSError as exc:
            raise SourceError(f"{self.uri}: cannot read {self.path!r}: {exc}") from None


def path_of(uri: str) -> str:
    """The path a ``file://`` URI names (``file://localhost/p`` is ``/p``)."""
    path = uri[len("file://"):]
    return path[len("localhost"):] if path.startswith("localhost/") else path


def check(uri: str) -> Optional[str]:
    """What is wrong with the ``file://`` URI ``uri`` as written, or None."""
    if not os.path.isabs(uri[len("file://"):]):
        return ("file:// sources need an absolute path (file:///abs/path); write a plain "
                "relative path to resolve it against the group file's directory")
    return None


def exists(uri: str) -> Optional[str]:
    """Why the package ``uri`` names is not on this machine, or None."""
    path = uri[len("file://"):]
    if not os.path.isfile(path):
        return f"{path} is not a file (the package must exist to deploy)"
    return None


SCHEME = Scheme("file://", lambda uri, s3, sagemaker: FileSource(uri, path_of(uri)), check,
                exists=exists)
