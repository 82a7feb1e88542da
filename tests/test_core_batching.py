"""Batching in the core: a function's resource entry with a ``batching`` block.

A real core process runs a pinned function whose model resource batches; concurrent
invocations meet in its one worker and run as batches, /metrics reports the batcher, a hot model
update loses no call, and a timeout in a multi-call worker fails only the calls in that worker.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from core_helpers import CoreProcess, deploy_group, function, model_resource, package, redeploy
from models import mlp

import pyengine
from pyengine.deploy import GroupError, validate_group

BATCHED_FN = """
import os, time
import numpy as np
import pyengine

model = pyengine.load("digits")

def function_handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
        return {"slept": event["sleep"], "pid": os.getpid()}
    x = np.asarray(event["x"], dtype=np.float32)
    version = model.path
    y = model.predict(x)
    assert model.path == version, "version changed inside a call"
    return {"probs": y.tolist(), "version": os.path.basename(version), "pid": os.getpid(),
            "type": type(model).__name__, "shared": pyengine.load("digits") is model}
"""

BATCHING = {"max_batch_size": 32, "max_delay_us": 20000, "max_queue_size": 256}


def _fill_model(seed: int):
    return lambda d: mlp(os.path.join(d, "model.pyem"), seed=seed)


def _batched_function(base: str, name: str, **settings: Any) -> dict[str, Any]:
    entry = function(base, name, BATCHED_FN, (("digits", "ro"),), pinned=True, **settings)
    entry["resources"][0]["batching"] = dict(BATCHING)
    return entry


@pytest.fixture(scope="module")
def core():
    tmp = tempfile.mkdtemp(prefix="pyengine-core-batching-")
    os.chmod(tmp, 0o755)  # workers run as nobody when the tests run as root
    base = os.path.join(tmp, "group")
    os.makedirs(base)
    os.chmod(base, 0o755)
    root = os.path.join(base, "root")
    deploy_group(base, root, [model_resource(base, "digits", _fill_model(1))], [
        _batched_function(base, "classify", timeout_s=10.0),
        _batched_function(base, "sleepy", timeout_s=3.0),
        {**_batched_function(base, "ondemand"), "pinned": False},
    ])
    proc = CoreProcess(root).wait_ready()
    yield proc
    proc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 64)).astype(np.float32)


def _expected(core: CoreProcess, x: np.ndarray) -> tuple[str, np.ndarray]:
    """(version name, the outputs of the version the resource's destination names now)."""
    version = os.path.realpath(os.path.join(os.path.dirname(core.root), "dest", "digits"))
    y = pyengine.load(os.path.join(version, "model.pyem")).predict(x)
    return os.path.basename(version), y


def _metric(text: str, name: str, **labels: str) -> float:
    lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}{{{re.escape(lab)}}} (\S+)$", text, re.M)
    assert m, f"no {name}{{{lab}}} in:\n{text}"
    return float(m.group(1))


def test_concurrent_invocations_meet_in_batches(core):
    x = _rows(32, seed=1)
    version, want = _expected(core, x)
    with ThreadPoolExecutor(32) as ex:
        answers = list(ex.map(lambda i: core.invoke("classify", {"x": x[i:i + 1].tolist()}),
                              range(32)))
    assert [s for s, _ in answers] == [200] * 32, [b for s, b in answers if s != 200]
    for i, (_, body) in enumerate(answers):
        assert body["result"]["version"] == version
        assert body["result"]["type"] == "BatchedResourceModel"
        assert body["result"]["shared"] is True  # every load shares the batcher
        np.testing.assert_allclose(body["result"]["probs"], want[i:i + 1], rtol=1e-5, atol=1e-6)
    assert len({b["result"]["pid"] for _, b in answers}) == 1  # one pinned worker took them all
    _, listing = core.get("/functions")
    info = [f for f in listing["functions"] if f["name"] == "classify"][0]
    assert info["calls_per_worker"] == 32 and info["workers"] == 1

    status, text = core.get("/metrics")
    assert status == 200
    labels = {"function": "classify", "resource": "digits"}
    rows = _metric(text, "pyengine_batch_size_sum", **labels)
    batches = _metric(text, "pyengine_batch_size_count", **labels)
    assert rows == 32 and 1 <= batches < 32, (rows, batches)  # mean batch size > 1
    assert _metric(text, "pyengine_batch_size_bucket", **labels, le="+Inf") == batches
    assert _metric(text, "pyengine_batch_requests_total", **labels, outcome="completed") == 32
    assert _metric(text, "pyengine_batch_requests_total", **labels, outcome="failed") == 0
    assert _metric(text, "pyengine_batches_total", **labels) == batches
    for name in ("pyengine_batch_latency_seconds", "pyengine_batch_queue_seconds"):
        p50 = _metric(text, name, **labels, quantile="0.5")
        p99 = _metric(text, name, **labels, quantile="0.99")
        assert 0 < p50 <= p99 < 10, (name, p50, p99)
        assert _metric(text, f"{name}_count", **labels) == 32
    # A request spends its queue time inside its latency.
    assert _metric(text, "pyengine_batch_queue_seconds", **labels, quantile="0.99") <= \
        _metric(text, "pyengine_batch_latency_seconds", **labels, quantile="0.99")
    # Several rows in one request: its own rows come back.
    status, body = core.invoke("classify", {"x": x[:5].tolist()})
    assert status == 200
    np.testing.assert_allclose(body["result"]["probs"], want[:5], rtol=1e-5, atol=1e-6)


def test_on_demand_calls_meet_in_one_worker(core):
    """From cold, 16 concurrent calls wait for the one worker starting rather than start 4."""
    x = _rows(16, seed=3)
    _, want = _expected(core, x)
    with ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(lambda i: core.invoke("ondemand", {"x": x[i:i + 1].tolist()}),
                              range(16)))
    assert [s for s, _ in answers] == [200] * 16, answers
    for i, (_, body) in enumerate(answers):
        np.testing.assert_allclose(body["result"]["probs"], want[i:i + 1], rtol=1e-5, atol=1e-6)
    assert len({b["result"]["pid"] for _, b in answers}) == 1
    assert _pids(core)["ondemand"] == [answers[0][1]["result"]["pid"]]


def test_timeout_fails_the_calls_in_that_worker(core):
    """A call past timeout_s kills its worker: another call running in it fails too."""
    with ThreadPoolExecutor(2) as ex:
        stuck = ex.submit(core.invoke, "sleepy", {"sleep": 10})
        time.sleep(1.0)
        neighbour = ex.submit(core.invoke, "sleepy", {"sleep": 2.5})  # would end in time alone
        status, body = stuck.result()
        n_status, n_body = neighbour.result()
    assert status == 504 and body["error"]["type"] == "FunctionTimeout", body
    assert n_status == 502 and n_body["error"]["type"] == "WorkerDied", n_body
    assert "another call in it" in n_body["error"]["message"]
    assert body["invocation_id"] in n_body["error"]["message"]
    deadline = time.monotonic() + 30
    while True:  # the pinned worker is replaced
        status, again = core.invoke("sleepy", {"sleep": 0.01})
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200 and again["result"]["slept"] == 0.01


def test_hot_model_update_under_batching(core):
    base = os.path.dirname(core.root)
    x = _rows(8, seed=2)
    expected = dict([_expected(core, x)])
    before = _pids(core)["classify"]
    results: list[tuple[int, int, dict]] = []
    stop = threading.Event()

    def stream(i: int) -> None:
        while not stop.is_set():
            status, body = core.invoke("classify", {"x": x[i:i + 1].tolist()})
            results.append((i, status, body))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    package(os.path.join(base, "sources", "digits.tar.gz"), _fill_model(2))
    redeploy(base, core.root)
    new_version, new_want = _expected(core, x)
    assert new_version not in expected
    expected[new_version] = new_want
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
            b.get("result", {}).get("version") == new_version for _, _, b in results[-8:]):
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()

    failed = [(s, b) for _, s, b in results if s != 200]
    assert failed == [] and len(results) > 40, (failed[:3], len(results))
    seen = {b["result"]["version"] for _, _, b in results}
    assert seen == set(expected), seen
    for i, _, b in results:
        np.testing.assert_allclose(b["result"]["probs"], expected[b["result"]["version"]][i:i + 1],
                                   rtol=1e-5, atol=1e-6)
    assert _pids(core)["classify"] == before  # a new model version, the same worker
    _, text = core.get("/metrics")
    labels = {"function": "classify", "resource": "digits"}
    # The counters carry over from the old version's batcher to the new one's.
    assert _metric(text, "pyengine_batch_requests_total", **labels, outcome="completed") >= \
        len(results)


def _pids(core: CoreProcess) -> dict[str, list[int]]:
    _, body = core.get("/functions")
    return {f["name"]: f["pids"] for f in body["functions"]}


# -- the group file ----------------------------------------------------------------------------


def _group(batching: Any, resource: dict[str, Any] | None = None) -> dict[str, Any]:
    code = tempfile.mkdtemp(prefix="pyengine-batching-group-")
    with open(os.path.join(code, "handler.py"), "w") as fh:
        fh.write("def function_handler(event, context):\n    return event\n")
    res = resource or {"id": "digits", "model": {"source": "s3://models-bucket/digits.tar.gz",
                                                 "destination": "/srv/models/digits"}}
    entry: dict[str, Any] = {"id": res["id"], "permission": "ro"}
    if batching is not ...:
        entry["batching"] = batching
    return {"name": "g", "resources": [res], "functions": [
        {"name": "f", "handler": "handler.function_handler", "code": code,
         "resources": [entry]}]}


def test_group_file_batching_block_is_validated():
    good = validate_group(_group({"max_batch_size": 16, "max_delay_us": 500,
                                  "preferred_batch_sizes": [8, 4], "timeout_s": 0.5}))
    cfg = good.functions[0].resources[0].batching
    assert cfg == pyengine.BatchingConfig(max_batch_size=16, max_delay_us=500,
                                          preferred_batch_sizes=(4, 8), timeout_s=0.5)
    assert type(good).from_dict(good.to_dict()) == good  # kept in the state database
    assert validate_group(_group(...)).functions[0].resources[0].batching is None

    where = "functions[0].resources[0].batching"
    cases = [
        ({"max_batch_size": 0}, ["max_batch_size", "got 0", ">= 1"]),
        ({"max_delay_us": -5}, ["max_delay_us", "got -5", ">= 0"]),
        ({"max_batch_size": "32"}, ["max_batch_size", "got '32'", "integer"]),
        ({"max_batch_size": 8, "preferred_batch_sizes": [16]},
         ["preferred batch size", "got 16", "between 1 and 8"]),
        ({"timeout_s": 0}, ["timeout_s", "got 0", "> 0"]),
        ({"max_batch": 32}, ["unknown key", "'max_batch'", "max_batch_size"]),
        ([32], ["must be a mapping", "list"]),
    ]
    for block, words in cases:
        with pytest.raises(GroupError) as err:
            validate_group(_group(block))
        msg = str(err.value)
        assert where in msg, msg
        for w in words:
            assert w in msg, (w, msg)
    with pytest.raises(GroupError) as err:
        validate_group(_group({"max_batch_size": 4},
                              {"id": "zero", "device": {"path": "/dev/zero"}}))
    assert f"{where}: 'zero' is a device; only model resources batch" in str(err.value)
