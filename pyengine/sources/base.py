"""The interface every source implements: resolve (with a change token) and stream bytes."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional


class SourceError(OSError):
    """A source cannot be resolved or read.

    ``transient`` is true for failures worth retrying (a dropped connection, a timeout);
    false for those that will fail again the same way (missing object, access denied).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    def __str__(self) -> str:
        return str(self.args[0])


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
