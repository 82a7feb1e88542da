"""Group file validation: every problem names the field path, the bad value and the rule."""

from __future__ import annotations

import json
import os

import pytest
from deploy_fixtures import run_cli

from pyengine.deploy import GroupError, load_group, validate_group


def _fn_dir(tmp_path) -> str:
    d = tmp_path / "functions" / "classify"
    d.mkdir(parents=True, exist_ok=True)
    (d / "classify.py").write_text("def function_handler(event, context):\n    return event\n")
    return str(d)


def _base(tmp_path) -> dict:
    _fn_dir(tmp_path)
    return {
        "name": "line-1",
        "resources": [
            {
                "id": "digits",
                "name": "digits",
                "model": {
                    "source": "s3://greengrass-models/digits.tar.gz",
                    "destination": "/srv/models/digits",
                    "owner": {"group": 0, "permission": "rw"},
                    "sha256": None,
                },
            },
            {"id": "gpu", "device": {"path": "/dev/null"}},
        ],
        "functions": [
            {
                "name": "classify",
                "handler": "classify.function_handler",
                "code": "./functions/classify",
                "pinned": True,
                "timeout_s": 3,
                "memory_mb": 512,
                "environment": {"MODE": "fast", "DEBUG": False},
                "resources": [
                    {"id": "digits", "permission": "rw"},
                    {"id": "gpu", "permission": "rw"},
                ],
            }
        ],
    }


def _problems(tmp_path, data: dict) -> list[str]:
    with pytest.raises(GroupError) as ei:
        validate_group(data, str(tmp_path / "group.yaml"))
    return ei.value.problems


def test_valid_group_yaml_and_json(tmp_path):
    import yaml

    data = _base(tmp_path)
    (tmp_path / "group.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "group.json").write_text(json.dumps(data))
    for name in ("group.yaml", "group.json"):
        g = load_group(str(tmp_path / name))
        assert g.name == "line-1"
        assert [r.id for r in g.resources] == ["digits", "gpu"]
        assert g.resource("digits").model.owner.permission == "rw"
        f = g.functions[0]
        assert f.code == str(tmp_path / "functions" / "classify")
        assert f.environment == {"MODE": "fast", "DEBUG": "false"}
        assert f.pinned and f.memory_mb == 512


def test_relative_and_env_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMO_DIR", str(tmp_path / "demo"))
    data = _base(tmp_path)
    data["resources"][0]["model"]["source"] = "packages/digits.tgz"
    data["resources"][0]["model"]["destination"] = "${DEMO_DIR}/models/digits"
    g = validate_group(data, str(tmp_path / "group.yaml"))
    m = g.resource("digits").model
    assert m.source == "file://" + str(tmp_path / "packages" / "digits.tgz")
    assert m.destination == str(tmp_path / "demo" / "models" / "digits")
    data["resources"][0]["model"]["destination"] = "${NOT_SET_ANYWHERE}/x"
    assert any("NOT_SET_ANYWHERE" in p and "not set" in p for p in _problems(tmp_path, data))


@pytest.mark.parametrize(
    "path,value,fragment",
    [
        (("resources", 0, "id"), "bad id!", "resources[0].id: 'bad id!' must be 1-128 characters"),
        (("resources", 0, "id"), "x" * 129, "must be 1-128 characters"),
        (("resources", 0, "name"), "sp ace", "resources[0].name: 'sp ace' must be 1-128"),
        (("name",), "", "name: '' must be 1-128"),
        (("resources", 0, "model", "destination"), "models/digits", "is not an absolute path"),
        (
            ("resources", 0, "model", "destination"),
            "/etc/models",
            "inside /etc, a system directory that needs root",
        ),
        (("resources", 0, "model", "destination"), "/usr/local/models", "inside /usr"),
        (("resources", 0, "model", "destination"), "/lib64/x", "inside /lib64"),
        (("resources", 0, "model", "destination"), "/", "is a top-level directory"),
        (("resources", 0, "model", "destination"), "/srv/../etc/x", "contains '..'"),
        (
            ("resources", 0, "model", "source"),
            "s3://my.bucket/m.tar.gz",
            "bucket 'my.bucket' contains a period",
        ),
        (
            ("resources", 0, "model", "source"),
            "s3://Bad_Bucket/m.tar.gz",
            "not a valid S3 bucket name",
        ),
        (
            ("resources", 0, "model", "source"),
            "s3://bucket-ok/m.rar",
            "packages must be .tar.gz, .tgz or .zip",
        ),
        (
            ("resources", 0, "model", "source"),
            "/abs/model.tar.bz2",
            "packages must be .tar.gz, .tgz or .zip",
        ),
        (("resources", 0, "model", "source"), "ftp://host/m.tar.gz", "unsupported source"),
        (
            ("resources", 0, "model", "source"),
            "sagemaker://bad_job_name",
            "not a SageMaker training job name",
        ),
        (("resources", 0, "model", "sha256"), "abc", "must be 64 hexadecimal digits"),
        (("resources", 0, "model", "owner", "permission"), "rwx", "'rwx' is not a permission"),
        (
            ("resources", 0, "model", "owner", "group"),
            "no-such-group-here",
            "does not exist on this machine",
        ),
        (("resources", 0, "model", "max_files"), 0, "must be an integer from 1"),
        (
            ("resources", 1, "device", "path"),
            "/etc/passwd",
            "character or block devices under /dev",
        ),
        (("resources", 1, "device", "path"), "/dev/../etc/passwd", "under /dev"),
        (("functions", 0, "handler"), "no_dot", "must be module.function"),
        (("functions", 0, "handler"), "missing.handler", "no missing.py in"),
        (("functions", 0, "code"), "./nowhere", "is not a directory"),
        (("functions", 0, "timeout_s"), -1, "must be a number from"),
        (("functions", 0, "memory_mb"), 1.5, "must be an integer"),
        (("functions", 0, "pinned"), "yes", "must be true or false"),
        (("functions", 0, "resources", 0, "id"), "nope", "'nope' is not the id of any resource"),
        (("functions", 0, "resources", 0, "permission"), "admin", "is not a permission"),
        (("functions", 0, "run_as"), {"uid": -1, "gid": 1000}, "must be a numeric uid"),
        (("functions", 0, "run_as"), {"uid": "pi", "gid": 1000}, "must be a numeric uid"),
        (("functions", 0, "run_as"), {"uid": 1000, "gid": True}, "must be a numeric gid"),
        (("functions", 0, "run_as"), {"uid": 0, "gid": 1000}, "functions.allow_root: true"),
        (("functions", 0, "run_as"), {"uid": 1000, "gid": 0}, "functions.allow_root: true"),
        (("functions", 0, "run_as"), 1000, "expected a mapping with uid, gid"),
        (("functions", 0, "concurrency"), 0, "must be an integer from 1 to 256"),
        (("functions", 0, "concurrency"), 2.5, "must be an integer from 1 to 256"),
        (("functions", 0, "idle_timeout_s"), 0, "must be a number from 0.1 to 86400"),
        (("functions", 0, "idle_timeout_s"), 30, "pinned function's workers never stop"),
    ],
)
def test_field_errors(tmp_path, path, value, fragment):
    data = _base(tmp_path)
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    problems = _problems(tmp_path, data)
    where = ".".join(f"[{k}]" if isinstance(k, int) else k for k in path).replace(".[", "[")
    assert any(p.startswith(where) and fragment in p for p in problems), (where, problems)
    shown = [repr(v) for v in value.values()] if isinstance(value, dict) else [repr(value)]
    assert any(any(v in p for v in shown) or str(value) in p for p in problems), problems


def test_permission_above_owner_setting(tmp_path):
    data = _base(tmp_path)
    data["resources"][0]["model"]["owner"]["permission"] = "ro"
    problems = _problems(tmp_path, data)
    assert problems == [
        "functions[0].resources[0].permission: 'rw' is more than resource 'digits' "
        "allows: its owner setting is ro; set model.owner.permission to rw or grant ro"
    ]
    del data["resources"][0]["model"]["owner"]
    assert "absent (read-only)" in _problems(tmp_path, data)[0]


def test_overlapping_destinations_and_duplicates(tmp_path):
    data = _base(tmp_path)
    data["resources"].append(
        {
            "id": "digits",
            "model": {"source": "s3://bucket-ok/a.zip", "destination": "/srv/models/digits/inner"},
        }
    )
    problems = _problems(tmp_path, data)
    assert any(
        p.startswith("resources[2].id: 'digits' is already the id of resources[0]")
        for p in problems
    )
    assert any(
        p.startswith(
            "resources[2].model.destination: '/srv/models/digits/inner' overlaps resources[0]"
        )
        for p in problems
    ), problems


def test_unknown_fields_and_missing(tmp_path):
    data = _base(tmp_path)
    data["resources"][0]["model"]["sourse"] = "typo"
    data["extra"] = 1
    del data["resources"][0]["model"]["destination"]
    problems = _problems(tmp_path, data)
    assert (
        "resources[0].model.sourse: unknown field 'sourse'; expected one of source, destination, "
        "owner, sha256, max_unpacked_mb, max_files, kms_key_arn" in problems
    )
    assert (
        "extra: unknown field 'extra'; expected one of name, resources, functions, "
        "subscriptions, s3, sagemaker"
        in problems
    )
    assert "resources[0].model.destination: required field is missing" in problems
    data = _base(tmp_path)
    data["resources"][1]["model"] = {"source": "s3://bucket-ok/a.zip", "destination": "/srv/a"}
    assert "resources[1]: a resource needs exactly one of 'model', 'device' or 'volume' (it " \
        "has model, device)" in _problems(tmp_path, data)


def test_cli_reports_all_problems(tmp_path):
    (tmp_path / "g.yaml").write_text(
        "name: bad name\nresources:\n  - id: a\n    model:\n"
        "      source: s3://a.b.c/x.tar.gz\n      destination: /etc/x\n"
    )
    r = run_cli("deploy", str(tmp_path / "g.yaml"), "--root", str(tmp_path / "root"))
    assert r.returncode == 2
    assert "3 problem(s)" in r.stderr, r.stderr
    for frag in ("name: 'bad name'", "resources[0].model.source", "resources[0].model.destination"):
        assert frag in r.stderr
    assert not os.path.exists(tmp_path / "root" / "state.db")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    r = run_cli("deploy", str(tmp_path / "broken.yaml"), "--root", str(tmp_path / "root"))
    assert r.returncode == 2 and "not valid YAML" in r.stderr


def test_run_as_concurrency_and_idle_timeout_are_carried(tmp_path, monkeypatch):
    data = _base(tmp_path)
    data["functions"][0].update(pinned=False, run_as={"uid": 1234, "gid": 2345}, concurrency=3,
                                idle_timeout_s=2.5)
    f = validate_group(data, str(tmp_path / "group.yaml")).functions[0]
    assert (f.run_as.uid, f.run_as.gid, f.concurrency, f.idle_timeout_s) == (1234, 2345, 3, 2.5)
    from pyengine.deploy.group import Group

    again = Group.from_dict(json.loads(json.dumps(validate_group(
        data, str(tmp_path / "group.yaml")).to_dict()))).functions[0]
    assert again == f  # the state database's round trip keeps them
    data["functions"][0]["run_as"] = {"uid": 1234}
    assert _problems(tmp_path, data) == ["functions[0].run_as.gid: required field is missing"]
    # Root only where the core's configuration (named at deploy time) allows it.
    data["functions"][0]["run_as"] = {"uid": 0, "gid": 0}
    assert len(_problems(tmp_path, data)) == 2
    cfg = tmp_path / "core.json"
    cfg.write_text(json.dumps({"functions": {"allow_root": True}}))
    monkeypatch.setenv("PYENGINE_CORE_CONFIG", str(cfg))
    assert validate_group(data, str(tmp_path / "group.yaml")).functions[0].run_as.uid == 0
    cfg.write_text(json.dumps({"functions": {"allow_root": "yes"}}))
    assert len(_problems(tmp_path, data)) == 2  # an invalid configuration allows nothing


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("captures", "is not an absolute path"),
        ("/etc/captures", "inside /etc, a system directory"),
        ("/tmp", "a top-level directory"),
        ("/root/captures", "root's home directory"),
        ("/srv/../etc", "contains '..'"),
        (7, "expected a non-empty string"),
    ],
)
def test_volume_path_errors(tmp_path, value, fragment):
    data = _base(tmp_path)
    data["resources"].append({"id": "captures", "volume": {"path": value}})
    problems = _problems(tmp_path, data)
    assert len(problems) == 1 and problems[0].startswith("resources[2].volume.path: ") \
        and fragment in problems[0] and repr(value) in problems[0], problems


def test_volume_through_a_link_into_a_system_dir(tmp_path):
    link = tmp_path / "captures"
    link.symlink_to("/etc")
    data = _base(tmp_path)
    data["resources"].append({"id": "captures", "volume": {"path": str(link)}})
    data["functions"][0]["resources"].append({"id": "captures", "permission": "rw"})
    problems = _problems(tmp_path, data)
    assert problems == [f"resources[2].volume.path: {str(link)!r} is, through symbolic links, "
                        "/etc, which is inside /etc, a system directory that needs root; choose "
                        "a directory such as /srv/models/NAME"]
    link.unlink()
    link.mkdir()
    g = validate_group(data, str(tmp_path / "group.yaml"))
    assert g.resources[2].kind == "volume" and g.functions[0].resources[2].permission == "rw"


def test_gpu_granted_ro_is_refused(tmp_path):
    data = _base(tmp_path)
    data["resources"][1]["device"]["path"] = "/dev/nvidia0"
    data["functions"][0]["resources"][1]["permission"] = "ro"
    assert _problems(tmp_path, data) == [
        "functions[0].resources[1].permission: 'ro' on GPU /dev/nvidia0: the CUDA driver opens "
        "the GPU's device files read-write, which a ro device grant refuses; grant rw"]


def test_volume_overlapping_a_model_is_refused(tmp_path):
    data = _base(tmp_path)
    data["resources"].append({"id": "captures", "volume": {"path": "/srv/models"}})
    assert _problems(tmp_path, data) == [
        "resources[2].volume.path: '/srv/models' overlaps the model destination of resources[0] "
        "('/srv/models/digits'): a function writing the volume would change the installed model; "
        "keep volumes and models apart"]
