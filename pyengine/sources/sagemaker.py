"""``sagemaker://<training job name or ARN>`` sources: the model artifact of a Completed job."""

from __future__ import annotations

import re
from typing import Iterator, Optional

from pyengine.common.aws import AwsSettings, client, error_code, is_transient
from pyengine.sources.base import Scheme, Source, SourceError, SourceInfo
from pyengine.sources.s3 import S3Source, bucket_problem

_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]*:\d*:training-job/(?P<name>[^/]+)$")
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def training_job_name(uri: str) -> str:
    """The training job name in ``sagemaker://NAME`` or ``sagemaker://ARN``."""
    rest = uri[len("sagemaker://") :] if uri.startswith("sagemaker://") else uri
    m = _ARN.match(rest)
    name = m.group("name") if m else rest
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} is not a SageMaker training job name or training-job ARN "
            "(names are 1-63 characters of letters, digits and hyphens)"
        )
    return name


class SageMakerSource(Source):
    """A training job's ``ModelArtifacts.S3ModelArtifacts``; the job must be Completed."""

    def __init__(self, uri: str, sagemaker: AwsSettings, s3: AwsSettings) -> None:
        self.uri = uri
        self.job = training_job_name(uri)
        self.sagemaker = sagemaker
        self.s3 = s3
        self._artifact: Optional[S3Source] = None

    def describe(self) -> dict:
        """DescribeTrainingJob's answer."""
        try:
            return dict(
                client("sagemaker", self.sagemaker).describe_training_job(TrainingJobName=self.job)
            )
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001
            code, status = error_code(exc)
            if code == "ValidationException" or status == 404:
                raise SourceError(
                    f"{self.uri}: training job '{self.job}' not found ({exc})"
                ) from None
            if code == "AccessDeniedException" or status == 403:
                raise SourceError(
                    f"{self.uri}: access denied to DescribeTrainingJob on '{self.job}'; "
                    "grant sagemaker:DescribeTrainingJob on the job"
                ) from None
            raise SourceError(
                f"{self.uri}: DescribeTrainingJob failed: {exc}", transient=is_transient(exc)
            ) from None

    def resolve(self, previous_token: Optional[str] = None) -> SourceInfo:
        job = self.describe()
        status = job.get("TrainingJobStatus")
        if status != "Completed":
            why = f" ({job['FailureReason']})" if job.get("FailureReason") else ""
            raise SourceError(
                f"{self.uri}: training job '{self.job}' is {status}{why}; only Completed jobs "
                "have a "
                "model to deploy — wait for it to complete or name another job"
            )
        artifact = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if not artifact:
            raise SourceError(
                f"{self.uri}: training job '{self.job}' has no ModelArtifacts.S3ModelArtifacts"
            )
        if not artifact.endswith((".tar.gz", ".tgz", ".zip")):
            raise SourceError(
                f"{self.uri}: the job's artifact {artifact} is not a .tar.gz/.tgz or .zip package"
            )
        try:
            self._artifact = S3Source(artifact, self.s3)
        except ValueError as exc:
            raise SourceError(f"{self.uri}: bad artifact location: {exc}") from None
        problem = bucket_problem(self._artifact.bucket)
        if problem:
            raise SourceError(
                f"{self.uri}: the job's artifact {artifact} is in a bucket pyengine does not "
                f"fetch from: {problem} (train with an output path in such a bucket, or copy "
                "the artifact there and deploy it as an s3:// source)"
            )
        info = self._artifact.resolve()
        details = dict(
            info.details, training_job=self.job, training_job_status=status, artifact=artifact
        )
        return SourceInfo(
            self.uri,
            info.location,
            info.size,
            f"sagemaker:{self.job}:{artifact}:{info.token}",
            md5=info.md5,
            details=details,
        )

    def stream(
        self, info: SourceInfo, offset: int = 0, chunk_size: int = 1 << 20
    ) -> Iterator[bytes]:
        if self._artifact is None or self._artifact.uri != info.location:
            self._artifact = S3Source(info.location, self.s3)
        return self._artifact.stream(info, offset, chunk_size)


def check(uri: str) -> Optional[str]:
    """What is wrong with the ``sagemaker://`` URI ``uri`` as written, or None."""
    try:
        training_job_name(uri)
    except ValueError as exc:
        return str(exc)
    return None


#: The URI names a training job, not a file: its artifact's name is checked when resolved.
SCHEME = Scheme("sagemaker://", lambda uri, s3, sagemaker: SageMakerSource(uri, sagemaker, s3),
                check, names_package=False)
