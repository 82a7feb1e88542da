"""The interface every source implements: resolve (with a change token) and stream bytes."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from pyengine.common.aws import AwsSettings
from pyengine.common.errors import SourceError

__all__ = ["Scheme", "Source", "SourceError", "SourceInfo"]


@dataclass(frozen=True)
class SourceInfo:
    """What a source resolved to.

    Attributes
    ----------
    uri:
        The source as the group wrote it.
    location:
        The concrete object read (``s3://bucket/key`` for a SageMaker job, the file's path).
    size:
        Size in bytes, when known.
    token:
        Change token: two resolutions with the same token name the same bytes.
    md5:
        Hex MD5 of the whole object when the source vouches for it (a single-part S3 ETag).
    sha256:
        Hex SHA-256 of the whole object when the source knows it (a local file).
    details:
        Source-specific facts worth showing (ETag, VersionId, training job status).
    """

    uri: str
    location: str
    size: Optional[int]
    token: str
    md5: Optional[str] = None
    sha256: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)


class Source(abc.ABC):
    """One place a package comes from."""

    #: The source as the group wrote it.
    uri: str

    #: The bucket names this source needs s3:GetObject on (for error messages and policies).
    def buckets(self) -> list[str]:
        """The S3 buckets this source reads from, when known without network access."""
        return []

    @abc.abstractmethod
    def resolve(self, previous_token: Optional[str] = None) -> SourceInfo:
        """Find the object and compute its change token.

        ``previous_token`` lets a source skip expensive work when cheap facts already show the
        object is the one that token describes (a file with the same size and mtime).
        """

    @abc.abstractmethod
    def stream(
        self, info: SourceInfo, offset: int = 0, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        """Yield the object's bytes from ``offset`` on, exactly as resolved in ``info``.

        Raises :class:`SourceError`; ``transient=True`` when retrying (from where it stopped)
        may succeed.
        """


@dataclass(frozen=True)
class Scheme:
    """One kind of source, registered once in :mod:`pyengine.sources` by its prefix.

    Attributes
    ----------
    prefix:
        What its URIs start with (``"s3://"``).
    open:
        ``open(uri, s3, sagemaker)`` -> the :class:`Source` for ``uri`` (the group's endpoints).
    check:
        ``check(uri)`` -> what is wrong with ``uri`` as written (None when nothing is); group
        validation uses it, so it reads nothing over the network.
    names_package:
        The URI ends with the package's file name (validation checks its extension).
    exists:
        ``exists(uri)`` -> why the package cannot be there on this machine, or None; used by
        ``pyengine validate`` (None: nothing to check locally).
    """

    prefix: str
    open: Callable[[str, AwsSettings, AwsSettings], Source]
    check: Callable[[str], Optional[str]]
    names_package: bool = True
    exists: Optional[Callable[[str], Optional[str]]] = None
