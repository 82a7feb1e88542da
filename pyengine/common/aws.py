"""AWS plumbing: endpoint settings and boto3 clients (created once per endpoint, boto3 imported
lazily), error classification, and the S3 read policy. Used by the S3 and SageMaker sources, the
fleet's bucket and the core's capture upload."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any, Optional

from pyengine.common.errors import SourceError


@dataclass(frozen=True)
class AwsSettings:
    """Where a service is reached. ``None`` fields fall back to boto3's environment and config
    (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``/``AWS_REGION``);
    credentials always come from boto3's default chain."""

    endpoint_url: Optional[str] = None
    region: Optional[str] = None


_clients: dict[tuple[str, Optional[str], Optional[str]], Any] = {}
_lock = threading.Lock()


def client(service: str, settings: AwsSettings) -> Any:
    """A cached boto3 client for ``service`` ("s3" or "sagemaker")."""
    key = (service, settings.endpoint_url, settings.region)
    with _lock:
        c = _clients.get(key)
        if c is not None:
            return c
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise SourceError(
                f"{service} sources need boto3, which is not importable ({exc}); "
                "install it with: pip install 'pyengine[s3]'"
            ) from None
        region = settings.region or os.environ.get("AWS_REGION") or None
        cfg = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=16,
        )
        try:
            c = boto3.client(
                service, endpoint_url=settings.endpoint_url, region_name=region, config=cfg
            )
        except Exception as exc:  # noqa: BLE001 - botocore raises many kinds; all mean "no client"
            raise SourceError(f"cannot create a {service} client: {exc}") from None
        _clients[key] = c
        return c


def get_object_policy(buckets: list[str]) -> str:
    """The inline IAM policy (JSON text) granting s3:GetObject on every object of ``buckets``."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PyengineDeployGetObject",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{b}/*" for b in sorted(set(buckets))],
            }
        ],
    }
    return json.dumps(policy, indent=2)


def error_code(exc: BaseException) -> tuple[str, int]:
    """(error code, HTTP status) of a botocore ClientError; ("", 0) for anything else."""
    resp = getattr(exc, "response", None)
    if not isinstance(resp, dict):
        return "", 0
    code = str(resp.get("Error", {}).get("Code", ""))
    status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def error_message(exc: BaseException) -> str:
    """The message S3 (or another service) gave in a botocore ClientError's body; ''."""
    resp = getattr(exc, "response", None)
    if not isinstance(resp, dict):
        return ""
    return str(resp.get("Error", {}).get("Message", "") or "")


def is_transient(exc: BaseException) -> bool:
    """True for network-level failures (connection reset, timeouts, truncated bodies)."""
    try:
        from botocore import exceptions as be
    except ImportError:  # pragma: no cover
        return isinstance(exc, OSError)
    transient = (
        be.EndpointConnectionError,
        be.ConnectionClosedError,
        be.ReadTimeoutError,
        be.ConnectTimeoutError,
        be.IncompleteReadError,
        be.ResponseStreamingError,
        be.HTTPClientError,
        OSError,
    )
    if isinstance(exc, transient):
        return True
    code, status = error_code(exc)
    return status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError")
