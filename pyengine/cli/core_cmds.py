"""Core commands: ``core start`` runs the functions; ``invoke`` calls one on the running core."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request

from pyengine.cli import fleet_cmds
from pyengine.core import ADDRESS_FILE, Core, default_root
from pyengine.core.config import load_config
from pyengine.core.server import DEFAULT_PORT

#: Errors reported as "pyengine core: error: ..." (a fleet core's settings are checked at start).
ERRORS = fleet_cmds.ERRORS


def core_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="core_command", required=True)
    s = sub.add_parser("start", help="run the deployed group's functions in the foreground")
    s.add_argument("--root", default=None, help="the core's root (default: $PYENGINE_ROOT, "
                   "/var/lib/pyengine as root, ~/.local/share/pyengine otherwise)")
    s.add_argument("--host", default="127.0.0.1", help="address of the HTTP API (127.0.0.1)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port of the HTTP API ({DEFAULT_PORT}; 0 picks a free one)")
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
    root = args.root or default_root()
    config = load_config(args.config, mqtt=args.mqtt, capture_s3=args.capture_s3)
    core = Core(root, host=args.host, port=args.port, config=config)
    agent = fleet_cmds.fleet_agent(args, root, core)
    if agent is not None:
        core.services.append(agent)
    core.serve_forever()
    return 0


def invoke_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("function", help="the function's name")
    p.add_argument("--payload", default="null", help="the event: JSON text, or @FILE to read it")
    p.add_argument("--root", default=None, help="the running core's root (finds its address)")
    p.add_argument("--url", default=None, help="the core's API URL (instead of --root)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer")


def core_url(root: str | None) -> str:
    """The API URL of the core running in ``root`` (from the address file it writes)."""
    root = root or default_root()
    path = os.path.join(root, ADDRESS_FILE)
    try:
        with open(path) as fh:
            return str(json.load(fh)["url"])
    except FileNotFoundError:
        raise OSError(f"no core is running in {root} (no {path}); start one with "
                      f"`pyengine core start --root {root}`") from None


def invoke_run(args: argparse.Namespace) -> int:
    text = args.payload
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as fh:
            text = fh.read()
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--payload is not JSON ({exc}): {text[:80]!r}") from None
    url = (args.url or core_url(args.root)).rstrip("/") + f"/functions/{args.function}/invoke"
    req = urllib.request.Request(url, data=text.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        err = body.get("error", {})
        print(f"pyengine invoke: {args.function} failed ({exc.code}): {err.get('type')}: "
              f"{err.get('message')}", file=sys.stderr)
        if err.get("traceback"):
            print(err["traceback"], file=sys.stderr, end="")
        return 1
    except urllib.error.URLError as exc:
        raise OSError(f"cannot reach the core at {url}: {exc.reason}") from None
    print(json.dumps(body.get("result")))
    return 0
