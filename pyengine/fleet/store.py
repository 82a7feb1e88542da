"""The fleet's place in an object store: ``s3://BUCKET/PREFIX``.

Layout under the prefix::

    timestamp.json               signed, short-lived: names the latest document and enrollment
                                 by serial, SHA-256 and size (cores read this first)
    deployment.json              the latest signed document (for people; cores follow the
                                 timestamp to deployments/<serial>.json)
    deployments/<serial>.json    every signed document ever published (rollback, audit)
    enrollment.json              the signed list of enrolled cores and their public keys
    packages/<sha256><ext>       model packages uploaded from local files (content-addressed)
    code/<sha256>.tar.gz         function code (content-addressed)
    status/<core>.json           each core's status, signed with the core's own key

Every read is capped: by the size the timestamp signs where one is known, else by
:attr:`Fleet.max_document` (1 MiB unless configured), and nothing past the cap is requested.
"""

from __future__ import annotations

import builtins
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from pyengine.common.aws import AwsSettings, client, error_code, get_object_policy
from pyengine.common.errors import SourceError

CORE_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
LATEST = "deployment.json"
TIMESTAMP = "timestamp.json"
ENROLLMENT = "enrollment.json"
#: The largest object read when no signed size is known (timestamp.json, statuses, history).
MAX_DOCUMENT = 1 << 20


class OversizeError(SourceError):
    """An object larger than the size that was signed for it (or than the document cap)."""


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
    max_document: int = MAX_DOCUMENT

    @staticmethod
    def parse(uri: str, s3: Optional[AwsSettings] = None,
              max_document: int = MAX_DOCUMENT) -> Fleet:
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
        if not isinstance(max_document, int) or max_document < 1024:
            raise ValueError(f"the document cap {max_document!r} must be at least 1024 bytes")
        return Fleet(bucket, prefix, s3 or AwsSettings(), max_document)

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

    def get(self, *parts: str, size: Optional[int] = None) -> Optional[bytes]:
        """The bytes of an object under the prefix; None when it does not exist.

        At most ``size`` bytes (the signed size: the object must have exactly that many) or,
        without one, :attr:`max_document` bytes are read. The request itself asks for no more
        than one byte past the cap, so a huge object costs the cap, not its size.

        Raises
        ------
        OversizeError
            The object is larger than the cap (or not of the signed size).
        """
        key = self.key(*parts)
        cap = self.max_document if size is None else size
        where = f"s3://{self.bucket}/{key}"
        try:
            resp = self._client().get_object(Bucket=self.bucket, Key=key,
                                              Range=f"bytes=0-{cap}")
        except Exception as exc:  # noqa: BLE001 - classified below
            code, status = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return None
            if code == "InvalidRange":  # an empty object has no byte 0
                data = b""
                if size not in (None, 0):
                    raise OversizeError(f"{where} is empty, but {size} bytes were signed") \
                        from None
                return data
            raise self._error(exc, "GET", key) from None
        body = resp["Body"]
        try:
            # "bytes 0-N/TOTAL" when the server honoured the range; else the whole length.
            total = str(resp.get("ContentRange") or "").rpartition("/")[2]
            length = int(total) if total.isdigit() else int(resp.get("ContentLength") or 0)
            if length > cap:
                raise OversizeError(self._oversize(where, length, cap, size))
            out = bytearray()
            for chunk in body.iter_chunks(1 << 16):
                out += chunk
                if len(out) > cap:  # a server that ignored the range and lied about length
                    raise OversizeError(self._oversize(where, len(out), cap, size))
        except OversizeError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "GET", key) from None
        finally:
            body.close()
        if size is not None and len(out) != size:
            raise OversizeError(f"{where} has {len(out)} bytes, but {size} were signed")
        return bytes(out)

    @staticmethod
    def _oversize(where: str, got: int, cap: int, size: Optional[int]) -> str:
        if size is not None:
            return (f"{where} has {got} bytes or more, but the timestamp signs {size}: "
                    "refused after reading at most the signed size")
        return (f"{where} has {got} bytes or more, over the {cap}-byte cap for documents "
                "without a signed size (--fleet-max-document): refused unread")

    def size(self, *parts: str) -> Optional[int]:
        """The size of an object under the prefix; None when it does not exist."""
        key = self.key(*parts)
        try:
            head = self._client().head_object(Bucket=self.bucket, Key=key)
            return int(head["ContentLength"])
        except Exception as exc:  # noqa: BLE001
            code, status = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return None
            raise self._error(exc, "HEAD", key) from None

    def exists(self, *parts: str) -> bool:
        return self.size(*parts) is not None

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

    def status_names(self) -> builtins.list[str]:
        """The core names that have a status object (anyone with write access can add one:
        see :mod:`pyengine.fleet.enrollment` for the ones that count)."""
        return sorted(n[: -len(".json")] for n in self.list("status")
                      if n.endswith(".json") and "/" not in n)

    def status_object(self, name: str) -> Optional[bytes]:
        """The raw status object of core ``name`` (capped like every document)."""
        return self.get("status", f"{check_core_name(name)}.json")
