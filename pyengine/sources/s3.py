"""``s3://bucket/key`` sources through boto3 (any S3-compatible endpoint)."""

from __future__ import annotations

from typing import Any, Iterator, Optional

from pyengine.sources.aws import AwsSettings, client, error_code, get_object_policy, is_transient
from pyengine.sources.base import Source, SourceError, SourceInfo

_SSE_C_HELP = (
    "pyengine does not fetch objects encrypted with a customer-provided key (SSE-C), because the "
    "key would have to be stored on every device; re-upload the package with SSE-S3 (AES256) or "
    "SSE-KMS encryption, which work"
)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); ValueError naming the problem otherwise."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"{uri!r} must be s3://BUCKET/KEY with both parts non-empty")
    return bucket, key


class S3Source(Source):
    """An object in S3. Change token: the VersionId when the bucket is versioned, else the ETag."""

    def __init__(self, uri: str, settings: AwsSettings) -> None:
        self.uri = uri
        self.bucket, self.key = parse_s3_uri(uri)
        self.settings = settings

    def buckets(self) -> list[str]:
        return [self.bucket]

    def _client(self) -> Any:
        return client("s3", self.settings)

    def _error(self, exc: BaseException, action: str) -> SourceError:
        code, status = error_code(exc)
        where = f"s3://{self.bucket}/{self.key}"
        if (
            code
            in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch")
            or status == 403
        ):
            return SourceError(
                f"{action} {where}: access denied ({code or status}) to bucket '{self.bucket}'. "
                f"Grant the identity that deploys s3:GetObject on it, for example with this inline "
                f"policy:\n{get_object_policy([self.bucket])}"
            )
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return SourceError(
                f"{action} {where}: no such object (bucket '{self.bucket}', key "
                f"'{self.key}'); check the source URI"
            )
        if code == "NoSuchBucket":
            return SourceError(f"{action} {where}: bucket '{self.bucket}' does not exist")
        if status == 400 and action == "HEAD":
            return SourceError(
                f"HEAD {where} answered 400 Bad Request, which is what S3 answers for "
                f"an object encrypted with a customer-provided key (SSE-C). {_SSE_C_HELP}"
            )
        if code == "PreconditionFailed" or status == 412:
            return SourceError(
                f"{action} {where}: the object changed while it was being downloaded; "
                "deploy again to fetch the new version",
                transient=False,
            )
        if is_transient(exc):
            return SourceError(f"{action} {where}: {exc}", transient=True)
        return SourceError(f"{action} {where}: {exc}")

    def resolve(self, previous_token: Optional[str] = None) -> SourceInfo:
        try:
            head = self._client().head_object(Bucket=self.bucket, Key=self.key)
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified by _error
            raise self._error(exc, "HEAD") from None
        if head.get("SSECustomerAlgorithm"):
            raise SourceError(
                f"s3://{self.bucket}/{self.key} is encrypted with SSE-C. {_SSE_C_HELP}"
            )
        etag = str(head.get("ETag", "")).strip('"')
        version = head.get("VersionId")
        version = version if version and version != "null" else None
        token = f"s3:{self.bucket}/{self.key}:" + (
            f"version={version}" if version else f"etag={etag}"
        )
        sse = head.get("ServerSideEncryption")
        # A single-part upload's ETag is the MD5 of the bytes, except under SSE-KMS.
        md5 = etag if (len(etag) == 32 and "-" not in etag and sse in (None, "AES256")) else None
        details = {"etag": etag, "version_id": version, "encryption": sse}
        return SourceInfo(
            self.uri,
            f"s3://{self.bucket}/{self.key}",
            int(head["ContentLength"]),
            token,
            md5=md5,
            details=details,
        )

    def stream(
        self, info: SourceInfo, offset: int = 0, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if info.details.get("version_id"):
            kwargs["VersionId"] = info.details["version_id"]
        elif info.details.get("etag"):
            kwargs["IfMatch"] = '"' + str(info.details["etag"]) + '"'
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            resp = self._client().get_object(**kwargs)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "GET") from None
        body = resp["Body"]
        skip = 0
        if offset and not str(resp.get("ContentRange", "")).startswith(f"bytes {offset}-"):
            skip = offset  # the server ignored Range: drop what we already have
        try:
            for chunk in body.iter_chunks(chunk_size):
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                yield chunk
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "GET") from None
        finally:
            body.close()
