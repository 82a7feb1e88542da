"""The IAM policy a group needs to deploy."""

from __future__ import annotations

import json

from pyengine.deploy.group import Group
from pyengine.sources.sagemaker import training_job_name


def group_buckets(group: Group) -> list[str]:
    """The S3 buckets the group's s3:// sources read from (sorted, unique)."""
    out = set()
    for r in group.resources:
        if r.model and r.model.source.startswith("s3://"):
            out.add(r.model.source[5:].split("/", 1)[0])
    return sorted(out)


def group_policy(group: Group) -> dict:
    """The inline IAM policy granting s3:GetObject on every bucket the group uses,
    sagemaker:DescribeTrainingJob on its training jobs (whose artifact buckets are learnt at
    deploy time) and kms:Decrypt on the KMS keys its sources name (``kms_key_arn``)."""
    statements: list[dict] = []
    buckets = group_buckets(group)
    if buckets:
        statements.append(
            {
                "Sid": "PyengineDeployGetObject",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{b}/*" for b in buckets],
            }
        )
    jobs = sorted(
        {
            training_job_name(r.model.source)
            for r in group.resources
            if r.model and r.model.source.startswith("sagemaker://")
        }
    )
    if jobs:
        statements.append(
            {
                "Sid": "PyengineDeployDescribeTrainingJob",
                "Effect": "Allow",
                "Action": ["sagemaker:DescribeTrainingJob"],
                "Resource": [f"arn:aws:sagemaker:*:*:training-job/{j}" for j in jobs],
            }
        )
    keys = sorted({r.model.kms_key_arn for r in group.resources if r.model and r.model.kms_key_arn})
    if keys:
        # SSE-KMS objects: S3 decrypts with the caller's permission on the key.
        statements.append(
            {
                "Sid": "PyengineDeployKmsDecrypt",
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": keys,
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def group_policy_json(group: Group) -> str:
    """:func:`group_policy` as indented JSON text."""
    return json.dumps(group_policy(group), indent=2)
