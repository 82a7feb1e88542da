"""Where packages come from: ``file://``, ``s3://`` and ``sagemaker://`` sources.

Every source resolves to a :class:`SourceInfo` (with a change token) and streams bytes from an
offset. This package never imports a backend or the native core.
"""

from __future__ import annotations

import os

from pyengine.sources.aws import AwsSettings, get_object_policy
from pyengine.sources.base import Source, SourceError, SourceInfo
from pyengine.sources.file import FileSource, file_sha256

SCHEMES = ("file://", "s3://", "sagemaker://")


def open_source(
    uri: str, s3: AwsSettings | None = None, sagemaker: AwsSettings | None = None
) -> Source:
    """The :class:`Source` for ``uri``.

    Parameters
    ----------
    uri:
        ``file:///abs/path``, ``s3://bucket/key`` or ``sagemaker://job-name-or-arn``.
    s3, sagemaker:
        Endpoint and region for those services; ``None`` uses boto3's environment.
    """
    s3 = s3 or AwsSettings()
    if uri.startswith("file://"):
        path = uri[len("file://") :]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        return FileSource(uri, path)
    if uri.startswith("s3://"):
        from pyengine.sources.s3 import S3Source

        return S3Source(uri, s3)
    if uri.startswith("sagemaker://"):
        from pyengine.sources.sagemaker import SageMakerSource

        return SageMakerSource(uri, sagemaker or AwsSettings(), s3)
    if os.path.isabs(uri):
        return FileSource(uri, uri)
    raise ValueError(
        f"unsupported source {uri!r}; expected one of {', '.join(SCHEMES)} or an absolute path"
    )


__all__ = [
    "AwsSettings",
    "FileSource",
    "SCHEMES",
    "Source",
    "SourceError",
    "SourceInfo",
    "file_sha256",
    "get_object_policy",
    "open_source",
]
