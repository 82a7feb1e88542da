"""The fleet's place in an object store: ``s3://BUCKET/PREFIX``.

Layout under the prefix::

    deployment.json              the latest signed document (cores read this one)
    deployments/<serial>.json    every signed document ever published (rollback, audit)
    packages/<sha256><ext>       model packages uploaded from local files (content-addressed)
    code/<sha256>.tar.gz         function code (content-addressed)
    status/<core>.json           each core's status (written by the core)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from pyengine.sources.aws import AwsSettings, client, error_code, get_object_policy
from pyengine.sources.base import SourceError

CORE_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
LATEST = "deployment.json"


def check_core_name(name: str) -> str:
    """``name`` when it is a valid core name; ValueError saying what is allowed otherwise."""
    if not isinstance(name, str) or not CORE_NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(
            f"core name {name!r} must be 1-128 letters, digits, '.', '_', ':' or '-'"
        )
    return name


@dataclass(frozen=True)
class Fleet:
    """A fleet location: bucket, key prefix, and how to reach the S3 API."""

    bucket: str
    prefix: str
    s3: AwsSettings = AwsSettings()

    @staticmethod
    def parse(uri: str, s3: Optional[AwsSettings] = None) -> Fleet:
        """``s3://bucket/prefix`` -> Fleet (the prefix may be empty or nested)."""
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise ValueError(f"--fleet {uri!r} must be s3://BUCKET/PREFIX")
        bucket, _, prefix = uri[5:].partition("/")
        if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket):
            raise ValueError(
                f"--fleet {uri!r}: {bucket!r} is not a valid S3 bucket name (3-63 lowercase "
                "letters, digits, '.' and '-')"
            )
        prefix = prefix.strip("/")
        if any(c in prefix for c in "+#\0"):
            raise ValueError(f"--fleet {uri!r}: the prefix may not contain '+', '#' or NUL")
        return Fleet(bucket, prefix, s3 or AwsSettings())

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def topic(self) -> str:
        """The MQTT topic root of this fleet: ``pyengine/fleet/<bucket>/<prefix>``."""
        return "/".join(p for p in ("pyengine/fleet", self.bucket, self.prefix) if p)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def object_uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def _client(self) -> Any:
        return client("s3", self.s3)

    def _error(self, exc: BaseException, action: str, key: str) -> SourceError:
        code, status = error_code(exc)
        where = f"s3://{self.bucket}/{key}"
        if status == 403 or code in ("AccessDenied", "Forbidden"):
            return SourceError(
                f"{action} {where}: access denied ({code or status}); the fleet needs "
                f"s3:GetObject (and PutObject/ListBucket for publishers and cores' status) on "
                f"bucket {self.bucket!r}, e.g.:\n{get_object_policy([self.bucket])}"
            )
        if code == "NoSuchBucket":
            return SourceError(f"{action} {where}: bucket {self.bucket!r} does not exist")
        return SourceError(f"{action} {where}: {exc}", transient=True)

    # -- objects -----------------------------------------------------------------------------

    def get(self, *parts: str) -> Optional[bytes]:
        """The bytes of an object under the prefix; None when it does not exist."""
        key = self.key(*parts)
        try:
            resp = self._client().get_object(Bucket=self.bucket, Key=key)
            return bytes(resp["Body"].read())
        except Exception as exc:  # noqa: BLE001 - classified below
            code, status = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return None
            raise self._error(exc, "GET", key) from None

    def exists(self, *parts: str) -> bool:
        key = self.key(*parts)
        try:
            self._client().head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception as exc:  # noqa: BLE001
            code, status = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return False
            raise self._error(exc, "HEAD", key) from None

    def put(self, data: bytes, *parts: str, content_type: str = "application/json") -> str:
        """Write an object under the prefix; returns its s3:// URI."""
        key = self.key(*parts)
        try:
            self._client().put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            )
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "PUT", key) from None
        return f"s3://{self.bucket}/{key}"

    def put_json(self, obj: Any, *parts: str) -> str:
        return self.put(json.dumps(obj, indent=1, sort_keys=True).encode(), *parts)

    def upload_file(self, path: str, *parts: str) -> str:
        key = self.key(*parts)
        try:
            self._client().upload_file(path, self.bucket, key)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "PUT", key) from None
        return f"s3://{self.bucket}/{key}"

    def list(self, *parts: str) -> Iterator[str]:
        """Names (relative to ``parts``) of the objects under a sub-prefix."""
        base = self.key(*parts) + "/"
        token: Optional[str] = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                resp = self._client().list_objects_v2(**kwargs)
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "LIST", base) from None
            for item in resp.get("Contents", []):
                yield str(item["Key"])[len(base):]
            if not resp.get("IsTruncated"):
                return
            token = resp.get("NextContinuationToken")

    # -- statuses ----------------------------------------------------------------------------

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Every core's last status, by core name (unreadable ones are skipped)."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.list("status"):
            if not name.endswith(".json") or "/" in name:
                continue
            data = self.get("status", name)
            if data is None:
                continue
            try:
                st = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(st, dict):
                out[name[: -len(".json")]] = st
        return out
