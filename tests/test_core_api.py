"""Who may call the core, and what a function may reach: real cores, real workers, real sockets.

- The API: a Unix socket (mode 0660, a group of its own) and a TCP listener behind a bearer
  token; local users outside the group and callers without the token get nothing.
- Functions: ``context.invoke`` only to the functions the group lists; no network unless the
  group grants it (Landlock TCP port rules, and an empty network namespace); the core's API is
  out of reach of a function by TCP, by its socket's path and by abstract sockets.

The grant tests run with the core as root (functions as nobody) and as an unprivileged user
(functions as that same user, where only the kernel's rules and the core's peer checks separate
them from the core).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading

import pytest
from core_helpers import CoreProcess, chown_tree, deploy_group, function

from pyengine.core import landlock, netns
from pyengine.deploy.errors import GroupError
from pyengine.deploy.validate import validate_group

NOBODY = 65534
STRANGER = 4242  # a local user with no business with the core
API_GROUP = 4321  # the socket's group in these tests
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HAS_NET_RULES = landlock.abi_version() >= landlock.NET_ABI
HAS_SCOPES = landlock.abi_version() >= landlock.SCOPE_ABI
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="starting processes as other users "
                                "needs root")
needs_net_rules = pytest.mark.skipif(not HAS_NET_RULES, reason="the kernel lacks Landlock ABI 4 "
                                     "(TCP port rules)")

FN = """
import json, os, socket
from pyengine.core.api import CoreClient
from pyengine.core.function_api import InvocationError

def _err(exc):
    return {"ok": False, "error": type(exc).__name__, "errno": getattr(exc, "errno", None),
            "message": str(exc)}

def function_handler(event, context):
    op = event.get("op")
    try:
        if op == "invoke":
            return {"ok": True, "value": context.invoke(event["target"], event.get("payload"))}
        if op == "connect":
            with socket.create_connection((event["host"], event["port"]), timeout=3) as s:
                return {"ok": True, "value": s.recv(64).decode()}
        if op == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", (event["host"], event["port"]))
            return {"ok": True, "value": "sent"}
        if op == "bind":
            with socket.socket() as s:
                s.bind(("127.0.0.1", event["port"]))
            return {"ok": True, "value": "bound"}
        if op == "abstract":
            with socket.socket(socket.AF_UNIX) as s:
                s.connect("\\0" + event["address"])
            return {"ok": True, "value": "connected"}
        if op == "api":
            client = (CoreClient(socket_path=event["socket"], timeout=5) if event.get("socket")
                      else CoreClient(url=event["url"], timeout=5))
            return {"ok": True, "value": client.invoke(event["target"], {"op": "whoami"})[0]}
        if op == "api_grandchild":  # a detached grandchild (setsid, double fork) tries the API
            out = os.path.join(os.environ["HOME"], "grandchild.json")
            code = ("import json, os, sys\\n"
                    "if os.fork(): os._exit(0)\\n"
                    "os.setsid()\\n"
                    "from pyengine.core.api import CoreClient\\n"
                    "try: got = CoreClient(socket_path=sys.argv[1], timeout=5).invoke('callee')[0]\\n"
                    "except OSError as exc: got = type(exc).__name__\\n"
                    "open(sys.argv[2] + '.tmp', 'w').write(json.dumps(got))\\n"
                    "os.rename(sys.argv[2] + '.tmp', sys.argv[2])\\n")
            import subprocess, sys, time
            subprocess.run([sys.executable, "-c", code, event["socket"], out], check=True)
            for _ in range(100):
                if os.path.exists(out):
                    with open(out) as fh:
                        return {"ok": True, "value": json.load(fh)}
                time.sleep(0.05)
            return {"ok": False, "error": "no answer from the grandchild"}
        if op == "raise":
            raise ValueError("the callee failed")
        if op == "whoami":
            return {"ok": True, "value": context.function_name}
    except InvocationError as exc:
        return {"ok": False, "error": "InvocationError", "status": exc.status,
                "error_type": exc.error_type}
    except (OSError, RecursionError) as exc:
        return _err(exc)
    return {"ok": True, "value": event}
"""


class Banner:
    """A loopback TCP server that greets each connection with 'hello'."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def open_tmp():
    """A directory every user can traverse (pytest's own tmp is private to root)."""
    path = tempfile.mkdtemp(prefix="pyengine-api-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def banner():
    server = Banner()
    yield server
    server.close()


def build_root(base: str, banner_port: int, owner: int | None = None) -> str:
    """A group: ``caller`` may invoke ``callee`` (and back, for the cycle test); ``nogrant`` may
    invoke nothing and has no network; ``netport`` may connect to the banner's port only;
    ``netany`` has unrestricted network."""
    os.makedirs(base)
    root = os.path.join(base, "root")
    functions = [
        function(base, "caller", FN, pinned=True, invoke=["callee"]),
        function(base, "callee", FN, invoke=["caller"]),
        function(base, "nogrant", FN),
        function(base, "netport", FN, network=[f"127.0.0.1:{banner_port}"]),
        function(base, "netany", FN, network="any"),
    ]
    deploy_group(base, root, [], functions)
    os.chmod(root, 0o755)  # so that only the socket's own mode keeps other users out
    if owner is not None:
        chown_tree(base, owner, owner)
    return root


def result(core: CoreProcess, name: str, **event: object) -> dict:
    status, body = core.invoke(name, event)
    assert status == 200, body
    return body["result"]


def check_grants(core: CoreProcess, banner: Banner) -> None:
    """What every core must enforce, whoever it runs as."""
    # context.invoke: granted, refused, a failing target, a cycle.
    got = result(core, "caller", op="invoke", target="callee", payload={"op": "whoami"})
    assert got == {"ok": True, "value": {"ok": True, "value": "callee"}}
    got = result(core, "nogrant", op="invoke", target="callee", payload={"op": "whoami"})
    assert got["ok"] is False and got["error"] == "PermissionError", got
    assert "may not invoke 'callee'" in got["message"]
    got = result(core, "caller", op="invoke", target="callee", payload={"op": "raise"})
    assert got == {"ok": False, "error": "InvocationError", "status": 500,
                   "error_type": "ValueError"}, got
    got = result(core, "caller", op="invoke", target="callee",
                 payload={"op": "invoke", "target": "caller"})
    assert got["value"]["error"] == "RecursionError", got
    assert "caller -> callee -> caller" in got["value"]["message"]
    # Network: only what the group grants.
    tcp_port = int(core.url.rsplit(":", 1)[1])
    for name in ("nogrant", "caller", "callee"):
        got = result(core, name, op="connect", host="127.0.0.1", port=banner.port)
        assert got["ok"] is False and got["error"] == "PermissionError", (name, got)
        got = result(core, name, op="connect", host="127.0.0.1", port=tcp_port)
        assert got["ok"] is False and got["error"] == "PermissionError", (name, got)
        got = result(core, name, op="bind", port=0)
        assert got["ok"] is False and got["error"] == "PermissionError", (name, got)
    assert result(core, "netport", op="connect", host="127.0.0.1", port=banner.port) == \
        {"ok": True, "value": "hello"}
    got = result(core, "netport", op="connect", host="127.0.0.1", port=tcp_port)
    assert got["error"] == "PermissionError", got  # the granted port only
    assert result(core, "netany", op="connect", host="127.0.0.1", port=banner.port)["ok"]
    # The API: a function with network reaches the TCP listener, but has no token.
    assert result(core, "netany", op="api", url=core.url, target="callee") == \
        {"ok": True, "value": 401}
    # ... and the socket's path is not a way in: 403 for a function's process (same uid as an
    # unprivileged core), or no connection at all (functions of a root core are not in its
    # group). The root is closed to functions by Landlock only for file access: connect() to a
    # pathname socket is not a file access Landlock mediates.
    got = result(core, "nogrant", op="api", socket=core.client.socket_path, target="callee")
    if _core_uid(core) == 0:
        assert got["error"] == "PermissionError", got
    else:
        assert got == {"ok": True, "value": 403}, got
        assert "a function's process may not use the core's API" in core.log()
        # Nor through a process that left the worker's session (double fork, setsid).
        got = result(core, "nogrant", op="api_grandchild", socket=core.client.socket_path)
        assert got == {"ok": True, "value": 403}, got


def _core_uid(core: CoreProcess) -> int:
    with open(f"/proc/{core.proc.pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("Uid:")).split()[1])


def _as_user(uid: int, code: str, groups: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    """Run Python ``code`` as ``uid`` (gid ``uid``, the given supplementary groups) via setpriv."""
    group_args = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", *group_args,
                           sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=60, cwd="/")


CLIENT = """
import json, sys
from pyengine.core.api import CoreClient
kind, where, token = sys.argv[1:4] if len(sys.argv) > 3 else (*sys.argv[1:3], None)
client = CoreClient(socket_path=where) if kind == "unix" else CoreClient(url=where, token=token)
try:
    print(json.dumps(client.invoke("callee", {"op": "whoami"})))
except OSError as exc:
    print(json.dumps([type(exc).__name__, str(exc)]))
"""


def _client_as(uid: int, *argv: str, groups: tuple[int, ...] = ()) -> object:
    code = f"import sys; sys.argv = ['client', *{list(argv)!r}]\n" + CLIENT
    done = _as_user(uid, code, groups)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def root_core(open_tmp, banner):
    root = build_root(os.path.join(open_tmp, "as-root"), banner.port)
    proc = CoreProcess(root, args=("--port", "0", "--socket-group", str(API_GROUP)))
    yield proc.wait_ready()
    proc.stop()


@needs_root
def test_socket_is_for_the_core_user_and_its_group_only(root_core):
    path = root_core.client.socket_path
    assert path == os.path.join(root_core.root, "core.sock")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, API_GROUP)
    # The core's own user.
    status, body = root_core.invoke("callee", {"op": "whoami"})
    assert status == 200 and body["result"]["value"] == "callee"
    # A member of the socket's group.
    status, body = _client_as(STRANGER, "unix", path, groups=(API_GROUP,))
    assert status == 200 and body["result"]["value"] == "callee", body
    # Other local users: not even a connection.
    for uid in (NOBODY, STRANGER):
        got = _client_as(uid, "unix", path)
        assert got[0] == "PermissionError" and "permission denied" in got[1], got


@needs_root
def test_tcp_needs_the_token(root_core):
    token_file = os.path.join(root_core.root, "api.token")
    st = os.stat(token_file)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert root_core.url.startswith("http://127.0.0.1:")
    # The token works; none, a wrong one, or another scheme get 401.
    status, body = root_core.tcp_client().invoke("callee", {"op": "whoami"})
    assert status == 200 and body["result"]["value"] == "callee"
    with open(token_file) as fh:
        token = fh.read().strip()
    for wrong in ("", "x" * len(token), token[:-1]):
        status, body = root_core.tcp_client(token=wrong).invoke("callee", {"op": "whoami"})
        assert status == 401 and body["error"]["type"] == "Unauthorized", (wrong, body)
    status, _ = root_core.tcp_client(token=wrong).get("/functions")
    assert status == 401
    status, _ = root_core.tcp_client(token=wrong).get("/metrics")
    assert status == 401
    # /health/live stays open.
    assert root_core.tcp_client(token="").get("/health/live")[0] == 200
    # Another local user, without the token (it cannot read the file).
    status, body = _client_as(NOBODY, "tcp", root_core.url, "")
    assert status == 401, body
    done = _as_user(NOBODY, f"open({token_file!r}).read()")
    assert done.returncode != 0 and "PermissionError" in done.stderr


@needs_root
def test_pyengine_invoke_uses_socket_or_tcp(root_core):
    base = [sys.executable, "-m", "pyengine", "invoke", "callee", "--root", root_core.root,
            "--payload", '{"op": "whoami"}']
    for extra in ((), ("--tcp",)):
        out = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"ok": True, "value": "callee"}
    # As a user outside the socket's group: a clear refusal.
    done = subprocess.run(["setpriv", f"--reuid={STRANGER}", f"--regid={STRANGER}",
                           "--clear-groups", *base], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": REPO}, cwd="/")
    assert done.returncode == 1 and "permission denied" in done.stderr, done.stderr


@needs_root
@needs_net_rules
def test_grants_core_as_root(root_core, banner):
    assert "network: landlock ABI" in root_core.log()
    check_grants(root_core, banner)


@needs_root
@needs_net_rules
def test_grants_core_as_ordinary_user(open_tmp, banner):
    root = build_root(os.path.join(open_tmp, "as-user"), banner.port, owner=NOBODY)
    proc = CoreProcess(root, user=NOBODY, args=("--port", "0"))
    try:
        proc.wait_ready()
        assert result(proc, "callee", op="whoami") == {"ok": True, "value": "callee"}
        # The core's own user may call over the socket; another local user cannot connect.
        path = proc.client.socket_path
        assert os.stat(path).st_uid == NOBODY and stat.S_IMODE(os.stat(path).st_mode) == 0o660
        status, body = _client_as(NOBODY, "unix", path)
        assert status == 200 and body["result"]["value"] == "callee", body
        got = _client_as(STRANGER, "unix", path)
        assert got[0] == "PermissionError", got
        check_grants(proc, banner)
    finally:
        proc.stop()


@needs_root
@pytest.mark.skipif(not HAS_SCOPES, reason="the kernel lacks Landlock ABI 6 (scoping)")
def test_abstract_sockets_and_udp_are_out_of_reach(root_core):
    name = f"pyengine-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX)
    server.bind("\0" + name)
    server.listen()
    try:
        got = result(root_core, "nogrant", op="abstract", address=name)
        assert got["ok"] is False and got["errno"] in (1, 111), got  # EPERM / other netns
        got = result(root_core, "netany", op="abstract", address=name)
        assert got["ok"] is False and got["error"] == "PermissionError", got  # Landlock scope
    finally:
        server.close()
    if not netns.available(NOBODY, NOBODY):
        got = result(root_core, "nogrant", op="udp", host="127.0.0.1", port=9)
        assert got["ok"] is False, got  # no route out of an empty network namespace
        assert result(root_core, "netany", op="udp", host="127.0.0.1", port=9)["ok"]


@needs_root
@pytest.mark.skipif(bool(netns.available(NOBODY, NOBODY)), reason="this kernel refuses "
                    "unprivileged user namespaces (needed for an empty network namespace)")
def test_network_namespace_fallback(open_tmp, banner):
    """As on a kernel without Landlock network rules: an empty network namespace."""
    root = build_root(os.path.join(open_tmp, "netns"), banner.port)
    proc = CoreProcess(root, env={"PYENGINE_NETWORK": "netns"})
    try:
        proc.wait_ready()
        log = proc.log()
        assert "network: netns (functions without a network grant get no network at all)" in log
        got = result(proc, "nogrant", op="connect", host="127.0.0.1", port=banner.port)
        assert got["ok"] is False and got["error"] in ("OSError", "ConnectionRefusedError"), got
        # Ports cannot be enforced without Landlock: the core says so, and the grant is open.
        assert "netport: its network grant lists ports, which only Landlock ABI 4+ can " \
            "enforce" in log
        assert result(proc, "netport", op="connect", host="127.0.0.1", port=banner.port)["ok"]
        assert result(proc, "caller", op="invoke", target="callee",
                      payload={"op": "whoami"})["value"]["value"] == "callee"
    finally:
        proc.stop()


@needs_root
def test_no_network_rules_at_all_is_said(open_tmp, banner):
    root = build_root(os.path.join(open_tmp, "nonet"), banner.port)
    proc = CoreProcess(root, env={"PYENGINE_NETWORK": "off"})
    try:
        proc.wait_ready()
        assert "network: none available — functions have unrestricted network" in proc.log()
        assert "nogrant: it has no network grant, but this machine can take no network " \
            "away" in proc.log()
    finally:
        proc.stop()


def test_non_loopback_tcp_needs_the_token(open_tmp):
    root = os.path.join(open_tmp, "exposed")
    os.makedirs(root)
    cmd = [sys.executable, "-m", "pyengine", "core", "start", "--root", root, "--port", "0"]
    done = subprocess.run([*cmd, "--host", "0.0.0.0", "--no-token"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "--host 0.0.0.0 without the API token" in done.stderr, done.stderr
    assert not os.path.exists(os.path.join(root, "core.sock"))
    # A token file others can read is refused too.
    token = os.path.join(root, "api.token")
    with open(token, "w") as fh:
        fh.write("t" * 40)
    os.chmod(token, 0o644)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "chmod 600" in done.stderr, done.stderr  # PermissionError


def test_tracebacks_only_with_debug(open_tmp, banner):
    root = build_root(os.path.join(open_tmp, "debug"), banner.port)
    proc = CoreProcess(root, args=("--debug",))
    try:
        proc.wait_ready()
        status, body = proc.invoke("callee", {"op": "raise"})
        assert status == 500 and "Traceback" in body["error"]["traceback"]
        assert "the callee failed" in body["error"]["traceback"]
    finally:
        proc.stop()


def test_group_file_invoke_and_network_fields(tmp_path):
    code = tmp_path / "fn"
    code.mkdir()
    (code / "handler.py").write_text("def function_handler(e, c):\n    return e\n")

    def fn(name: str, **extra: object) -> dict:
        return {"name": name, "handler": "handler.function_handler", "code": str(code), **extra}

    good = validate_group({"name": "g", "functions": [
        fn("a", invoke=["b"], network=["mqtt.local:8883", "[::1]:443", "*:80"]),
        fn("b", network={"connect": ["127.0.0.1:9000"], "bind": [8080]}),
        fn("c", network="any"), fn("d", network="none")]})
    a, b, c, d = good.functions
    assert a.invoke == ("b",) and a.network is not None
    assert a.network.connect_ports() == (80, 443, 8883)
    assert b.network is not None and b.network.bind == (8080,)
    assert c.network is not None and c.network.any and d.network is None
    with pytest.raises(GroupError) as err:
        validate_group({"name": "g", "functions": [
            fn("a", invoke=["a", "ghost", 3], network=["nohost", "h:0", "h:70000", 5]),
            fn("b", invoke="a", network={"connect": "x:1", "bind": ["80"], "listen": []}),
            fn("c", network="everything")]})
    text = str(err.value)
    for expected in (
        "functions[0].invoke[0]: 'a' is this function",
        "functions[0].invoke[1]: 'ghost' is not a function of the group (functions: a, b, c)",
        "functions[0].invoke[2]: 3 must be the name of a function of the group",
        "functions[0].network[0]: 'nohost' must be HOST:PORT",
        "functions[0].network[1]: 0 must be a TCP port from 1 to 65535",
        "functions[0].network[2]: 70000 must be a TCP port from 1 to 65535",
        "functions[0].network[3]: 5 must be HOST:PORT",
        "functions[1].invoke: expected a list of function names, got 'a'",
        "functions[1].network.connect: expected a list, got 'x:1'",
        "functions[1].network.bind[0]: '80' must be a TCP port from 1 to 65535",
        "functions[1].network.listen: unknown field 'listen'; expected one of connect, bind",
        "functions[2].network: 'everything' must be 'none', 'any', a list of HOST:PORT",
    ):
        assert expected in text, (expected, text)


def test_config_file_api_section():
    from pyengine.core.config import ConfigError, validate_config

    api = validate_config({"api": {"socket": "/run/pyengine/core.sock", "socket_group": 0,
                                   "port": 8686, "token_file": "/etc/pyengine/api.token",
                                   "debug": True}}).api
    assert (api.socket, api.socket_group, api.port, api.host, api.token, api.debug) == \
        ("/run/pyengine/core.sock", 0, 8686, "127.0.0.1", True, True)
    with pytest.raises(ConfigError) as err:
        validate_config({"api": {"socket": "rel.sock", "socket_group": "no-such-group",
                                 "port": 70000, "token": "yes", "listen": 1}})
    for expected in ("api.socket: 'rel.sock' must be an absolute path",
                     "api.socket_group: socket group 'no-such-group' does not exist",
                     "api.port: 70000 must be an integer from 0 to 65535",
                     "api.token: 'yes' must be true or false",
                     "api.listen: unknown field 'listen'"):
        assert expected in str(err.value), (expected, str(err.value))


def test_token_file_outside_the_root_is_closed_to_functions(tmp_path):
    """A token file in a directory every function reads (/opt here) drops that directory's rule."""
    from pyengine.core.group import FunctionSpec
    from pyengine.core.policy import plan

    if not os.path.isdir("/opt"):
        pytest.skip("this machine has no /opt")
    code = tmp_path / "code"
    code.mkdir()
    spec = FunctionSpec(name="f", handler="handler.function_handler", code_dir=str(code))
    token = "/opt/pyengine-test/api.token"
    open_rules = plan(spec, str(tmp_path / "root"), str(tmp_path / "scratch"), []).rules
    closed = plan(spec, str(tmp_path / "root"), str(tmp_path / "scratch"), [token]).rules
    assert ("/opt", "ro") in open_rules
    assert not [p for p, _ in closed if token.startswith(p.rstrip("/") + "/")]
