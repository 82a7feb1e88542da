"""Core commands: ``core start`` runs the functions; ``invoke`` calls one on the running core."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from pyengine.cli import fleet_cmds
from pyengine.core.api import CoreClient, group_id, read_token
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
    s.add_argument("--debug", action="store_true",
                   help="error answers carry the handler's traceback (else only the log has it)")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.add_argument("--config", default=os.environ.get("PYENGINE_CORE_CONFIG"),
                   help="the core's configuration file, YAML or JSON: MQTT brokers, queues, "
                   "data capture (default: $PYENGINE_CORE_CONFIG; see docs/messaging.md)")
    s.add_argument("--mqtt", default=os.environ.get("PYENGINE_MQTT"), metavar="HOST:PORT",
                   help="the devices' MQTT broker (overrides the config file's mqtt host and "
                   "port; default: $PYENGINE_MQTT)")
    s.add_argument("--capture-s3", default=None, metavar="s3://BUCKET/PREFIX/",
                   help="where captured samples go (overrides the config file's capture.s3)")
    fleet_cmds.core_start_args(s)


def core_run(args: argparse.Namespace) -> int:
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
             "debug": True if args.debug else None}
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
    client = client_for(args)
    try:
        status, body = client.invoke(args.function, raw=text.encode())
    except PermissionError:
        raise
    except OSError as exc:
        raise OSError(f"cannot reach the core at {client.describe()}: {exc}") from None
    if status != 200:
        err = body.get("error", {})
        print(f"pyengine invoke: {args.function} failed ({status}): {err.get('type')}: "
              f"{err.get('message')}", file=sys.stderr)
        if err.get("traceback"):
            print(err["traceback"], file=sys.stderr, end="")
        return 1
    print(json.dumps(body.get("result")))
    return 0
