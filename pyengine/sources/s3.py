"""``s3://bucket/key`` sources through boto3 (any S3-compatible endpoint)."""

from __future__ import annotations

import re
from typing import Any, Iterator, Optional

from pyengine.common.aws import (
    AwsSettings,
    client,
    error_code,
    error_message,
    get_object_policy,
    is_transient,
)
from pyengine.sources.base import Scheme, Source, SourceError, SourceInfo

_SSE_C_HELP = (
    "pyengine does not fetch objects encrypted with a customer-provided key (SSE-C), because the "
    "key would have to be stored on every device; re-upload the package with SSE-S3 (AES256) or "
    "SSE-KMS encryption, which work"
)


_BAD_REQUEST_HELP = (
    "Check the S3 endpoint and region (the group's s3.endpoint_url and s3.region, or "
    "AWS_ENDPOINT_URL_S3 and AWS_REGION): a request signed for another region is answered 400"
)


def is_sse_c_answer(code: str, message: str) -> bool:
    """True when a 400's error body is what S3 (or a compatible store) answers for an object
    encrypted with a customer-provided key (SSE-C) requested without that key: AWS answers
    ``InvalidRequest``, "The object was stored using a form of Server Side Encryption. The
    correct parameters must be provided to retrieve the object."; Ceph and MinIO name the
    missing ``...-Customer-Key`` header."""
    text = message.lower()
    return (code == "InvalidRequest" and "server side encryption" in text) or (
        "customer-key" in text or "customer key" in text
    )


BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def bucket_problem(bucket: str) -> Optional[str]:
    """Why pyengine refuses the S3 bucket name ``bucket``, or None: a period breaks
    virtual-hosted-style HTTPS (the certificate does not match), and a name must be a valid
    bucket name. Applied to s3:// sources and to SageMaker artifact locations."""
    if "." in bucket:
        return (
            f"bucket {bucket!r} contains a period; virtual-hosted-style HTTPS breaks on such "
            "names (the certificate does not match), so use a bucket without periods"
        )
    if not BUCKET_RE.match(bucket):
        return (
            f"bucket {bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits "
            "and hyphens, starting and ending with a letter or digit)"
        )
    return None


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
        #: The KMS key HEAD reported (SSE-KMS), for the advice when a GET is denied.
        self.kms_key_id: Optional[str] = None

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
            kms = (
                f" The object is encrypted with the KMS key {self.kms_key_id} (SSE-KMS): the "
                "identity also needs kms:Decrypt on that key; name it in the resource's "
                "model.kms_key_arn and `pyengine policy` grants it."
                if self.kms_key_id and action == "GET"
                else ""
            )
            return SourceError(
                f"{action} {where}: access denied ({code or status}) to bucket '{self.bucket}'. "
                f"Grant the identity that deploys s3:GetObject on it, for example with this inline "
                f"policy:\n{get_object_policy([self.bucket])}{kms}"
            )
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return SourceError(
                f"{action} {where}: no such object (bucket '{self.bucket}', key "
                f"'{self.key}'); check the source URI"
            )
        if code == "NoSuchBucket":
            return SourceError(f"{action} {where}: bucket '{self.bucket}' does not exist")
        if status == 400 and action == "HEAD":
            return self._explain_head_400()
        if status == 400:
            message = error_message(exc)
            if is_sse_c_answer(code, message):
                return SourceError(
                    f"{action} {where}: S3 answers that the object is encrypted with a "
                    f"customer-provided key (SSE-C): {code}: {message} {_SSE_C_HELP}"
                )
            return SourceError(
                f"{action} {where}: 400 Bad Request ({code}: {message or 'no message'}); "
                f"not an SSE-C object. {_BAD_REQUEST_HELP}"
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

    def _explain_head_400(self) -> SourceError:
        """A HEAD answer has no body, so its 400 does not say why: GET the first byte, whose
        error body does (S3 answers InvalidRequest naming Server Side Encryption for an SSE-C
        object requested without its key)."""
        where = f"s3://{self.bucket}/{self.key}"
        try:
            self._client().get_object(Bucket=self.bucket, Key=self.key, Range="bytes=0-0")[
                "Body"
            ].close()
        except Exception as exc:  # noqa: BLE001 - classified below
            if error_code(exc)[1] in (400, 403, 404):
                return self._error(exc, "GET")
            return SourceError(
                f"HEAD {where} answered 400 Bad Request, and a GET of its first byte failed "
                f"too ({exc}). {_BAD_REQUEST_HELP}",
                transient=is_transient(exc),
            )
        return SourceError(
            f"HEAD {where} answered 400 Bad Request, though a GET of the object works: not an "
            f"SSE-C object (S3 refuses both for those). {_BAD_REQUEST_HELP}"
        )

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
        self.kms_key_id = head.get("SSEKMSKeyId") if sse == "aws:kms" else None
        # A single-part upload's ETag is the MD5 of the bytes, except under SSE-KMS.
        md5 = etag if (len(etag) == 32 and "-" not in etag and sse in (None, "AES256")) else None
        details = {"etag": etag, "version_id": version, "encryption": sse,
                   "kms_key_id": self.kms_key_id}
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
        self.kms_key_id = info.details.get("kms_key_id") or self.kms_key_id
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


def check(uri: str) -> Optional[str]:
    """What is wrong with the ``s3://`` URI ``uri`` as written, or None."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        return "must be s3://BUCKET/KEY"
    return bucket_problem(bucket)


SCHEME = Scheme("s3://", lambda uri, s3, sagemaker: S3Source(uri, s3), check)
