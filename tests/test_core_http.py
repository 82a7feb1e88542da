"""The core's HTTP API under abuse, its signals and its logs: a real core, real sockets.

One core runs with its fd limit lowered to 1024 (soft and hard, so that it cannot raise it),
a 1 MiB body cap, a 2 s idle timeout and logs rotated at 8 KiB. Each test is one of the
reproductions of the hostile review (issue 18, "HTTP API (core)").
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from core_helpers import CoreProcess, deploy_group, function
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FD_LIMIT = 1024
BODY_MAX = 1 << 20
LOG_MAX = 8192
SCRATCH_MB = 2

FN = r"""
import hashlib, json, os, sys, time

def _frame_to_core(data):
    # A hostile function: raw bytes on every socket it holds (its call socket among them).
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                os.write(int(fd), data)
        except OSError:
            pass

def function_handler(event, context):
    if isinstance(event, bytes):
        return {"type": "bytes", "len": len(event), "sha256": hashlib.sha256(event).hexdigest()}
    op = event.get("op") if isinstance(event, dict) else None
    if op == "nan":
        return {"values": [float("nan"), float("inf"), -float("inf"), 1.5]}
    if op == "frame":  # the fuzzer's frame as this call's answer, then the worker ends
        _frame_to_core(bytes.fromhex(event["hex"]))
        os._exit(0)
    if op == "badframe":
        _frame_to_core(b"\x00\x00\x00\x05hello")
        time.sleep(5)
        return "unreachable"
    if op == "fill":
        path = os.path.join(os.environ["TMPDIR"], "fill")
        try:
            with open(path, "wb") as fh:
                for _ in range(event["mb"]):
                    fh.write(b"f" * (1 << 20))
                    fh.flush()
                    os.fsync(fh.fileno())
            return {"wrote": event["mb"], "dir": os.environ["TMPDIR"]}
        except OSError as exc:
            return {"error": exc.strerror, "size": os.path.getsize(path)}
    if op == "deep":
        v = []
        for _ in range(event["n"]):
            v = [v]
        return v
    if op == "print":
        for i in range(event.get("n", 1)):
            print(event["text"], i)
        print(event["text"], "on stderr", file=sys.stderr)
        return "printed"
    if op == "forge":
        import datetime
        out = {}
        print("2026-01-01T00:00:00.000Z core[1] ERROR forged by a function")
        sys.stdout.flush()
        for fd in (1, 2):
            try:
                os.ftruncate(fd, 0)
                out[fd] = "truncated"
            except OSError as exc:
                out[fd] = type(exc).__name__
        out["fds"] = sorted(os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                            if os.path.exists(f"/proc/self/fd/{fd}"))
        return out
    return {"type": type(event).__name__, "value": event}
"""


@pytest.fixture(scope="module")
def core():
    base = tempfile.mkdtemp(prefix="pyengine-http-")  # every user can traverse it
    os.chmod(base, 0o755)
    root = os.path.join(base, "root")
    deploy_group(base, root, [], [function(base, "echo", FN, pinned=True, timeout_s=20)])
    config = os.path.join(base, "core.json")
    with open(config, "w") as fh:
        json.dump({"api": {"body_max_mb": BODY_MAX / (1 << 20), "idle_timeout_s": 2},
                   "logs": {"max_mb": LOG_MAX / (1 << 20), "files": 2},
                   "functions": {"scratch_mb": SCRATCH_MB}}, fh)
    proc = CoreProcess(root, args=("--config", config), nofile=FD_LIMIT)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()
        shutil.rmtree(base, ignore_errors=True)


def connect(core: CoreProcess, timeout: float = 20.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while True:  # a Unix socket's full backlog says EAGAIN to a socket with a timeout
        try:
            s.connect(os.path.join(core.root, "core.sock"))
            return s
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def read_answers(s: socket.socket) -> list[tuple[int, dict[str, str], bytes]]:
    """Every answer on ``s`` until the core closes it (or 3 s of silence after one)."""
    data = b""
    answers = []
    while True:
        try:
            chunk = s.recv(1 << 16)
        except socket.timeout:
            if answers:
                return answers
            raise
        if not chunk:
            return answers
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            n = int(headers.get("content-length", "0"))
            if len(rest) < n:
                break
            answers.append((int(lines[0].split()[1]), headers, rest[:n]))
            data = rest[n:]
            s.settimeout(3)


def raw(core: CoreProcess, request: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    with connect(core) as s:
        s.sendall(request)
        return read_answers(s)


def post(path: str, body: bytes, ctype: str = "application/json", extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_idle_connection_flood_leaves_the_core_answering(core):
    """1,100 idle connections against an fd limit of 1024: the core caps its connections below
    the limit, drops the oldest idle ones, answers a new caller and times the idle ones out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1300:
        if hard != resource.RLIM_INFINITY and hard < 1300:
            pytest.skip(f"the test's own fd limit ({hard}) cannot hold 1,100 connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1300, hard))
    flood = []
    try:
        for _ in range(1100):
            flood.append(connect(core, timeout=10))
        time.sleep(0.5)
        fds = open_fds(core.proc.pid)
        assert fds < FD_LIMIT, fds
        t0 = time.monotonic()
        status, body = core.invoke("echo", {"op": "x"})
        assert status == 200 and body["result"]["value"] == {"op": "x"}
        assert time.monotonic() - t0 < 5
        # The idle ones are closed by the core after its 2 s idle timeout.
        flood[-1].settimeout(10)
        assert flood[-1].recv(10) == b""
    finally:
        for s in flood:
            s.close()
    assert core.proc.poll() is None


def test_big_bodies_are_refused_early_and_memory_stays_flat(core):
    before = rss_kb(core.proc.pid)
    big = b"[" + b"1," * (30 << 20) + b"1]"  # 60 MB of JSON
    for _ in range(3):
        with connect(core) as s:
            s.sendall(f"POST /functions/echo/invoke HTTP/1.1\r\nContent-Length: {len(big)}"
                      "\r\n\r\n".encode())
            status, _, body = read_answers(s)[0]
            assert status == 413 and b"over the core's limit" in body
    # A caller that sends the whole body before reading still gets the answer.
    status, body = core.client.request("POST", "/functions/echo/invoke", big)  # type: ignore[union-attr]
    assert status == 413, body
    # Chunked: refused when the chunks pass the cap.
    chunk = b"x" * (256 << 10)
    with connect(core) as s:
        s.sendall(b"POST /functions/echo/invoke HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(16):
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        s.shutdown(socket.SHUT_WR)
        answers = read_answers(s)
    assert answers and answers[0][0] == 413
    grown_mb = (rss_kb(core.proc.pid) - before) / 1024
    assert grown_mb < 64, grown_mb


def test_chunked_body_is_decoded_and_never_a_second_request(core):
    inner = b'"GET /functions HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(inner[i:i + 7]), inner[i:i + 7])
                      for i in range(0, len(inner), 7))
    answers = raw(core, b"POST /functions/echo/invoke HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
    assert len(answers) == 1
    status, _, body = answers[0]
    assert status == 200
    assert json.loads(body)["result"]["value"] == json.loads(inner)
    # Both framings at once: refused and closed (nothing after it is read as a request).
    smuggle = (b"POST /functions/echo/invoke HTTP/1.1\r\nContent-Length: 4\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /functions HTTP/1.1\r\n\r\n")
    answers = raw(core, smuggle)
    assert [a[0] for a in answers] == [400]
    answers = raw(core, post("/functions/echo/invoke", b"{}", extra="Transfer-Encoding: gzip\r\n"
                             ).replace(b"Content-Length: 2\r\n", b""))
    assert [a[0] for a in answers] == [501]
    answers = raw(core, b"POST /functions/echo/invoke HTTP/1.1\r\nContent-Length: 2\r\n"
                  b"Content-Length: 3\r\n\r\n{}")
    assert [a[0] for a in answers] == [400]
    for size in (b"0x2", b"+2", b"2_0", b"\xb2", b" "):  # int() would take some of these
        answers = raw(core, b"POST /functions/echo/invoke HTTP/1.1\r\nTransfer-Encoding: "
                      b"chunked\r\n\r\n" + size + b"\r\n{}\r\n0\r\n\r\n")
        assert [a[0] for a in answers] == [400], size
        answers = raw(core, b"POST /functions/echo/invoke HTTP/1.1\r\nContent-Length: " + size
                      + b"\r\n\r\n{}")
        assert [a[0] for a in answers] == [400], size


def test_expect_100_continue(core):
    with connect(core) as s:
        s.sendall(b"POST /functions/echo/invoke HTTP/1.1\r\nContent-Length: 7\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        assert s.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b'{"a":1}')
        status, _, body = read_answers(s)[0]
    assert status == 200 and json.loads(body)["result"]["value"] == {"a": 1}
    answers = raw(core, b"POST /functions/echo/invoke HTTP/1.1\r\nContent-Length: 99999999\r\n"
                  b"Expect: 100-continue\r\n\r\n")
    assert [a[0] for a in answers] == [413]


@pytest.mark.parametrize("body, expect", [
    (b"[" * 1000 + b"]" * 1000, 400),
    (b"[" * 100000 + b"]" * 100000, 400),
    (b"1" * 5000, 400),
    (b'{"a": ' + b"9" * 5000 + b"}", 400),
    (b'{"a": "\xff"}', 400),
])
def test_hostile_json_gets_an_answer(core, body, expect):
    answers = raw(core, post("/functions/echo/invoke", body, extra="Connection: close\r\n"))
    assert [a[0] for a in answers] == [expect]
    assert json.loads(answers[0][2])["error"]["type"] == "MalformedPayload"


def test_deep_result_and_malformed_worker_frame_get_an_answer(core):
    status, body = core.invoke("echo", {"op": "deep", "n": 5000})
    assert status in (500, 502) and body["error"]["type"], body
    status, body = core.invoke("echo", {"op": "badframe"})
    assert status == 502 and body["error"]["type"] == "WorkerDied", body
    assert "malformed" in body["error"]["message"]
    status, body = core.invoke("echo", {"op": "after"})
    assert status == 200 and body["result"]["value"] == {"op": "after"}


def test_nan_and_infinity_are_sent_as_null(core):
    answers = raw(core, post("/functions/echo/invoke", b'{"op": "nan"}',
                             extra="Connection: close\r\n"))
    status, _, body = answers[0]
    assert status == 200

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the answer: {body!r}")
    answer = json.loads(body, parse_constant=refuse)
    assert answer["result"] == {"values": [None, None, None, 1.5]}
    assert answer["nonfinite"] == 3


def test_wrong_method_is_405_and_unknown_paths_404(core):
    status, headers, body = raw(core, b"GET /functions/echo/invoke HTTP/1.1\r\n"
                                b"Connection: close\r\n\r\n")[0]
    assert status == 405 and headers["allow"] == "POST"
    assert json.loads(body)["error"]["type"] == "MethodNotAllowed"
    status, headers, _ = raw(core, post("/functions", b"{}", extra="Connection: close\r\n"))[0]
    assert status == 405 and headers["allow"] == "GET"
    status, _, body = raw(core, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")[0]
    assert status == 404
    message = json.loads(body)["error"]["message"]
    assert message.startswith("no route GET /;") and "POST /functions/NAME/invoke" in message
    status, _, _ = raw(core, b"POST /functions/echo/invoke HTTP/1.1\r\n"
                       b"Connection: close\r\n\r\n")[0]
    assert status == 411


def test_oversized_request_line_and_headers_are_refused(core):
    assert [a[0] for a in raw(core, b"GET /" + b"a" * (100 << 10) + b" HTTP/1.1\r\n\r\n")] \
        == [414]
    assert [a[0] for a in raw(core, b"GET /functions HTTP/1.1\r\n"
                              + b"X-A: b\r\n" * 1000 + b"\r\n")] == [431]
    assert [a[0] for a in raw(core, b"GET /functions HTTP/1.1\r\nX: " + b"b" * (100 << 10)
                              + b"\r\n\r\n")] == [431]


@pytest.mark.parametrize("ctype", ["application/octet-stream", "image/png"])
def test_binary_payloads_reach_the_handler_as_bytes(core, ctype):
    data = bytes(range(256)) * 100 + b"\x89PNG\r\n\x1a\n"
    status, _, body = raw(core, post("/functions/echo/invoke", data, ctype,
                                     "Connection: close\r\n"))[0]
    assert status == 200
    assert json.loads(body)["result"] == {"type": "bytes", "len": len(data),
                                          "sha256": hashlib.sha256(data).hexdigest()}


def test_keep_alive_serves_several_requests_on_one_connection(core):
    answers = raw(core, post("/functions/echo/invoke", b'{"n": 1}')
                  + post("/functions/echo/invoke", b'{"n": 2}', extra="Connection: close\r\n"))
    assert [json.loads(a[2])["result"]["value"] for a in answers] == [{"n": 1}, {"n": 2}]


def test_function_output_goes_to_its_own_log_and_cannot_forge_the_core(core):
    secret = "payload-secret-7f3a"
    status, body = core.invoke("echo", {"op": "print", "text": "hello from echo",
                                        "unused": secret})
    assert status == 200
    status, body = core.invoke("echo", {"op": "forge", "unused": secret})
    assert status == 200
    out = body["result"]
    assert out["1"] != "truncated" and out["2"] != "truncated"  # pipes, not files
    assert not any(os.path.join(core.root, "logs") in f for f in out["fds"])
    core_log = os.path.join(core.root, "logs", "core.log")
    deadline = time.monotonic() + 5
    while "forged" not in core.function_log("echo") and time.monotonic() < deadline:
        time.sleep(0.05)
    flog = core.function_log("echo")
    pid = core.get("/functions")[1]["functions"][0]["pids"][0]
    assert f"echo[{pid}] hello from echo 0\n" in flog
    assert f"echo[{pid}] hello from echo on stderr\n" in flog
    assert f"echo[{pid}] 2026-01-01T00:00:00.000Z core[1] ERROR forged" in flog
    for line in flog.splitlines():
        assert f" echo[{pid}] " in line[:40] or " echo[" in line[:40], line
    with open(core_log) as fh:
        text = fh.read()
    assert "forged" not in text and "forged" not in core.core_log()
    assert secret not in text and secret not in core.core_log() and secret not in flog
    assert " core[" in text.splitlines()[0] and "INFO" in text.splitlines()[0]


def test_function_log_rotates(core):
    line = "r" * 200
    status, _ = core.invoke("echo", {"op": "print", "text": line, "n": 150})  # 30 KB
    assert status == 200
    path = os.path.join(core.root, "logs", "echo.log")
    deadline = time.monotonic() + 5
    while f"{line} on stderr" not in core.function_log("echo") and time.monotonic() < deadline:
        time.sleep(0.05)  # the last line written
    assert os.path.exists(f"{path}.1") and os.path.exists(f"{path}.2")
    assert not os.path.exists(f"{path}.3")  # files: 2
    for name in (path, f"{path}.1", f"{path}.2"):
        assert os.path.getsize(name) <= LOG_MAX


def test_pyengine_logs_since_and_follow(core):
    old, marker = f"old-line-{time.time()}", f"since-marker-{time.time()}"
    core.invoke("echo", {"op": "print", "text": old})
    time.sleep(4)
    core.invoke("echo", {"op": "print", "text": marker})
    t_marker = time.time()
    time.sleep(0.3)
    cmd = [sys.executable, "-m", "pyengine", "logs", "echo", "--root", core.root]
    # The window starts 2 s before the marker (less the command's own start-up time).
    window = f"{time.time() - t_marker + 2:.2f}s"
    recent = subprocess.run([*cmd, "--since", window], capture_output=True, text=True,
                            timeout=60)
    assert recent.returncode == 0, recent.stderr
    assert marker in recent.stdout and old not in recent.stdout
    everything = subprocess.run([*cmd, "--since", "10m", "--json"], capture_output=True,
                                text=True, timeout=60)
    rows = [json.loads(x) for x in everything.stdout.splitlines()]
    assert any(marker in r["line"] for r in rows) and all(r["time"] for r in rows)
    bad = subprocess.run([*cmd, "--since", "ten minutes"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "'ten minutes' is not a duration" in bad.stderr
    missing = subprocess.run([*cmd[:4], "nosuch", "--root", core.root], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode != 0 and "no log for 'nosuch'" in missing.stderr
    assert "echo" in missing.stderr
    follow = subprocess.Popen([*cmd, "--follow", "--since", "10m"], stdout=subprocess.PIPE)
    got = b""

    def read_until(text: bytes) -> None:
        nonlocal got
        deadline = time.monotonic() + 30
        while text not in got and time.monotonic() < deadline:
            if select.select([follow.stdout], [], [], 1)[0]:
                got += os.read(follow.stdout.fileno(), 1 << 16)  # type: ignore[union-attr]
        assert text in got
    try:
        read_until(marker.encode())  # the lines so far, then it follows
        core.invoke("echo", {"op": "print", "text": "followed-line"})
        read_until(b"followed-line")
    finally:
        follow.kill()
        follow.wait()
        follow.stdout.close()  # type: ignore[union-attr]


def test_signals(core):
    core_log = os.path.join(core.root, "logs", "core.log")
    os.replace(core_log, f"{core_log}.moved")  # as logrotate does
    os.kill(core.proc.pid, signal.SIGUSR1)
    os.kill(core.proc.pid, signal.SIGPIPE)
    deadline = time.monotonic() + 5
    while not os.path.exists(core_log) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(core_log) as fh:
        assert "SIGUSR1: logs reopened" in fh.read()
    os.kill(core.proc.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 5
    text = ""
    while "SIGUSR2: function echo" not in text and time.monotonic() < deadline:
        time.sleep(0.05)
        with open(core_log) as fh:
            text = fh.read()
    assert "SIGUSR2: function echo: ready" in text and "API connections" in text
    assert core.proc.poll() is None
    assert core.invoke("echo", {"op": "alive"})[0] == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_scratch_is_a_tmpfs_of_its_quota(core):
    if "a tmpfs of its own" not in core.core_log():
        pytest.skip("the core could not mount a tmpfs here (it needs CAP_SYS_ADMIN): "
                    + next((ln for ln in core.core_log().splitlines()
                            if "cannot mount a tmpfs" in ln), "no reason logged"))
    status, body = core.invoke("echo", {"op": "fill", "mb": 3 * SCRATCH_MB})
    assert status == 200
    assert body["result"]["error"] == "No space left on device"
    assert body["result"]["size"] <= SCRATCH_MB << 20
    scratch = os.path.join(core.root, "run", "echo")
    with open("/proc/self/mountinfo") as fh:
        mounts = [line.split() for line in fh]
    assert any(m[4] == scratch and "tmpfs" in m for m in mounts)
    st = os.statvfs(scratch)
    assert st.f_blocks * st.f_frsize == SCRATCH_MB << 20
    os.unlink(os.path.join(scratch, "fill"))


def test_scratch_quota_checked_without_a_tmpfs():
    """Where the core cannot mount (PYENGINE_SCRATCH=check does as a core that is not root):
    over its quota a function takes no new calls, with an error naming the scratch."""
    base = tempfile.mkdtemp(prefix="pyengine-scratch-")
    os.chmod(base, 0o755)
    root = os.path.join(base, "root")
    deploy_group(base, root, [], [function(base, "echo", FN, pinned=True)])
    config = os.path.join(base, "core.json")
    with open(config, "w") as fh:
        json.dump({"functions": {"scratch_mb": 1}}, fh)
    proc = CoreProcess(root, args=("--config", config), env={"PYENGINE_SCRATCH": "check"})
    try:
        proc.wait_ready()
        assert proc.invoke("echo", {"op": "fill", "mb": 3})[1]["result"]["wrote"] == 3
        time.sleep(2.1)  # the check's period
        status, body = proc.invoke("echo", {"op": "x"})
        scratch = os.path.join(root, "run", "echo")
        assert status == 507 and body["error"]["type"] == "ScratchFull", body
        assert scratch in body["error"]["message"] and "quota of 1 MB" in body["error"]["message"]
        os.unlink(os.path.join(scratch, "fill"))
        time.sleep(2.1)
        assert proc.invoke("echo", {"op": "x"})[0] == 200
    finally:
        proc.stop()
        shutil.rmtree(base, ignore_errors=True)


_TOKENS = [b"GET", b"POST", b"PUT", b"HEAD", b"G\x00T", b"/", b"/functions",
           b"/functions/echo/invoke", b"/health/live", b"/../..", b"HTTP/1.1", b"HTTP/1.0",
           b"HTTP/9", b" ", b"\r\n", b"\n", b"Content-Length: ", b"Transfer-Encoding: chunked",
           b"Transfer-Encoding: identity", b"Content-Type: image/png", b"Connection: close",
           b"0", b"5", b"-1", b"99999999999999999999", b"ff", b"{", b"}", b"[", b"]", b'"',
           b"\xff", b":", b";", b"\r\n\r\n"]


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=40)), max_size=40))
def test_fuzzed_requests_get_an_answer_or_a_clean_close(core, parts):
    """Any bytes: an HTTP answer or a close within the idle timeout, never a hang, and the core
    lives on."""
    request = b"".join(parts)
    with connect(core, timeout=15) as s:
        try:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        t0 = time.monotonic()
        try:
            first = s.recv(12)
        except ConnectionResetError:
            first = b""
        assert first == b"" or first.startswith(b"HTTP/1.1 "), (request, first)
        assert time.monotonic() - t0 < 15
    assert core.proc.poll() is None


_FRAMES = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda body: len(body).to_bytes(4, "big") + body, st.binary(max_size=64)),
    st.builds(lambda text: len(text.encode()).to_bytes(4, "big") + text.encode(),
              st.sampled_from(['{"op": "publish"}', '{"op": 1}', '[1]', '"x"', 'NaN', '{"ok": true}',
                               '{"op": "invoke", "function": []}', '{"ok": false, "error": 5}',
                               "[" * 5000 + "]" * 5000, '{"op": "capture", "sample": 1}'])),
    st.just(b"\xff\xff\xff\xff"))


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(_FRAMES)
def test_fuzzed_worker_frames_get_the_caller_an_answer(core, frame):
    """Whatever a worker writes on its channel, the caller gets an HTTP answer."""
    status, body = core.invoke("echo", {"op": "frame", "hex": frame.hex()})
    assert status in (200, 500, 502), (frame, status, body)
    assert core.invoke("echo", {"op": "after"})[0] == 200
