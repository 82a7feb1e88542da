"""Where packages come from: ``file://``, ``s3://`` and ``sagemaker://`` sources.

Every source resolves to a :class:`SourceInfo` (with a change token) and streams bytes from an
offset. This package never imports a backend or the native core.

The schemes are registered here, once: a new scheme is a module with a :class:`Source`, its
``check(uri)`` and a :class:`Scheme`, plus one :func:`register` line below. Group validation
(:mod:`pyengine.deploy.checks`) and :func:`open_source` both go through this registry.
"""

from __future__ import annotations

import os
from typing import Optional

from pyengine.common.aws import AwsSettings, get_object_policy
from pyengine.sources import file, s3, sagemaker
from pyengine.sources.base import Scheme, Source, SourceError, SourceInfo
from pyengine.sources.file import FileSource, file_sha256
from pyengine.sources.s3 import S3Source

#: The registered schemes by prefix (``"s3://"``), in the order they were registered.
SCHEMES: dict[str, Scheme] = {}


def register(scheme: Scheme) -> None:
    """Add a source scheme (a second one with the same prefix replaces the first)."""
    SCHEMES[scheme.prefix] = scheme


register(file.SCHEME)
register(s3.SCHEME)
register(sagemaker.SCHEME)


def scheme_for(uri: str) -> Optional[Scheme]:
    """The registered scheme of ``uri``, or None."""
    for prefix, scheme in SCHEMES.items():
        if uri.startswith(prefix):
            return scheme
    return None


def schemes_text() -> str:
    """The registered prefixes for messages: ``file://, s3:// or sagemaker://``."""
    names = list(SCHEMES)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def open_source(
    uri: str, s3: AwsSettings | None = None, sagemaker: AwsSettings | None = None
) -> Source:
    """The :class:`Source` for ``uri``.

    Parameters
    ----------
    uri:
        A URI of a registered scheme (``file:///abs/path``, ``s3://bucket/key``,
        ``sagemaker://job-name-or-arn``) or an absolute path.
    s3, sagemaker:
        Endpoint and region for those services; ``None`` uses boto3's environment.
    """
    scheme = scheme_for(uri)
    if scheme is not None:
        return scheme.open(uri, s3 or AwsSettings(), sagemaker or AwsSettings())
    if os.path.isabs(uri):
        return FileSource(uri, uri)
    raise ValueError(
        f"unsupported source {uri!r}; expected one of {', '.join(SCHEMES)} or an absolute path"
    )


__all__ = [
    "AwsSettings",
    "FileSource",
    "S3Source",
    "SCHEMES",
    "Scheme",
    "Source",
    "SourceError",
    "SourceInfo",
    "file_sha256",
    "get_object_policy",
    "open_source",
    "register",
    "scheme_for",
    "schemes_text",
]
