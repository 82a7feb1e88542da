"""Hostile group files: size, aliases, nesting, duplicate keys, wrong types and bad environments
each end in a GroupError naming the place (or success), never another exception."""

from __future__ import annotations

import copy
import json
import math
import os
import resource
from typing import Any

import pytest
import yaml
from deploy_fixtures import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyengine.common.environment import TOTAL_MAX_BYTES, VALUE_MAX_BYTES
from pyengine.deploy import GroupError, load_group, validate_group
from pyengine.deploy.parse import MAX_DEPTH, MAX_YAML_NODES


def _valid(code_dir: str) -> dict:
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
                    "max_unpacked_mb": 64,
                    "max_files": 100,
                },
            },
            {"id": "gpu", "device": {"path": "/dev/null"}},
            {"id": "captures", "volume": {"path": "/srv/captures"}},
        ],
        "functions": [
            {
                "name": "classify",
                "handler": "classify.function_handler",
                "code": code_dir,
                "pinned": True,
                "timeout_s": 3,
                "memory_mb": 512,
                "environment": {"MODE": "fast", "DEBUG": False, "N": 3},
                "resources": [
                    {"id": "digits", "permission": "rw",
                     "batching": {"max_batch_size": 8, "max_delay_us": 500}},
                    {"id": "gpu", "permission": "rw"},
                ],
                "max_code_mb": 4,
                "max_code_files": 100,
                "network": {"connect": ["127.0.0.1:9000"], "bind": [8080]},
                "invoke": ["post"],
            },
            {"name": "post", "handler": "classify.function_handler", "code": code_dir,
             "run_as": {"uid": 1000, "gid": 1000}, "concurrency": 2, "idle_timeout_s": 30,
             "resources": [{"id": "captures", "permission": "rw"}]},
        ],
        "subscriptions": [
            {"source": "devices", "topic": "in/#", "target": "classify"},
            {"source": "classify", "topic": "out/x", "target": "cloud", "retain": True},
        ],
        "s3": {"endpoint_url": "http://127.0.0.1:9000", "region": "us-east-1"},
        "sagemaker": {"region": "us-east-1"},
    }


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("fn") / "classify"
    d.mkdir()
    (d / "classify.py").write_text("def function_handler(event, context):\n    return event\n")
    return str(d)


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _error(path: str) -> GroupError:
    with pytest.raises(GroupError) as ei:
        load_group(path)
    return ei.value


def test_the_valid_group_loads(code_dir, tmp_path):
    g = load_group(_write(tmp_path, "g.yaml", yaml.safe_dump(_valid(code_dir))))
    assert g.functions[0].environment == {"MODE": "fast", "DEBUG": "false", "N": "3"}


def test_billion_laughs_is_refused_before_expanding(tmp_path):
    lines = ['name: g', 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for n in "bcdefghi":
        lines.append(f"{n}: &{n} [{', '.join(['*' + prev] * 9)}]")
        prev = n
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = _error(_write(tmp_path, "laughs.yaml", "\n".join(lines) + "\n"))
    assert "alias *a is not allowed" in str(err) and "line 3" in str(err)
    # Nothing was expanded (9**9 strings would take gigabytes).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 50_000


def test_a_merge_key_needs_an_alias_and_is_refused(tmp_path):
    text = "name: g\nbase: &b {region: x}\ns3:\n  <<: *b\n"
    assert "alias *b" in str(_error(_write(tmp_path, "m.yaml", text)))


def test_size_cap_is_checked_before_parsing(tmp_path, monkeypatch):
    p = _write(tmp_path, "big.yaml", "name: g\nx: " + "a" * (5 << 20) + "\n")
    assert "more than the 4194304 allowed" in str(_error(p))
    monkeypatch.setenv("PYENGINE_GROUP_MAX_BYTES", "1000")
    small = _write(tmp_path, "small.json", json.dumps({"name": "g", "x": "a" * 2000}))
    err = _error(small)
    assert "more than the 1000 allowed" in str(err) and "PYENGINE_GROUP_MAX_BYTES" in str(err)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 100_000])
def test_deep_json_is_a_nesting_error(tmp_path, depth):
    p = _write(tmp_path, "deep.json", '{"name": "g", "x": ' + "[" * depth + "]" * depth + "}")
    assert f"nested deeper than {MAX_DEPTH} levels" in str(_error(p))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900])
def test_deep_yaml_is_a_nesting_error_with_its_line(tmp_path, depth):
    block = "name: g\n" + "".join(" " * i + "k:\n" for i in range(depth))
    err = str(_error(_write(tmp_path, "deep.yaml", block)))
    assert f"nested deeper than {MAX_DEPTH} levels" in err and "line " in err
    flow = "name: g\nx: " + "[" * 5000 + "]" * 5000 + "\n"
    assert "YAML" in str(_error(_write(tmp_path, "flow.yaml", flow)))


def test_a_yaml_file_of_too_many_values_is_refused_before_building_them(tmp_path):
    text = "name: g\nx: [" + "1, " * MAX_YAML_NODES + "1]\n"
    err = _error(_write(tmp_path, "many.yaml", text))
    assert f"line 2: more than {MAX_YAML_NODES} values" in str(err)


def test_json_strings_with_brackets_do_not_count_as_nesting(code_dir, tmp_path):
    data = _valid(code_dir)
    data["functions"][0]["environment"]["BRACKETS"] = "[" * 100 + '\\"{' * 50
    g = load_group(_write(tmp_path, "g.json", json.dumps(data)))
    assert g.functions[0].environment["BRACKETS"].startswith("[[[")


def test_duplicate_keys_name_the_key_and_line(tmp_path):
    err = _error(_write(tmp_path, "d.yaml", "name: a\nresources: []\nname: b\n"))
    assert err.problems == [
        "line 3: duplicate key 'name' (first at line 1); a mapping may name each key once "
        "(the last one would silently win)"]
    err = _error(_write(tmp_path, "d.json", '{"name": "a",\n "s3": {"region": "x",\n'
                        ' "region": "y"}}'))
    assert "line 3: duplicate key 'region' (first at line 2)" in err.problems[0]
    flow = _error(_write(tmp_path, "f.yaml", "name: a\ns3: {region: x, region: y}\n"))
    assert "duplicate key 'region'" in flow.problems[0]


def test_not_utf8_long_integers_and_surrogates_are_errors(tmp_path):
    assert "line 1: not UTF-8 text" in str(_error(_bytes(tmp_path, b"name: \xff\n")))
    assert "not valid YAML" in str(_error(_write(tmp_path, "i.yaml", "name: " + "1" * 5000)))
    assert "not valid JSON" in str(_error(_write(tmp_path, "i.json",
                                                  '{"name": ' + "1" * 5000 + "}")))
    err = _error(_write(tmp_path, "s.json", '{"name": "g", "s3": {"region": "\\ud800"}}'))
    assert "s3.region: a string with a lone surrogate" in str(err)


def _bytes(tmp_path, raw: bytes) -> str:
    p = tmp_path / "raw.yaml"
    p.write_bytes(raw)
    return str(p)


def _env_problems(code_dir: str, env: Any) -> list[str]:
    data = _valid(code_dir)
    data["functions"][0]["environment"] = env
    with pytest.raises(GroupError) as ei:
        validate_group(data, "/tmp/g.yaml")
    return ei.value.problems


def test_environment_is_checked(code_dir):
    assert _env_problems(code_dir, {"A": "x\0y"}) == [
        "functions[0].environment.A: the value of 'A' contains a NUL byte"]
    assert "'A=B' is not a variable name" in _env_problems(code_dir, {"A=B": "1"})[0]
    assert "got dict" in _env_problems(code_dir, {"A": {"b": 1}})[0]
    assert "got list" in _env_problems(code_dir, {"A": [1]})[0]
    assert "not a variable name" in _env_problems(code_dir, {1: "x"})[0]
    assert "got list" in _env_problems(code_dir, ["A=1"])[0]
    big = _env_problems(code_dir, {"A": "x" * (VALUE_MAX_BYTES + 1)})
    assert big == [f"functions[0].environment.A: the value of 'A' is {VALUE_MAX_BYTES + 1} "
                   f"bytes, more than the {VALUE_MAX_BYTES} a variable may hold; put large data "
                   "in a resource"]
    many = {f"V{i}": "x" * VALUE_MAX_BYTES for i in range(TOTAL_MAX_BYTES // VALUE_MAX_BYTES)}
    assert "more than the 131072 a function's environment may hold" in _env_problems(
        code_dir, many)[0]


def test_long_values_are_shortened_in_messages(code_dir):
    data = _valid(code_dir)
    data["name"] = "n" * 1_000_000
    with pytest.raises(GroupError) as ei:
        validate_group(data, "/tmp/g.yaml")
    assert len(str(ei.value)) < 2000 and "characters left out" in str(ei.value)


def test_cli_reports_hostile_files_without_a_traceback(code_dir, tmp_path):
    files = {
        "nul.json": json.dumps({**_valid(code_dir), "functions": [
            {**_valid(code_dir)["functions"][0], "environment": {"K": "a\0b"}}]}),
        "laughs.yaml": "name: g\na: &a [x]\nb: [*a, *a]\n",
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "dup.yaml": "name: a\nname: b\n",
        "types.json": json.dumps({"name": "g", "functions": [{"name": 3, "handler": [],
                                  "code": {}, "timeout_s": "x", "environment": 5}]}),
    }
    for name, text in files.items():
        r = run_cli("deploy", _write(tmp_path, name, text), "--root", str(tmp_path / "root"))
        assert r.returncode != 0, name
        assert "Traceback" not in r.stderr and "problem(s) in the group" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "root" / "state.db")


# ------------------------------------------------------------------------- property test

_HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 0.5]),
    st.text(max_size=40),
    st.sampled_from(["", "\0", "a=b", "x" * 100_000, "../..", "/", "s3://", "file:///x.zip",
                     "${NOPE_NOT_SET}", "~", "//srv/x", "/dev/../etc", "rw", "ro"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers()),
                    st.one_of(st.integers(), st.text(max_size=5), st.lists(st.none())),
                    max_size=3),
    st.integers(min_value=MAX_DEPTH - 3, max_value=MAX_DEPTH + 3).map(
        lambda d: json.loads("[" * d + "]" * d)),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(data: dict, path: tuple, how: str, value: Any) -> Any:
    if not path:
        return value if how == "replace" else data
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "replace":
        parent[last] = value
    elif how == "wrap":
        parent[last] = [parent[last]]
    elif how == "rename" and isinstance(parent, dict):
        parent[f"{last}x" if isinstance(last, str) else str(last)] = parent.pop(last)
    return data


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_groups_give_a_field_error_or_a_group(code_dir, tmp_path_factory, data):
    group = copy.deepcopy(_valid(code_dir))
    doc: Any = group
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc) if isinstance(doc, (dict, list)) else [()]
        path = data.draw(st.sampled_from(paths))
        how = data.draw(st.sampled_from(["replace", "replace", "delete", "wrap", "rename"]))
        if not path and how != "replace":
            continue
        doc = _mutate(doc, path, how, data.draw(_HOSTILE))
    form = data.draw(st.sampled_from(["direct", "json", "yaml"]))
    try:
        if form == "direct":  # the validator alone, with keys JSON would turn into strings
            g = validate_group(doc, os.path.join(os.path.dirname(code_dir), "g.yaml"))
        else:
            d = tmp_path_factory.mktemp("g")
            text = (json.dumps(doc) if form == "json" else yaml.safe_dump(doc, width=1 << 20))
            g = load_group(_write(d, f"g.{form}", text))
    except GroupError as exc:
        assert exc.problems and all(isinstance(x, str) and x for x in exc.problems)
    else:
        assert g.name
