"""Deploying from a real S3 API server on loopback (moto's server mode over HTTP): S3 and
SageMaker sources, change detection, resume after a cut connection, digest mismatch, SSE-C (and
other 400) and AccessDenied messages, SSE-S3 and SSE-KMS objects, bucket names, and
`pyengine policy`."""

from __future__ import annotations

import json
import os

import pytest
from deploy_fixtures import (
    SSE_C_400,
    CutProxy,
    check_complete,
    run_cli,
    write_group,
    write_package,
)

from pyengine import deploy as dp


def _group(tmp_path, endpoint: str, resources: list[dict], name: str = "line-1") -> str:
    return write_group(
        str(tmp_path / "group.json"),
        {
            "name": name,
            "s3": {"endpoint_url": endpoint, "region": "us-east-1"},
            "sagemaker": {"endpoint_url": endpoint, "region": "us-east-1"},
            "resources": resources,
        },
    )


def _model(rid: str, source: str, dest: str, **extra: object) -> dict:
    return {"id": rid, "name": rid, "model": {"source": source, "destination": dest, **extra}}


def test_s3_deploy_then_unchanged_then_changed(tmp_path, s3, bucket, moto_endpoint):
    pkg = write_package(
        str(tmp_path / "p1.tar.gz"), {"weights.bin": os.urandom(300_000), "a.txt": b"v1"}
    )
    s3.upload_file(pkg, bucket, "digits.tar.gz")
    dest = str(tmp_path / "models" / "digits")
    group = _group(
        tmp_path, moto_endpoint, [_model("digits", f"s3://{bucket}/digits.tar.gz", dest)]
    )
    root = str(tmp_path / "root")

    d1 = dp.deploy(group, root)
    assert d1.status == "Success", d1
    assert [(i.key, i.outcome) for i in d1.items] == [("digits", "installed")]
    assert d1.items[0].bytes == os.path.getsize(pkg)
    assert check_complete(dest)["a.txt"]
    assert os.path.islink(dest)

    d2 = dp.deploy(group, root)
    assert d2.status == "Success"
    assert [(i.key, i.outcome, i.bytes) for i in d2.items] == [("digits", "unchanged", 0)]
    assert d2.items[0].version == d1.items[0].version

    write_package(str(tmp_path / "p2.tar.gz"), {"weights.bin": os.urandom(1000), "a.txt": b"v2"})
    s3.upload_file(str(tmp_path / "p2.tar.gz"), bucket, "digits.tar.gz")
    d3 = dp.deploy(group, root)
    assert d3.status == "Success"
    assert d3.items[0].outcome == "installed"
    with open(os.path.join(dest, "a.txt")) as f:
        assert f.read() == "v2"
    cur = dp.current(root)
    assert cur is not None and cur.resource_path("digits") == dest
    assert cur.resources["digits"].version == d3.items[0].version


def test_versioned_bucket_uses_version_id(tmp_path, s3, bucket, moto_endpoint):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    pkg = write_package(str(tmp_path / "p.zip"), {"m.bin": b"1" * 1000})
    s3.upload_file(pkg, bucket, "m.zip")
    dest = str(tmp_path / "m")
    group = _group(tmp_path, moto_endpoint, [_model("m", f"s3://{bucket}/m.zip", dest)])
    d = dp.deploy(group, str(tmp_path / "root"))
    assert d.status == "Success", [i.message for i in d.items]
    vid = s3.head_object(Bucket=bucket, Key="m.zip")["VersionId"]
    assert d.items[0].token.endswith(f"version={vid}")
    assert dp.deploy(group, str(tmp_path / "root")).items[0].outcome == "unchanged"


def test_sagemaker_training_job_artifact(tmp_path, s3, bucket, moto_endpoint):
    import boto3

    sm = boto3.client("sagemaker", endpoint_url=moto_endpoint, region_name="us-east-1")
    job = f"job-{bucket[-8:]}"
    sm.create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/sagemaker",
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )
    desc = sm.describe_training_job(TrainingJobName=job)
    assert desc["TrainingJobStatus"] == "Completed"
    artifact = desc["ModelArtifacts"]["S3ModelArtifacts"]
    key = artifact.split("/", 3)[3]
    pkg = write_package(str(tmp_path / "model.tar.gz"), {"model.bin": os.urandom(5000)})
    s3.upload_file(pkg, bucket, key)
    dest_a, dest_b = str(tmp_path / "by-name"), str(tmp_path / "by-arn")
    group = _group(
        tmp_path,
        moto_endpoint,
        [
            _model("by-name", f"sagemaker://{job}", dest_a),
            _model("by-arn", f"sagemaker://{desc['TrainingJobArn']}", dest_b),
        ],
    )
    d = dp.deploy(group, str(tmp_path / "root"))
    assert d.status == "Success", [i.message for i in d.items]
    check_complete(dest_a)
    check_complete(dest_b)
    assert artifact in d.items[0].token
    assert [i.outcome for i in dp.deploy(group, str(tmp_path / "root")).items] == ["unchanged"] * 2

    # A job that is not Completed is refused. moto's API only creates Completed jobs, so the test
    # sets the status in the (in-process) server's state; the deploy still asks it over HTTP.
    from moto.sagemaker.models import sagemaker_backends

    fake = sagemaker_backends["123456789012"]["us-east-1"].training_jobs[job]
    fake.training_job_status, fake.failure_reason = "Failed", "AlgorithmError: out of memory"
    try:
        d = dp.deploy(group, str(tmp_path / "root"))
    finally:
        fake.training_job_status = "Completed"
        del fake.failure_reason
    assert d.status == "Failure"
    assert f"training job '{job}' is Failed (AlgorithmError: out of memory); only Completed" in (
        d.items[0].message
    ), d.items[0].message
    check_complete(dest_a)

    missing = _group(tmp_path, moto_endpoint, [_model("x", "sagemaker://no-such-job", dest_a)])
    d = dp.deploy(missing, str(tmp_path / "root"))
    assert d.status == "Failure"
    assert "training job 'no-such-job' not found" in d.items[0].message
    check_complete(dest_a)  # the previous version is still in place


def test_resume_after_connection_cut_mid_body(tmp_path, s3, bucket, moto_endpoint):
    body = os.urandom(3_000_000)
    pkg = write_package(str(tmp_path / "big.tar.gz"), {"w.bin": body})
    size = os.path.getsize(pkg)
    s3.upload_file(pkg, bucket, "big.tar.gz")
    proxy = CutProxy(moto_endpoint, cut_after=700_000, cuts=2)
    try:
        dest = str(tmp_path / "big")
        group = _group(tmp_path, proxy.url, [_model("big", f"s3://{bucket}/big.tar.gz", dest)])
        d = dp.deploy(group, str(tmp_path / "root"), backoff_s=0.01)
        assert d.status == "Success", d.items[0].message
        check_complete(dest)
        gets = [r for r in proxy.requests if r[0] == "GET"]
        ranges = [r[2] for r in gets if r[2]]
        assert len(gets) == 3, proxy.requests
        # the 2nd and 3rd requests resumed from where the cut connections stopped
        assert len(ranges) == 2 and all(
            r.startswith("bytes=") and not r.startswith("bytes=0-") for r in ranges
        ), ranges
        starts = [int(r[6:].split("-")[0]) for r in ranges]
        assert 0 < starts[0] < starts[1] < size
        assert d.items[0].attempts == 3
        # resuming transferred about the package once, not three times
        assert proxy.bytes_down < size * 1.5
    finally:
        proxy.close()


def test_digest_mismatch_is_retried_then_fails_cleanly(tmp_path, s3, bucket, moto_endpoint):
    good = write_package(str(tmp_path / "good.tar.gz"), {"x.bin": b"good" * 100})
    s3.upload_file(good, bucket, "m.tar.gz")
    dest = str(tmp_path / "m")
    root = str(tmp_path / "root")
    group = _group(tmp_path, moto_endpoint, [_model("m", f"s3://{bucket}/m.tar.gz", dest)])
    assert dp.deploy(group, root).status == "Success"
    before = check_complete(dest)

    other = write_package(str(tmp_path / "new.tar.gz"), {"x.bin": b"new" * 100})
    s3.upload_file(other, bucket, "m.tar.gz")
    proxy = CutProxy(moto_endpoint)
    try:
        bad = _group(
            tmp_path, proxy.url, [_model("m", f"s3://{bucket}/m.tar.gz", dest, sha256="0" * 64)]
        )
        d = dp.deploy(bad, root, retries=2, backoff_s=0.01)
        assert d.status == "Failure"
        item = d.items[0]
        assert item.outcome == "failed"
        assert "sha256 mismatch" in item.message and "after 3 attempts" in item.message
        assert "expected " + "0" * 64 in item.message
        assert len([r for r in proxy.requests if r[0] == "GET"]) == 3
    finally:
        proxy.close()
    assert check_complete(dest) == before
    assert os.listdir(os.path.join(root, "downloads")) == []
    store = os.path.join(str(tmp_path), ".m.pyengine")
    assert not [n for n in os.listdir(store) if n.startswith("staging")]


def test_etag_md5_mismatch_detected(tmp_path, s3, bucket, moto_endpoint):
    """A single-part object's ETag is its MD5; bytes that do not hash to it are refused."""
    from pyengine.deploy.download import fetch
    from pyengine.sources import AwsSettings, open_source
    from pyengine.sources.base import SourceInfo

    s3.put_object(Bucket=bucket, Key="e.tar.gz", Body=b"abc" * 1000)
    src = open_source(f"s3://{bucket}/e.tar.gz", AwsSettings(moto_endpoint, "us-east-1"))
    info = src.resolve()
    assert info.md5 is not None and len(info.md5) == 32
    lying = SourceInfo(
        info.uri, info.location, info.size, info.token, md5="f" * 32, details=info.details
    )
    with pytest.raises(dp.DeployError, match="after 2 attempts: MD5 mismatch"):
        fetch(src, lying, str(tmp_path / "e.part"), attempts=2, backoff_s=0.0)
    assert fetch(src, info, str(tmp_path / "e.part")).size == 3000


def test_sse_c_refused_with_advice(tmp_path, s3, bucket, moto_endpoint):
    """S3 answers HEAD of an SSE-C object without its key with a bare 400, and GET with
    InvalidRequest naming Server Side Encryption; the deploy asks GET why and says SSE-C."""
    write_package(str(tmp_path / "p.tar.gz"), {"a": b"a"})
    s3.upload_file(str(tmp_path / "p.tar.gz"), bucket, "secret-ssec.tar.gz")
    proxy = CutProxy(moto_endpoint, errors_400={"-ssec": SSE_C_400})
    try:
        group = _group(
            tmp_path,
            proxy.url,
            [_model("s", f"s3://{bucket}/secret-ssec.tar.gz", str(tmp_path / "s"))],
        )
        d = dp.deploy(group, str(tmp_path / "root"))
    finally:
        proxy.close()
    msg = d.items[0].message
    assert d.status == "Failure"
    assert "encrypted with a customer-provided key (SSE-C): InvalidRequest: The object was " \
        "stored using a form of Server Side Encryption" in msg, msg
    assert "SSE-S3" in msg and "SSE-KMS" in msg, msg
    assert ("GET", f"/{bucket}/secret-ssec.tar.gz", "bytes=0-0") in proxy.requests


def test_another_400_is_not_called_sse_c(tmp_path, s3, bucket, moto_endpoint):
    write_package(str(tmp_path / "p.tar.gz"), {"a": b"a"})
    s3.upload_file(str(tmp_path / "p.tar.gz"), bucket, "elsewhere.tar.gz")
    wrong_region = ("AuthorizationHeaderMalformed", "The authorization header is malformed; "
                    "the region 'us-east-1' is wrong; expecting 'eu-west-1'")
    proxy = CutProxy(moto_endpoint, errors_400={"/elsewhere": wrong_region})
    try:
        group = _group(
            tmp_path, proxy.url,
            [_model("s", f"s3://{bucket}/elsewhere.tar.gz", str(tmp_path / "s"))],
        )
        d = dp.deploy(group, str(tmp_path / "root"))
    finally:
        proxy.close()
    msg = d.items[0].message
    assert d.status == "Failure"
    assert "400 Bad Request (AuthorizationHeaderMalformed: The authorization header is " \
        "malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'); not an SSE-C " \
        "object" in msg, msg
    assert "s3.region" in msg and "customer-provided" not in msg, msg


def test_head_400_with_a_working_get_is_not_called_sse_c(tmp_path, s3, bucket, moto_endpoint):
    write_package(str(tmp_path / "p.tar.gz"), {"a": b"a"})
    s3.upload_file(str(tmp_path / "p.tar.gz"), bucket, "odd-head.tar.gz")
    proxy = CutProxy(moto_endpoint, bad_request_heads=("/odd-head",))
    try:
        group = _group(tmp_path, proxy.url,
                       [_model("s", f"s3://{bucket}/odd-head.tar.gz", str(tmp_path / "s"))])
        d = dp.deploy(group, str(tmp_path / "root"))
    finally:
        proxy.close()
    msg = d.items[0].message
    assert d.status == "Failure"
    assert "answered 400 Bad Request, though a GET of the object works: not an SSE-C object" \
        in msg, msg


def test_sse_s3_and_sse_kms_objects_deploy(tmp_path, s3, bucket, moto_endpoint):
    key_arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    for name, extra in (("sse-s3", {"ServerSideEncryption": "AES256"}),
                        ("sse-kms", {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_arn})):
        pkg = write_package(str(tmp_path / f"{name}.tar.gz"), {"w.bin": os.urandom(20_000)})
        with open(pkg, "rb") as f:
            s3.put_object(Bucket=bucket, Key=f"{name}.tar.gz", Body=f.read(), **extra)
        head = s3.head_object(Bucket=bucket, Key=f"{name}.tar.gz")
        assert head["ServerSideEncryption"] == extra["ServerSideEncryption"]
    group = _group(tmp_path, moto_endpoint, [
        _model("a", f"s3://{bucket}/sse-s3.tar.gz", str(tmp_path / "a")),
        _model("b", f"s3://{bucket}/sse-kms.tar.gz", str(tmp_path / "b"), kms_key_arn=key_arn),
    ])
    d = dp.deploy(group, str(tmp_path / "root"))
    assert d.status == "Success", [i.message for i in d.items]
    assert [i.outcome for i in d.items] == ["installed", "installed"]
    check_complete(str(tmp_path / "a"))
    check_complete(str(tmp_path / "b"))
    r = run_cli("policy", group)
    assert r.returncode == 0, r.stderr
    kms = [st for st in json.loads(r.stdout)["Statement"] if st["Action"] == ["kms:Decrypt"]]
    assert kms == [{"Sid": "PyengineDeployKmsDecrypt", "Effect": "Allow",
                    "Action": ["kms:Decrypt"], "Resource": [key_arn]}]


@pytest.mark.parametrize("value, says", [
    ("alias/models", "an alias does not work in an IAM policy's Resource"),
    ("arn:aws:kms:us-east-1:123456789012:alias/models", "an alias does not work"),
    ("arn:aws:kms:us-east-1:1234:key/abc", "must be a KMS key ARN"),
    (17, "must be a KMS key ARN"),
])
def test_kms_key_arn_checked(tmp_path, value, says):
    group = write_group(str(tmp_path / "g.json"), {"name": "g", "resources": [
        _model("a", "s3://bucket-one/a.tar.gz", "/srv/models/a", kms_key_arn=value)]})
    with pytest.raises(dp.GroupError) as info:
        dp.load_group(group)
    assert f"resources[0].model.kms_key_arn: {value!r}" in str(info.value)
    assert says in str(info.value)


def test_kms_key_arn_only_for_s3_sources(tmp_path):
    pkg = write_package(str(tmp_path / "p.tar.gz"), {"a": b"a"})
    arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    group = write_group(str(tmp_path / "g.json"), {"name": "g", "resources": [
        _model("a", pkg, "/srv/models/a", kms_key_arn=arn)]})
    with pytest.raises(dp.GroupError, match="only s3:// and sagemaker:// sources are encrypted"):
        dp.load_group(group)


def test_sagemaker_artifact_bucket_with_a_period_refused(tmp_path, s3, moto_endpoint):
    import boto3

    dotted = "models.example.com"
    s3.create_bucket(Bucket=dotted)
    sm = boto3.client("sagemaker", endpoint_url=moto_endpoint, region_name="us-east-1")
    job = "job-dotted-bucket"
    sm.create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/sagemaker",
        OutputDataConfig={"S3OutputPath": f"s3://{dotted}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )
    artifact = sm.describe_training_job(TrainingJobName=job)["ModelArtifacts"][
        "S3ModelArtifacts"]
    pkg = write_package(str(tmp_path / "model.tar.gz"), {"model.bin": b"x"})
    s3.upload_file(pkg, dotted, artifact.split("/", 3)[3])
    group = _group(tmp_path, moto_endpoint,
                   [_model("m", f"sagemaker://{job}", str(tmp_path / "m"))])
    d = dp.deploy(group, str(tmp_path / "root"))
    assert d.status == "Failure"
    msg = d.items[0].message
    assert f"the job's artifact {artifact} is in a bucket pyengine does not fetch from: bucket " \
        f"'{dotted}' contains a period" in msg, msg
    assert not os.path.lexists(tmp_path / "m")


def test_access_denied_names_bucket_and_policy(tmp_path, moto_auth_server):
    import boto3

    ep = moto_auth_server
    s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1")
    s3.create_bucket(Bucket="private-models")
    s3.put_object(Bucket="private-models", Key="m.tar.gz", Body=b"x")
    iam = boto3.client("iam", endpoint_url=ep, region_name="us-east-1")
    iam.create_user(UserName="edge")
    key = iam.create_access_key(UserName="edge")["AccessKey"]
    group = _group(tmp_path, ep, [_model("m", "s3://private-models/m.tar.gz", str(tmp_path / "m"))])
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=key["AccessKeyId"],
        AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"],
    )
    r = run_cli("deploy", group, "--root", str(tmp_path / "root"), env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "access denied" in r.stdout and "bucket 'private-models'" in r.stdout, r.stdout
    assert '"s3:GetObject"' in r.stdout and "arn:aws:s3:::private-models/*" in r.stdout
    assert "Failure" in r.stdout


def test_policy_command(tmp_path):
    group = write_group(
        str(tmp_path / "g.json"),
        {
            "name": "g",
            "resources": [
                _model("a", "s3://bucket-one/a.tar.gz", "/srv/models/a"),
                _model("b", "s3://bucket-two/b.zip", "/srv/models/b"),
                _model("c", "s3://bucket-one/c.tgz", "/srv/models/c"),
                _model("d", "sagemaker://my-job", "/srv/models/d"),
            ],
        },
    )
    r = run_cli("policy", group)
    assert r.returncode == 0, r.stderr
    policy = json.loads(r.stdout)
    s3_stmt = policy["Statement"][0]
    assert s3_stmt["Action"] == ["s3:GetObject"] and s3_stmt["Effect"] == "Allow"
    assert s3_stmt["Resource"] == ["arn:aws:s3:::bucket-one/*", "arn:aws:s3:::bucket-two/*"]
    assert policy["Statement"][1]["Action"] == ["sagemaker:DescribeTrainingJob"]
    assert "artifact bucket" in r.stderr


def test_missing_object_is_a_clear_failure(tmp_path, bucket, moto_endpoint):
    group = _group(
        tmp_path, moto_endpoint, [_model("m", f"s3://{bucket}/nope.tar.gz", str(tmp_path / "m"))]
    )
    d = dp.deploy(group, str(tmp_path / "root"))
    assert d.status == "Failure"
    assert "no such object" in d.items[0].message and bucket in d.items[0].message
    assert not os.path.exists(str(tmp_path / "m"))


def test_resume_from_partial_file_left_by_a_killed_deploy(tmp_path, s3, bucket, moto_endpoint):
    """A partial download on disk (a deploy killed mid-download) is re-hashed and continued with
    a range request."""
    import hashlib

    from pyengine.deploy.download import fetch
    from pyengine.sources import AwsSettings, open_source

    body = os.urandom(2_500_000)
    s3.put_object(Bucket=bucket, Key="r.tar.gz", Body=body)
    part = str(tmp_path / "r.part")
    with open(part, "wb") as f:
        f.write(body[:1_000_000])
    proxy = CutProxy(moto_endpoint)
    try:
        src = open_source(f"s3://{bucket}/r.tar.gz", AwsSettings(proxy.url, "us-east-1"))
        res = fetch(src, src.resolve(), part, sha256=hashlib.sha256(body).hexdigest())
    finally:
        proxy.close()
    assert res.resumed and res.downloaded == 1_500_000 and res.size == len(body)
    assert [r[2] for r in proxy.requests if r[0] == "GET"] == ["bytes=1000000-"]
    with open(part, "rb") as f:
        assert f.read() == body
