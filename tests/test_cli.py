"""The command line's conventions (docs/cli.md): --version, --json output in its documented
shape, the exit code of each failure class, help on every flag, reset's confirmation, validate
and deploy --dry-run, core status/stop, warnings in the command line's words."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from core_helpers import CoreProcess, deploy_group, function
from deploy_fixtures import World, run_cli, write_group
from models import mlp

import pyengine
from pyengine import deploy as dp
from pyengine.cli import COMMANDS, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "cli.md")


# -- the documented shapes ---------------------------------------------------------------------


def documented_shape(name: str) -> Any:
    """The JSON shape docs/cli.md gives after ``<!-- shape: NAME -->``."""
    with open(DOC) as fh:
        text = fh.read()
    m = re.search(rf"<!-- shape: {re.escape(name)} -->\n```json\n(.*?)\n```", text, re.S)
    assert m, f"docs/cli.md documents no shape {name!r}"
    return json.loads(m.group(1))


_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "float": (int, float), "bool": bool, "null": type(None)}


def check_shape(value: Any, shape: Any, where: str = "$") -> None:
    """Assert ``value`` has ``shape`` (docs/cli.md's notation), naming the first mismatch."""
    if isinstance(shape, str):
        if shape == "any":
            return
        kinds = shape.split("|")
        ok = any(isinstance(value, _TYPES[k]) and not (k in ("int", "float") and
                                                        isinstance(value, bool))
                 for k in kinds)
        assert ok, f"{where}: {value!r} is not {shape}"
    elif isinstance(shape, list):
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        for i, item in enumerate(value):
            check_shape(item, shape[0], f"{where}[{i}]")
    else:
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        if "*" in shape:
            for k, v in value.items():
                check_shape(v, shape["*"], f"{where}.{k}")
            return
        keys = {k.rstrip("?"): k for k in shape if k != "..."}  # "key?": may be left out
        missing = {k for k, doc in keys.items() if not doc.endswith("?")} - set(value)
        assert not missing, f"{where}: missing {sorted(missing)}"
        extra = set(value) - set(keys)
        assert "..." in shape or not extra, f"{where}: undocumented keys {sorted(extra)}"
        for k in set(keys) & set(value):
            check_shape(value[k], shape[keys[k]], f"{where}.{k}")


def cli_json(capsys: pytest.CaptureFixture[str], shape: str, *argv: str, code: int = 0) -> Any:
    """Run ``pyengine ARGV --json`` in this process; check its exit code and that standard
    output is one JSON document of the documented ``shape``."""
    rc = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert rc == code, (rc, out, err)
    data = json.loads(out)
    check_shape(data, documented_shape(shape))
    return data


def test_the_shape_checker_refuses_what_the_docs_do_not_say() -> None:
    shape = documented_shape("reset")
    check_shape({"root": "/r", "removed": ["/a"]}, shape)
    bad: dict[str, Any]
    for bad in ({"root": "/r"}, {"root": "/r", "removed": [1]},
                {"root": "/r", "removed": [], "extra": 1}, {"root": None, "removed": []}):
        with pytest.raises(AssertionError):
            check_shape(bad, shape)


# -- every command -----------------------------------------------------------------------------


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Each command's parser (and its subcommands'), built as ``main`` builds them."""
    out = []
    for name, _help, module_name, stem in COMMANDS:
        p = argparse.ArgumentParser(prog=f"pyengine {name}")
        getattr(importlib.import_module(f"pyengine.cli.{module_name}"), f"{stem}_args")(p)
        todo = [(name, p)]
        while todo:
            label, parser = todo.pop()
            out.append((label, parser))
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    todo.extend((f"{label} {n}", sp) for n, sp in action.choices.items())
    return out


def test_every_flag_has_help() -> None:
    parsers = _parsers()
    assert len(parsers) > len(COMMANDS)  # core and fleet have subcommands
    missing = [f"{label} {a.option_strings or a.dest}" for label, p in parsers
               for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
               and not (a.help or "").strip()]
    assert not missing, f"flags without help: {missing}"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"pyengine {pyengine.__version__}\n"


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = cli_json(capsys, "info", "info")
    assert data["version"] == pyengine.__version__ and data["kernel_variant"] in data["kernels_available"]
    assert data["int8_kernel"] in ("amx", "avx512-vnni", "avx-vnni", "avx2", "neon-dot", "neon", "generic")
    assert "Conv2D" in data["ops"] and "native" in data["backends"]


def test_usage_errors_exit_2() -> None:
    r = run_cli("deploy", "--no-such-flag", "g.yaml")
    assert r.returncode == 2 and "unrecognized arguments: --no-such-flag" in r.stderr
    r = run_cli("nonsense")
    assert r.returncode == 2 and "invalid choice: 'nonsense'" in r.stderr


# -- models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("cli-model")
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    np.save(d / "x.npy", x)
    (d / "bad.npy").write_bytes(b"not an array")
    return {"model": mlp(str(d / "mlp.pyem")), "x": str(d / "x.npy"), "bad": str(d / "bad.npy"),
            "dir": str(d)}


def test_run_json(model_files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    data = cli_json(capsys, "run", "run", model_files["model"], "-i", model_files["x"])
    model = pyengine.load(model_files["model"])
    want = model.predict(np.load(model_files["x"]))
    assert isinstance(want, np.ndarray)
    (name, out), = data["outputs"].items()
    assert name == model.outputs[0].name and out["shape"] == list(want.shape)
    np.testing.assert_allclose(np.array(out["values"], np.float32), want, rtol=1e-6)
    assert data["backend"] == "native" and data["output_file"] is None
    dst = os.path.join(model_files["dir"], "y.npy")
    data = cli_json(capsys, "run", "run", model_files["model"], "-i", model_files["x"], "-o", dst)
    assert "values" not in data["outputs"][name] and data["output_file"] == dst
    np.testing.assert_array_equal(np.load(dst), want)


def test_run_exit_codes(model_files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # Bad input: an input file that is not an array, a model path that is not a model.
    assert main(["run", model_files["model"], "-i", model_files["bad"]]) == 2
    assert main(["run", model_files["x"], "-i", model_files["x"]]) == 2
    capsys.readouterr()
    # Unavailable: a GPU this machine (or build) does not have.
    assert main(["run", model_files["model"], "-i", model_files["x"], "--device", "cuda:63"]) == 3
    err = capsys.readouterr().err
    assert "pyengine run: error:" in err and "cuda:63" in err


def test_bench_json(model_files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from pyengine.bench import report

    data = cli_json(capsys, "bench", "bench", model_files["model"], "--runs", "3", "--warmup",
                    "1", "--threads", "1", "--no-progress")
    assert report.validate(data) == [] and len(data["models"]) == 1


def _onnx_with_unsupported_ops(path: str) -> str:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Scaler", ["x"], ["h"], name="scaler_node", domain="ai.onnx.ml",
                              offset=[0.5], scale=[2.0]),
             helper.make_node("Relu", ["h"], ["y"], name="relu_node")]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                      helper.make_opsetid("ai.onnx.ml", 1)]), path)
    return path


def _onnx_relu(path: str) -> str:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_convert_json(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    src = _onnx_relu(str(tmp_path / "relu.onnx"))
    dst = str(tmp_path / "relu.pyem")
    data = cli_json(capsys, "convert", "convert", src, "-o", dst)
    assert data["path"] == dst and os.path.isfile(dst)
    model = pyengine.load(dst)
    assert data["inputs"] == [{"name": s.name, "shape": list(s.shape), "dtype": str(s.dtype)}
                              for s in model.inputs]


def test_run_warning_in_cli_words(tmp_path: Any) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    src = _onnx_with_unsupported_ops(str(tmp_path / "scaler.onnx"))
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = run_cli("run", src, "-i", str(tmp_path / "x.npy"), "--json")
    assert r.returncode == 0, r.stderr
    got = np.array(json.loads(r.stdout)["outputs"]["y"]["values"])
    np.testing.assert_allclose(got, np.maximum((x - 0.5) * 2.0, 0), rtol=1e-5, atol=1e-6)
    assert "pyengine run: warning:" in r.stderr and "--backend onnx" in r.stderr
    assert "backend='" not in r.stderr and "Warning:" not in r.stderr, r.stderr


# -- deployments -------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Any) -> World:
    return World(tmp_path)


def test_deploy_rollback_reset_json(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    first = cli_json(capsys, "deploy", "deploy", world.group(), "--root", world.root)
    assert first["status"] == "Success" and {i["key"] for i in first["items"]} >= {"alpha"}
    world.set_pkg("alpha", "v2")
    cli_json(capsys, "deploy", "deploy", world.group(), "--root", world.root)
    assert world.tag("alpha") == "v2"
    back = cli_json(capsys, "rollback", "rollback", "--root", world.root)
    assert back["kind"] == "rollback" and back["status"] == "Success"
    assert world.tag("alpha") == "v1"
    listed = cli_json(capsys, "deployments-list", "deployments", "list", "--root", world.root)
    assert [d["id"] for d in listed] == [3, 2, 1]
    shown = cli_json(capsys, "deploy", "deployments", "show", "1", "--root", world.root)
    assert shown == {**first, "id": 1}
    rows = cli_json(capsys, "resources-list", "resources", "list", "--root", world.root)
    assert {r["key"] for r in rows} == {"alpha", "beta", "null", "classify"}
    health = cli_json(capsys, "doctor", "doctor", "--root", world.root)
    assert health["healthy"] is True
    # Lists print a header row above their columns.
    assert main(["resources", "list", "--root", world.root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "VERSION", "DEPLOYMENT", "DESTINATION", "SOURCE"]
    assert sorted(ln.split()[1] for ln in lines[1:]) == ["alpha", "beta", "classify", "null"]
    gone = cli_json(capsys, "reset", "reset", "--yes", "--root", world.root)
    assert os.path.join(world.root, "state.db") in gone["removed"]
    assert not os.path.lexists(world.dest["alpha"])


def test_deploy_failure_exits_1(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    with open(world.pkg["beta"], "wb") as fh:  # a package that is not an archive
        fh.write(b"garbage")
    data = cli_json(capsys, "deploy", "deploy", world.group(), "--root", world.root, code=1)
    assert data["status"] == "Failure"
    assert any(i["key"] == "beta" and i["outcome"] == "failed" for i in data["items"])


def test_reset_on_a_pipe_refuses_without_yes(world: World) -> None:
    assert dp.deploy(world.group(), world.root).status == "Success"
    before = sorted(os.listdir(world.root))
    r = subprocess.run([sys.executable, "-m", "pyengine", "reset", "--root", world.root],
                       input="y\n", capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "not a terminal" in r.stderr and "--yes" in r.stderr and r.stdout == ""
    assert sorted(os.listdir(world.root)) == before
    assert world.tag("alpha") == "v1" and dp.current(world.root) is not None
    r = subprocess.run([sys.executable, "-m", "pyengine", "reset", "--root", world.root, "--yes"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and dp.current(world.root) is None


def _snapshot(path: str) -> dict[str, float]:
    """Every path below ``path`` with its modification time (nothing when it does not exist)."""
    out = {}
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            out[p] = os.lstat(p).st_mtime
    return out


def test_validate_prints_every_problem_and_touches_nothing(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert dp.deploy(world.group(), world.root).status == "Success"
    before = _snapshot(str(world.tmp))
    with open(world.group()) as fh:
        group = json.load(fh)
    group["resources"][0]["model"]["source"] = str(world.tmp / "missing.tar.gz")
    group["functions"][0]["timeout_s"] = -1
    group["functions"][0]["resources"].append({"id": "nope", "permission": "ro"})
    group["functions"][0]["memory_mb"] = "lots"
    path = write_group(str(world.tmp / "group.json"), group)
    before = {**before, path: os.lstat(path).st_mtime}
    for argv in (["validate", path], ["deploy", path, "--dry-run", "--root", world.root]):
        assert main(argv) == 2
        out = capsys.readouterr().out
        for field in ("resources[0].model.source", "functions[0].timeout_s",
                      "functions[0].resources[2]", "functions[0].memory_mb"):
            assert field in out, out
        assert _snapshot(str(world.tmp)) == before
    data = cli_json(capsys, "validate", "validate", path, code=2)
    assert data["valid"] is False and data["name"] is None
    assert sorted(p.split(":")[0].split(".")[0] for p in data["problems"]) == [
        "functions[0]", "functions[0]", "functions[0]", "resources[0]"]
    assert any("missing.tar.gz is not a file" in p for p in data["problems"])
    # A fresh root is not even created.
    fresh = str(world.tmp / "fresh-root")
    assert main(["deploy", world.group(), "--dry-run", "--root", fresh]) == 0
    assert "is valid" in capsys.readouterr().out and not os.path.exists(fresh)


# -- the core ----------------------------------------------------------------------------------


@pytest.fixture
def open_tmp(tmp_path: Any) -> str:
    """A directory every user can traverse (the core runs functions as nobody when root)."""
    os.chmod(tmp_path, 0o755)
    for p in tmp_path.parents:
        if str(p).startswith("/tmp/"):
            os.chmod(p, os.stat(p).st_mode | 0o055)
    return str(tmp_path)


def test_core_status_invoke_stop(open_tmp: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = os.path.join(open_tmp, "root")
    deploy_group(open_tmp, root, [], [function(
        open_tmp, "echo", "def function_handler(event, context):\n"
        "    if event == 'raise':\n        raise ValueError('asked to')\n    return event\n",
        pinned=True)])
    # No core yet: unavailable (3) for status, stop and invoke alike.
    for argv in (["core", "status"], ["core", "stop"], ["invoke", "echo"]):
        assert main([*argv, "--root", root]) == 3
        assert "no core is running" in capsys.readouterr().err
    core = CoreProcess(root).wait_ready()
    try:
        status = cli_json(capsys, "core-status", "core", "status", "--root", root)
        assert status["pid"] == core.proc.pid and status["ready"] is True
        assert [f["name"] for f in status["functions"]] == ["echo"]
        answer = cli_json(capsys, "invoke", "invoke", "echo", "--root", root,
                          "--payload", '{"a": [1, 2]}')
        assert answer["ok"] is True and answer["result"] == {"a": [1, 2]}
        failed = cli_json(capsys, "invoke", "invoke", "echo", "--root", root,
                          "--payload", '"raise"', code=1)
        assert failed["ok"] is False and "asked to" in failed["error"]["message"]
        cli_json(capsys, "invoke", "invoke", "nope", "--root", root, code=2)
        assert main(["core", "status", "--root", root]) == 0
        lines = capsys.readouterr().out.splitlines()
        header = next(ln for ln in lines if ln.startswith("FUNCTION"))
        assert header.split()[:3] == ["FUNCTION", "STATUS", "PINNED"]
        if os.geteuid() == 0 and shutil.which("setpriv"):
            # Another user may not stop it: the socket and the signal both refuse.
            other = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                 "-m", "pyengine", "core", "stop", "--root", root], capture_output=True,
                text=True, timeout=120, cwd="/", env={**os.environ, "PYTHONPATH": REPO})
            assert other.returncode == 1 and "may not stop the core" in other.stderr, other.stderr
            assert core.proc.poll() is None
        stopped = cli_json(capsys, "core-stop", "core", "stop", "--root", root)
        assert stopped == {"root": root, "pid": core.proc.pid, "stopped": True}
        assert core.proc.wait(timeout=30) == 0
        assert main(["core", "status", "--root", root]) == 3
    finally:
        core.stop()


def test_fleet_commands_json(capsys: pytest.CaptureFixture[str], tmp_path: Any, moto_endpoint: str,
                             bucket: str) -> None:
    """Every fleet command that reports something prints its documented JSON shape."""
    import time

    from pyengine import fleet as fl
    from pyengine.common.aws import AwsSettings
    from pyengine.fleet import document

    key = str(tmp_path / "fleet.pem")
    made = cli_json(capsys, "fleet-keygen", "fleet", "keygen", key)
    assert made == {"key_id": fl.TrustedKey.load(key + ".pub").id, "private": key,
                    "public": key + ".pub"}
    cam = str(tmp_path / "cam.pem")
    cli_json(capsys, "fleet-keygen", "fleet", "keygen", cam, "--public", cam + ".public")
    uri = f"s3://{bucket}/f"
    where = ["--fleet", uri, "--s3-endpoint", moto_endpoint]
    signing = [*where, "--key", key]
    group = tmp_path / "group.json"
    group.write_text(json.dumps({"name": "g"}))
    enrolled = cli_json(capsys, "fleet-enrollment", "fleet", "enroll", *signing,
                        "--core", f"cam={cam}.public")
    assert list(enrolled["cores"]) == ["cam"]
    first = cli_json(capsys, "fleet-document", "fleet", "publish", str(group), *signing)
    second = cli_json(capsys, "fleet-document", "fleet", "publish", str(group), *signing,
                      "--percent", "50", "--max-failures", "0")
    assert (first["version"], second["version"], second["rollout"]["percent"]) == (1, 2, 50)
    # The enrolled core reports that version 2 failed: the rollout halts; resume accepts it.
    status = {"format": document.STATUS_FORMAT, "fleet": uri, "core": "cam", "group": "g",
              "updated": time.time(), "state": "failed", "failed_version": 2,
              "serial": second["serial"]}
    fleet = fl.Fleet.parse(uri, AwsSettings(moto_endpoint))
    fleet.put(json.dumps(fl.SigningKey(cam).seal(status)).encode(), "status", "cam.json")
    resumed = cli_json(capsys, "fleet-document", "fleet", "resume", *signing)
    assert resumed["rollout"]["acknowledged"] == ["cam"]
    promoted = cli_json(capsys, "fleet-document", "fleet", "promote", *signing, "--force")
    assert promoted["rollout"]["percent"] == 100 and promoted["serial"] > resumed["serial"]
    back = cli_json(capsys, "fleet-document", "fleet", "rollback", *signing)
    assert back["version"] == 1 and back["rollback"] == {"from": 2}
    assert main(["fleet", "resume", *signing, "--json"]) == 1  # the fleet's state refuses
    assert "no failures to accept" in capsys.readouterr().err
    ts = cli_json(capsys, "fleet-timestamp", "fleet", "refresh", *signing)
    assert ts["deployment"]["serial"] == back["serial"]
    shown = cli_json(capsys, "fleet-status", "fleet", "status", *where, "--trust", key + ".pub")
    assert shown["document"]["version"] == 1 and shown["enrolled"] == ["cam"]
