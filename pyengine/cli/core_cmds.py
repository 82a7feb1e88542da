"""Core commands: ``core start`` runs the functions, ``core status`` asks the running core
(through its authenticated API), ``core stop`` signals it (the pid its address file names, once
its socket proves that pid is the core); ``invoke`` calls a function on the running core."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import socket
import struct
import sys
import time
from typing import Any

from pyengine.cli import fleet_cmds
from pyengine.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Unavailable,
    add_json_flag,
    print_json,
    print_table,
)
from pyengine.core.api import ADDRESS_FILE, CoreClient, group_id, read_token
from pyengine.deploy import DeployError, default_root

#: Errors reported as "pyengine core: error: ..." (a fleet core's settings are checked at start;
#: a damaged state database says how to repair it).
ERRORS = (*fleet_cmds.ERRORS, DeployError)


def core_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="core_command", required=True)
    s = sub.add_parser("start", help="run the deployed group's functions in the foreground")
    s.add_argument("--root", default=None, help="the core's root (default: $PYENGINE_ROOT, "
                   "/var/lib/pyengine as root, ~/.local/share/pyengine otherwise)")
    s.add_argument("--socket", default=None, metavar="PATH",
                   help="the API's Unix socket (default: ROOT/core.sock, mode 0660)")
    s.add_argument("--socket-group", default=None, metavar="GROUP",
                   help="group of the socket: its members may invoke (default: the core's group)")
    s.add_argument("--port", type=int, default=None,
                   help="also listen on TCP at this port (8686 is usual; 0 picks a free one); "
                   "callers need the bearer token")
    s.add_argument("--host", default=None,
                   help="address of the TCP listener (127.0.0.1; any other needs the token)")
    s.add_argument("--token-file", default=None, metavar="PATH",
                   help="the TCP listener's bearer token, mode 0600 (default: ROOT/api.token, "
                   "written at first start)")
    s.add_argument("--no-token", action="store_true",
                   help="TCP without the token (refused unless --host is a loopback address)")
    s.add_argument("--console", action="store_true",
                   help="serve the local console, a web page, under /console on the TCP "
                   "listener (needs --port; log in with the API token; see docs/console.md)")
    s.add_argument("--debug", action="store_true",
                   help="error answers carry the handler's traceback (else only the log has it)")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="the least severe log records written to standard error (INFO)")
    s.add_argument("--config", default=os.environ.get("PYENGINE_CORE_CONFIG"),
                   help="the core's configuration file, YAML or JSON: MQTT brokers, queues, "
                   "data capture (default: $PYENGINE_CORE_CONFIG; see docs/messaging.md)")
    s.add_argument("--mqtt", default=os.environ.get("PYENGINE_MQTT"), metavar="HOST:PORT",
                   help="the devices' MQTT broker (overrides the config file's mqtt host and "
                   "port; default: $PYENGINE_MQTT)")
    s.add_argument("--capture-s3", default=None, metavar="s3://BUCKET/PREFIX/",
                   help="where captured samples go (overrides the config file's capture.s3)")
    fleet_cmds.core_start_args(s)
    st = sub.add_parser("status", help="show the running core: pid, listeners, group, functions")
    _running_core_args(st)
    st.add_argument("--tcp", action="store_true",
                    help="ask through the core's TCP listener (with its token) instead of its "
                    "Unix socket")
    st.add_argument("--token-file", default=None, metavar="PATH",
                    help="the bearer token for --tcp (default: the core's, named in its address "
                    "file)")
    add_json_flag(st, "the core's pid, listeners, readiness, group and functions")
    sp = sub.add_parser("stop", help="stop the running core (SIGTERM) and wait until it has "
                        "stopped its functions")
    _running_core_args(sp)
    add_json_flag(sp, "the root, the core's pid and whether it stopped")


def _running_core_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=None, help="the core's root, where its address file "
                   f"{ADDRESS_FILE} is (default: as for core start)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the core's answer or, for stop, its exit (30)")


def core_run(args: argparse.Namespace) -> int:
    if args.core_command == "status":
        return core_status(args)
    if args.core_command == "stop":
        return core_stop(args)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from pyengine.core import Core
    from pyengine.core.config import load_config

    root = args.root or default_root()
    config = load_config(args.config, mqtt=args.mqtt, capture_s3=args.capture_s3)
    # Flags given on the command line win over the configuration file's api section.
    given = {"socket": args.socket, "port": args.port, "host": args.host,
             "socket_group": group_id(args.socket_group) if args.socket_group else None,
             "token_file": args.token_file, "token": False if args.no_token else None,
             "debug": True if args.debug else None,
             "console": True if args.console else None}
    api = dataclasses.replace(config.api, **{k: v for k, v in given.items() if v is not None})
    core = Core(root, api=api, config=config)
    agent = fleet_cmds.fleet_agent(args, root, core)
    if agent is not None:
        core.services.append(agent)
    core.serve_forever()
    return 0


def invoke_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("function", help="the function's name")
    p.add_argument("--payload", default="null", help="the event: JSON text, or @FILE to read it")
    p.add_argument("--root", default=None,
                   help="the running core's root (its socket, from the address file there)")
    p.add_argument("--socket", default=None, metavar="PATH", help="the core's Unix socket")
    p.add_argument("--url", default=None,
                   help="the core's TCP listener, http://HOST:PORT (needs the token)")
    p.add_argument("--tcp", action="store_true",
                   help="use the TCP listener of the core in --root (and its token file)")
    p.add_argument("--token-file", default=None, metavar="PATH",
                   help="the bearer token for TCP (default: the core's, named in its address file;"
                   " or $PYENGINE_API_TOKEN)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer")
    add_json_flag(p, "the function's name, whether it succeeded, its result or error")


def client_for(args: argparse.Namespace) -> CoreClient:
    """The client ``pyengine invoke`` uses: --socket, --url (with a token), or the core in
    --root (its socket, or with --tcp its TCP listener)."""
    if args.socket:
        return CoreClient(socket_path=args.socket, timeout=args.timeout)
    if args.url:
        token: bytes | str | None = os.environ.get("PYENGINE_API_TOKEN")
        if args.token_file:
            token = read_token(args.token_file)
        return CoreClient(url=args.url, token=token, timeout=args.timeout)
    return CoreClient.for_root(args.root or default_root(), tcp=args.tcp,
                               token_file=args.token_file, timeout=args.timeout)


def invoke_run(args: argparse.Namespace) -> int:
    text = args.payload
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as fh:
            text = fh.read()
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--payload is not JSON ({exc}): {text[:80]!r}") from None
    client = _reachable(lambda: client_for(args))
    status, body = _reachable(lambda: client.invoke(args.function, raw=text.encode()), client)
    err = body.get("error") or {}
    if args.json:
        print_json({"function": args.function, "ok": status == 200, "status": status,
                    "result": body.get("result") if status == 200 else None,
                    "error": None if status == 200 else err})
    elif status == 200:
        print(json.dumps(body.get("result")))
    else:
        print(f"pyengine invoke: {args.function} failed ({status}): {err.get('type')}: "
              f"{err.get('message')}", file=sys.stderr)
        if err.get("traceback"):
            print(err["traceback"], file=sys.stderr, end="")
    if status == 200:
        return EXIT_OK
    # No such function, or a payload the core refused: the caller's input (2); else it failed.
    return EXIT_USAGE if status in (400, 404, 413) else EXIT_FAILED


def _reachable(call: Any, client: CoreClient | None = None) -> Any:
    """``call()``, with "no core is running" and a refused or vanished socket raised as
    :class:`Unavailable` (exit code 3). A refusal of this user (permission) stays an error."""
    try:
        return call()
    except PermissionError:
        raise
    except (FileNotFoundError, ConnectionError) as exc:
        where = f" at {client.describe()}" if client is not None else ""
        raise Unavailable(f"cannot reach the core{where}: {exc}") from None
    except OSError as exc:
        if client is None:  # the address file says no core runs
            raise Unavailable(str(exc)) from None
        raise OSError(f"cannot reach the core at {client.describe()}: {exc}") from None


def _address(root: str) -> dict[str, Any]:
    """The running core's address file, after checking that the pid it names is alive."""
    addr = _reachable(lambda: CoreClient.address(root))
    pid = addr.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        raise Unavailable(f"no core is running in {root}: its address file "
                          f"{os.path.join(root, ADDRESS_FILE)} names pid {pid}, which has exited")
    return addr


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _socket_owner(path: str, timeout: float) -> int:
    """The pid of the process listening on Unix socket ``path`` (SO_PEERCRED)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[0])


def core_status(args: argparse.Namespace) -> int:
    root = os.path.abspath(args.root or default_root())
    addr = _address(root)
    client = _reachable(lambda: CoreClient.for_root(root, tcp=args.tcp,
                                                    token_file=args.token_file,
                                                    timeout=args.timeout))
    status, ready = _reachable(lambda: client.get("/health/ready"), client)
    code, listing = _reachable(lambda: client.get("/functions"), client)
    if code != 200 or status not in (200, 503):
        error = listing.get("error", {}) if isinstance(listing, dict) else {}
        raise OSError(f"the core at {client.describe()} refused the status request ({code}): "
                      f"{error.get('message', listing)}")
    functions = [{k: f.get(k) for k in ("name", "status", "pinned", "workers", "busy",
                                         "max_workers", "invocations", "last_error")}
                 for f in listing["functions"]]
    out = {"root": root, "running": True, "pid": addr["pid"], "socket": addr.get("socket"),
           "url": addr.get("url"), "ready": status == 200, "group": listing.get("group"),
           "deployment": listing.get("deployment"), "functions": functions}
    if args.json:
        print_json(out)
        return EXIT_OK
    print(f"core:       running (pid {out['pid']}) in {root}")
    print(f"listening:  unix:{out['socket']}" + (f", {out['url']}" if out["url"] else ""))
    group = f"{out['group']} (deployment {out['deployment']})" if out["group"] else "none"
    print(f"group:      {group}")
    print(f"ready:      {'yes' if out['ready'] else 'no (functions starting)'}")
    if functions:
        print()
        print_table([[f["name"], str(f["status"]), "yes" if f["pinned"] else "no",
                      f"{f['workers']}/{f['max_workers']}", str(f["busy"]),
                      str(f["invocations"]), f["last_error"] or ""] for f in functions],
                    ["FUNCTION", "STATUS", "PINNED", "WORKERS", "BUSY", "INVOCATIONS",
                     "LAST ERROR"])
    return EXIT_OK


def core_stop(args: argparse.Namespace) -> int:
    root = os.path.abspath(args.root or default_root())
    addr = _address(root)
    pid = int(addr["pid"])
    # The pid in the file could belong to another process by now: signal it only when the
    # process listening on the core's socket is that pid.
    try:
        owner = _socket_owner(addr["socket"], args.timeout)
    except PermissionError:
        raise PermissionError(f"may not stop the core (pid {pid}): its socket {addr['socket']} "
                              "is for root, the core's user and the socket's group") from None
    except (FileNotFoundError, ConnectionError) as exc:
        raise Unavailable(f"no core answers on {addr['socket']} ({exc}); pid {pid} named in "
                          f"{os.path.join(root, ADDRESS_FILE)} is not the core") from None
    if owner != pid:
        raise OSError(f"the core's socket {addr['socket']} belongs to pid {owner}, not pid {pid} "
                      f"named in {os.path.join(root, ADDRESS_FILE)}; not signalling either")
    try:
        os.kill(pid, signal.SIGTERM)
    except PermissionError:
        raise PermissionError(f"may not stop the core (pid {pid}): run `pyengine core stop` as "
                              "root or as the core's user") from None
    deadline = time.monotonic() + args.timeout
    address_file = os.path.join(root, ADDRESS_FILE)
    # The core removes its address file last, after its functions have stopped.
    while _alive(pid) and os.path.exists(address_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped = not _alive(pid) or not os.path.exists(address_file)
    if args.json:
        print_json({"root": root, "pid": pid, "stopped": stopped})
    elif stopped:
        print(f"stopped the core (pid {pid}) in {root}")
    if not stopped:
        print(f"pyengine core: error: the core (pid {pid}) did not stop within {args.timeout:g} s",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
