"""Data capture: pyengine.capture in real functions, the core's spool, uploads to a real S3 API
server (moto's server mode on loopback), an S3 outage and a killed core."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from typing import Any, Iterator

import pytest
from core_helpers import CoreProcess, function, redeploy
from deploy_fixtures import aws_env, free_port, wait_port

from pyengine.core.capture import Spool
from pyengine.core.metrics import Metrics

CAPTURE = """
import pyengine

def function_handler(event, context):
    y = [v * 2 for v in event["x"]]
    seq = pyengine.capture(event["x"], y, {"i": event["i"], "device": "cam1"})
    return {"y": y, "seq": seq}
"""


@pytest.fixture(scope="module")
def open_tmp() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="pyengine-capture-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _root(open_tmp: str, name: str) -> tuple[str, str]:
    base = os.path.join(open_tmp, name)
    os.makedirs(base)
    root = os.path.join(base, "root")
    with open(os.path.join(base, "group.json"), "w") as fh:
        json.dump({"name": "capture", "functions": [
            function(base, "capture", CAPTURE, pinned=True, timeout_s=10)]}, fh)
    redeploy(base, root)
    return base, root


def _config(base: str, endpoint: str, bucket: str, **capture: Any) -> str:
    path = os.path.join(base, "core.json")
    with open(path, "w") as fh:
        json.dump({"capture": {"s3": f"s3://{bucket}/samples/line-1/", "endpoint_url": endpoint,
                               "region": "us-east-1", **capture}}, fh)
    return path


def _uploaded(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Every sample in the bucket, objects in key order, lines in object order."""
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    out = []
    for k in keys:
        assert k.startswith("samples/line-1/") and k.endswith(".jsonl"), k
        body = s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode()
        out += [json.loads(line) for line in body.splitlines()]
    return out


def _wait_uploaded(s3: Any, bucket: str, n: int, core: CoreProcess,
                   timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = _uploaded(s3, bucket)
        if len(got) >= n or time.monotonic() > deadline:
            assert len(got) == n, (len(got), core.log()[-3000:])
            return got
        time.sleep(0.1)


def _capture(core: CoreProcess, i: int) -> int:
    status, body = core.invoke("capture", {"x": [i, i + 0.5], "i": i})
    assert status == 200, body
    assert body["result"]["y"] == [2 * i, 2 * i + 1.0]
    return int(body["result"]["seq"])


def test_captured_samples_reach_s3_in_order(open_tmp: str, s3: Any, bucket: str,
                                            moto_endpoint: str) -> None:
    base, root = _root(open_tmp, "in-order")
    cfg = _config(base, moto_endpoint, bucket, batch_size=7, batch_s=0.2)
    core = CoreProcess(root, args=("--config", cfg)).wait_ready()
    try:
        seqs = [_capture(core, i) for i in range(40)]
        assert seqs == list(range(40))
        got = _wait_uploaded(s3, bucket, 40, core)
        assert [s["meta"]["i"] for s in got] == list(range(40))
        assert [s["seq"] for s in got] == seqs
        first = got[0]
        assert first["inputs"] == [0, 0.5] and first["outputs"] == [0, 1.0]
        assert first["function"] == "capture" and first["invocation_id"]
        assert first["meta"] == {"i": 0, "device": "cam1"}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, metrics = core.get("/metrics")
            if "pyengine_capture_uploaded_total 40" in metrics:
                break
            time.sleep(0.1)
        assert "pyengine_capture_samples_total 40" in metrics
        assert "pyengine_capture_uploaded_total 40" in metrics
        assert "pyengine_capture_spool_samples 0" in metrics
        # Functions have no access to the spool: it is the core's alone.
        assert oct(os.stat(os.path.join(root, "capture", "spool")).st_mode & 0o777) == "0o700"
    finally:
        core.stop()


def test_capture_outside_a_function_is_a_clear_error() -> None:
    import pyengine

    with pytest.raises(RuntimeError, match="inside a function run by the pyengine core"):
        pyengine.capture([1.0])


def test_s3_outage_and_a_killed_core_lose_no_acknowledged_sample(open_tmp: str) -> None:
    """S3 stops; samples spool; the core is killed (-9) and restarted; S3 comes back on the
    same port: every acknowledged sample arrives once, in order."""
    import boto3
    from moto.server import ThreadedMotoServer

    aws_env()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_port(port)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"capture-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    base, root = _root(open_tmp, "outage")
    cfg = _config(base, endpoint, bucket, batch_size=5, batch_s=0.1, retry_max_s=0.5)
    core = CoreProcess(root, args=("--config", cfg)).wait_ready()
    try:
        assert [_capture(core, i) for i in range(10)] == list(range(10))
        _wait_uploaded(s3, bucket, 10, core)
        server.stop()  # S3 is gone
        acked = [_capture(core, i) for i in range(10, 25)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            _, metrics = core.get("/metrics")
            if "pyengine_capture_upload_errors_total" in metrics:
                break
            time.sleep(0.1)
        assert "pyengine_capture_upload_errors_total" in metrics, core.log()[-2000:]
        assert "pyengine_capture_spool_samples 15" in metrics
        assert "cannot upload captured samples" in core.wait_log("cannot upload captured samples")
        core.proc.send_signal(signal.SIGKILL)  # a crash: acknowledged samples must survive
        core.proc.wait()
        core.stop()
        os.unlink(os.path.join(root, "core.json"))  # the dead core's address
        core = CoreProcess(root, args=("--config", cfg)).wait_ready()
        acked += [_capture(core, i) for i in range(25, 30)]
        assert acked == list(range(10, 30))
        _, metrics = core.get("/metrics")
        assert "pyengine_capture_spool_samples 20" in metrics
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()  # back, on the same port (moto keeps its buckets in this process)
        got = _wait_uploaded(s3, bucket, 30, core)
        assert [s["meta"]["i"] for s in got] == list(range(30))
        assert [s["seq"] for s in got] == list(range(30))
    finally:
        core.stop()
        server.stop()


def _disk(directory: Any) -> tuple[int, int]:
    """(slot files, bytes they take on disk) in a spool directory."""
    slots = [p for p in os.scandir(directory) if p.name.startswith("slot-")]
    return len(slots), sum(p.stat().st_blocks * 512 for p in slots)


def test_spool_cap_evicts_oldest_first_and_counts(tmp_path: Any) -> None:
    metrics = Metrics()
    block = os.statvfs(tmp_path).f_bsize
    cap = 8 * block
    spool = Spool(str(tmp_path / "spool"), cap_bytes=cap, metrics=metrics)
    sample = {"inputs": "x" * 150, "function": "f"}
    seqs = [spool.append({**sample, "i": i}) for i in range(40)]
    assert seqs == list(range(40))
    samples, size = spool.stats()
    assert samples == 8 and size <= cap  # each sample takes a block, whatever its JSON length
    evicted = metrics.value("pyengine_capture_evicted_total", function="f")
    assert evicted == 40 - samples
    kept, body = spool.read(list(range(40)))
    assert kept == list(range(40 - samples, 40))  # the newest survive
    assert [json.loads(line)["i"] for line in body.decode().splitlines()] == kept
    # A write cut by a crash (never acknowledged) is not a sample after a restart.
    spool_dir = tmp_path / "spool"
    slots = sorted(p.name for p in spool_dir.iterdir() if p.name.startswith("slot-"))
    (spool_dir / "slot-999999").write_bytes(b'{"seq":1000,"inputs":"xx')
    # A new Spool over the same directory (a restart) sees the same samples, and numbering
    # continues after them; after an upload is recorded numbering continues past it too.
    again = Spool(str(spool_dir), cap_bytes=cap, metrics=metrics)
    assert again.stats() == (samples, size)
    assert again.usage() == {"f": (samples, size)}
    assert len(slots) <= samples + 32  # slots are reused, not one file per sample ever taken
    again.done(39)
    assert again.stats() == (0, 0)
    assert Spool(str(tmp_path / "spool"), cap, metrics).append(sample) == 40
    with pytest.raises(ValueError, match="larger than the function's whole capture quota"):
        again.append({"inputs": "x" * cap, "function": "f"})
    assert metrics.value("pyengine_capture_refused_total", function="f", reason="too_large") == 1


def test_one_function_cannot_evict_anothers_samples(tmp_path: Any) -> None:
    """The cap was shared: one function's flood evicted all 20 of another's samples."""
    metrics = Metrics()
    block = os.statvfs(tmp_path).f_bsize
    spool = Spool(str(tmp_path / "spool"), cap_bytes=64 * block, metrics=metrics,
                  function_bytes=32 * block, function_files=1000)
    quiet = [spool.append({"function": "quiet", "inputs": [i]}) for i in range(20)]
    for i in range(120):
        spool.append({"function": "noisy", "inputs": [i]})
    usage = spool.usage()
    assert usage["quiet"] == (20, 20 * block)
    assert usage["noisy"][0] == 32 and usage["noisy"][1] <= 32 * block
    assert metrics.value("pyengine_capture_evicted_total", function="quiet") == 0
    assert metrics.value("pyengine_capture_evicted_total", function="noisy") == 120 - 32
    kept, _ = spool.read(quiet)
    assert kept == quiet
    # When the whole spool is full of other functions' samples, a newcomer is refused, and
    # nobody else's samples go.
    tight = Spool(str(tmp_path / "tight"), cap_bytes=8 * block, metrics=metrics,
                  function_bytes=6 * block)
    for i in range(10):
        tight.append({"function": "a", "inputs": [i]})
    tight.append({"function": "b", "inputs": [0]})
    tight.append({"function": "b", "inputs": [1]})
    with pytest.raises(ValueError, match="the capture spool is full"):
        tight.append({"function": "c", "inputs": [0]})
    assert tight.usage() == {"a": (6, 6 * block), "b": (2, 2 * block)}
    assert metrics.value("pyengine_capture_refused_total", function="c",
                         reason="spool_full") == 1


def test_quota_counts_disk_blocks_and_files(tmp_path: Any) -> None:
    """Tiny samples used 25.5x the cap on disk when the cap counted JSON bytes."""
    metrics = Metrics()
    cap = 16 * os.statvfs(tmp_path).f_bsize
    directory = tmp_path / "spool"
    spool = Spool(str(directory), cap_bytes=cap, metrics=metrics, function_files=7)
    for i in range(40):
        spool.append({"function": "tiny", "inputs": i})
    files, on_disk = _disk(directory)
    samples, counted = spool.stats()
    assert samples == 7  # the file quota
    assert on_disk <= counted <= cap
    # Without the file quota the byte quota holds on disk, block for block.
    wide = Spool(str(tmp_path / "wide"), cap_bytes=cap, metrics=metrics)
    for i in range(120):
        wide.append({"function": "tiny", "inputs": i})
    files, on_disk = _disk(tmp_path / "wide")
    assert on_disk <= cap, (files, on_disk)
    assert wide.stats()[1] <= cap
    # Uploaded samples free their files: empty slots kept for reuse are bounded.
    many = Spool(str(tmp_path / "many"), cap_bytes=1 << 30, metrics=metrics)
    for i in range(100):
        many.append({"function": "tiny", "inputs": i})
    assert _disk(tmp_path / "many")[0] >= 100
    many.done(10**6)
    files, on_disk = _disk(tmp_path / "many")
    assert on_disk == 0 and files == 64


FORGE = """
import pyengine
from pyengine.core import function_api

def function_handler(event, context):
    # A function that claims another topic and source for its sample than its call had.
    answer = function_api._require_channel("x").request(
        {"op": "capture", "sample": {"inputs": [1], "topic": "forged/topic", "source": "cloud"},
         "topic": "forged/topic", "source": "cloud"})
    return {"seq": answer["seq"], "topic": context.topic}
"""


def test_the_core_sets_a_samples_topic_and_source(open_tmp: str) -> None:
    base = os.path.join(open_tmp, "forge")
    os.makedirs(base)
    root = os.path.join(base, "root")
    with open(os.path.join(base, "group.json"), "w") as fh:
        json.dump({"name": "capture", "functions": [
            function(base, "forge", FORGE, pinned=True, timeout_s=10)]}, fh)
    redeploy(base, root)
    core = CoreProcess(root).wait_ready()
    try:
        status, body = core.invoke("forge", {})
        assert status == 200, body
        seq = body["result"]["seq"]
    finally:
        core.stop()
    spool = Spool(os.path.join(root, "capture", "spool"), 1 << 20, Metrics())
    kept, data = spool.read([seq])
    assert kept == [seq]
    sample = json.loads(data)
    assert sample["topic"] is None and sample["source"] == "invoke"  # a direct invocation
    assert sample["function"] == "forge" and sample["inputs"] == [1]
