"""Fleet commands: ``fleet keygen|publish|promote|rollback|resume|refresh|enroll|status`` and
the ``core start --fleet`` options."""

from __future__ import annotations

import argparse
import datetime
import os
from typing import Any

from pyengine.cli.output import add_json_flag, print_json
from pyengine.common.aws import AwsSettings
from pyengine.fleet.document import DOC_EXPIRES_S, TIMESTAMP_EXPIRES_S
from pyengine.fleet.history import FleetError
from pyengine.fleet.store import MAX_DOCUMENT

#: What a fleet command reports as "pyengine fleet: error: ..." (besides ValueError/OSError).
ERRORS = (FleetError,)


def s3_settings(args: argparse.Namespace) -> AwsSettings:
    return AwsSettings(args.s3_endpoint or None, args.s3_region or None)


def add_location_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", required=True, metavar="s3://BUCKET/PREFIX",
                   help="where the fleet's documents and statuses live")
    p.add_argument("--s3-endpoint", default=None, metavar="URL",
                   help="S3 API endpoint (default: boto3's, e.g. $AWS_ENDPOINT_URL_S3)")
    p.add_argument("--s3-region", default=None, help="S3 region (default: boto3's)")
    p.add_argument("--mqtt", default=None, metavar="HOST[:PORT]",
                   help="MQTT broker that announces documents (optional; cores also poll)")
    p.add_argument("--mqtt-config", default=None, metavar="FILE",
                   help="a core configuration file whose fleet_mqtt (else mqtt) section gives "
                   "the broker with its TLS, credentials and topic prefix (--mqtt overrides "
                   "its address)")


def core_start_args(s: argparse.ArgumentParser) -> None:
    """The options ``core start`` gains for fleets."""
    g = s.add_argument_group("fleet (see `pyengine fleet --help`)")
    g.add_argument("--fleet", default=None, metavar="s3://BUCKET/PREFIX",
                   help="follow this fleet's signed deployment documents")
    g.add_argument("--core-name", default=None,
                   help="this core's name in the fleet (default: the host name)")
    g.add_argument("--trust", action="append", default=[], metavar="PUBLIC_KEY",
                   help="public key whose signatures are accepted (repeatable; required with "
                   "--fleet)")
    g.add_argument("--trust-timestamp", action="append", default=[], metavar="PUBLIC_KEY",
                   help="public key accepted on the fleet's timestamp only (the key `fleet "
                   "refresh` runs with from cron; repeatable)")
    g.add_argument("--fleet-poll", type=float, default=30.0, metavar="SECONDS",
                   help="check the bucket this often without announcements (30); "
                   "announcements come through the core's broker (--mqtt or --config)")
    g.add_argument("--fleet-debounce", type=float, default=1.0, metavar="SECONDS",
                   help="at most one check per this many seconds on announcements (1)")
    g.add_argument("--fleet-max-document", type=int, default=MAX_DOCUMENT, metavar="BYTES",
                   help="the most read of a document without a signed size: the timestamp, "
                   f"statuses ({MAX_DOCUMENT})")
    g.add_argument("--s3-endpoint", default=None, metavar="URL", help="S3 API endpoint")
    g.add_argument("--s3-region", default=None, help="S3 region")


def add_signing_args(p: argparse.ArgumentParser) -> None:
    """Options of every command that signs: the key and the lifetimes."""
    p.add_argument("--key", required=True, help="the private key that signs (fleet keygen)")
    p.add_argument("--expires", type=float, default=DOC_EXPIRES_S / 86400, metavar="DAYS",
                   help="lifetime of the document or enrollment signed now "
                   f"({DOC_EXPIRES_S / 86400:g}); `fleet refresh` renews it at half-life")
    p.add_argument("--timestamp-expires", type=float, default=TIMESTAMP_EXPIRES_S,
                   metavar="SECONDS", help="lifetime of the timestamp signed now "
                   f"({TIMESTAMP_EXPIRES_S:g}); cores report 'stale' after it unless "
                   "`fleet refresh` runs again")


def _lifetimes(args: argparse.Namespace) -> dict[str, float]:
    return {"expires_s": args.expires * 86400, "timestamp_expires_s": args.timestamp_expires}


def fleet_agent(args: argparse.Namespace, root: str, core: Any) -> Any:
    """The fleet agent ``core start --fleet`` runs (None without --fleet)."""
    if not args.fleet:
        for opt in ("core_name", "s3_endpoint"):
            if getattr(args, opt):
                raise ValueError(f"--{opt.replace('_', '-')} needs --fleet")
        return None
    from pyengine.fleet import Fleet, FleetAgent, TrustedKey

    if not args.trust:
        raise ValueError("--fleet needs --trust PUBLIC_KEY: a core only applies documents "
                         "signed by a key it trusts (make a pair with `pyengine fleet keygen`)")

    def health() -> dict[str, Any]:
        return {"ready": core.ready(),
                "functions": [{k: f[k] for k in ("name", "status", "last_error")}
                              for f in core.functions()]}

    return FleetAgent(root, Fleet.parse(args.fleet, s3_settings(args), args.fleet_max_document),
                      args.core_name or os.uname().nodename,
                      [TrustedKey.load(p) for p in args.trust], mqtt=core.config.fleet_broker(),
                      poll_s=args.fleet_poll, health=health, running=core.await_deployment,
                      metrics=core.metrics, debounce_s=args.fleet_debounce,
                      timestamp_keys=[TrustedKey.load(p) for p in args.trust_timestamp])


def fleet_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="fleet_command", required=True)
    k = sub.add_parser("keygen", help="make an Ed25519 key pair for signing documents")
    k.add_argument("key", help="the private key file to write (the public key goes to KEY.pub)")
    k.add_argument("--public", default=None, help="where the public key goes (KEY.pub)")
    k.add_argument("--force", action="store_true", help="overwrite existing key files")
    add_json_flag(k, "the key id and the files written")

    pub = sub.add_parser("publish", help="publish a group to the fleet as a new version")
    pub.add_argument("group", help="the group file (YAML or JSON)")
    add_location_args(pub)
    add_signing_args(pub)
    pub.add_argument("--percent", type=float, default=100.0,
                     help="share of cores that get it first (canary); promote widens it (100)")
    pub.add_argument("--max-failures", type=int, default=None,
                     help="halt the rollout when more cores than this fail (default: never)")
    add_json_flag(pub, "the signed document")

    pro = sub.add_parser("promote", help="widen the current rollout")
    add_location_args(pro)
    add_signing_args(pro)
    pro.add_argument("--percent", type=float, default=100.0, help="new share of cores (100)")
    pro.add_argument("--force", action="store_true",
                     help="promote even a halted rollout (cores still refuse a halted version)")
    add_json_flag(pro, "the signed document")

    rb = sub.add_parser("rollback", help="publish the previous version again, to every core")
    add_location_args(rb)
    add_signing_args(rb)
    rb.add_argument("--to", type=int, default=None, metavar="VERSION",
                    help="the version to go back to (default: the newest earlier version that "
                    "reached every core)")
    add_json_flag(rb, "the signed document")

    rs = sub.add_parser("resume", help="clear a halt: accept the failures reported so far")
    add_location_args(rs)
    add_signing_args(rs)
    add_json_flag(rs, "the signed document")

    rf = sub.add_parser("refresh", help="re-sign the timestamp (run from cron more often than "
                        "--timestamp-expires) and renew documents at half-life")
    add_location_args(rf)
    add_signing_args(rf)
    rf.add_argument("--trust", action="append", default=[], metavar="PUBLIC_KEY",
                    help="the fleet's public key, when --key is a timestamp-only key (cores "
                    "trust it with --trust-timestamp): only the timestamp is signed")
    add_json_flag(rf, "the signed timestamp")

    en = sub.add_parser("enroll", help="enroll cores' status keys (only enrolled cores' signed "
                        "statuses count)")
    add_location_args(en)
    add_signing_args(en)
    en.add_argument("--core", action="append", default=[], metavar="NAME=PUBLIC_KEY",
                    help="a core and its public key file (ROOT/fleet/core.pem.pub on the core); "
                    "repeatable")
    en.add_argument("--remove", action="append", default=[], metavar="NAME",
                    help="take a core off the list (repeatable)")
    add_json_flag(en, "the signed enrollment")

    st = sub.add_parser("status", help="every core's version and state")
    add_location_args(st)
    st.add_argument("--trust", action="append", default=[], metavar="PUBLIC_KEY",
                    help="public key to verify documents with (repeatable)")
    st.add_argument("--key", default=None, help="or the private key (its public half is used)")
    add_json_flag(st, "the document, the timestamp and every core's status")


def _broker(args: argparse.Namespace) -> Any:
    """The announcements' broker: ``--mqtt-config``'s fleet_mqtt (else mqtt) settings, with
    ``--mqtt``'s address; ``--mqtt`` alone; or None."""
    if not args.mqtt_config:
        return args.mqtt
    from pyengine.core.config import load_config

    broker = load_config(args.mqtt_config, mqtt=args.mqtt).fleet_broker()
    if broker is None:
        raise ValueError(f"--mqtt-config {args.mqtt_config}: it names no broker (fleet_mqtt "
                         "or mqtt)")
    return broker


def _ago(t: Any, full: bool = False) -> str:
    if not isinstance(t, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(t).strftime(
        "%Y-%m-%d %H:%M:%S" if full else "%H:%M:%S")


def _print_status(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(out)
        return
    uri, d, ts = out["fleet"], out["document"], out["timestamp"]
    if d is None:
        print(f"{uri}: nothing published")
    else:
        ro = d["rollout"]
        line = (f"{uri}: {d['summary']}; {len(d['on_version'])}/{len(out['cores'])} "
                f"enrolled cores on it, {len(d['targeted'])} targeted, {len(d['failed'])} failed")
        if ro.get("max_failures") is not None:
            line += f" (halts above {ro['max_failures']})"
        if d["halted"]:
            line += f" -- HALTED by {', '.join(d['halted_by'])} (`fleet resume` to accept)"
        print(line)
    if ts is None:
        print("timestamp: none (cores apply nothing until `pyengine fleet refresh`)")
    else:
        print(f"timestamp {ts['serial']}: valid until {_ago(ts['expires'], True)}"
              + (" -- EXPIRED: cores report stale; run `pyengine fleet refresh`"
                 if ts["stale"] else ""))
    if out["enrollment_problem"]:
        print(f"enrollment: {out['enrollment_problem']}")
    print(f"{'CORE':<20} {'VERSION':>7} {'STATE':<9} {'FRESH':<7} {'HEALTH':<8} {'UPDATED':<8} "
          "MESSAGE")
    for name, st in sorted(out["cores"].items()):
        h = st.get("health") or {}
        health = "-" if not h else ("ready" if h.get("ready") else "starting")
        msg = st.get("message") or ""
        if st.get("refused"):
            msg += f" [refused: {st['refused'][-1].get('reason')}]"
        print(f"{name:<20} {st.get('version') or '-':>7} {st.get('state') or '-':<9} "
              f"{st.get('freshness') or '-':<7} {health:<8} {_ago(st.get('updated')):<8} {msg}")
    for name in sorted(set(out["enrolled"]) - set(out["cores"])):
        print(f"{name:<20} {'-':>7} {'silent':<9} enrolled, no verified status")
    for name, why in sorted(out["unverified"].items()):
        print(f"{name:<20} {'-':>7} {'unverified':<9} ignored: {why}")


def fleet_run(args: argparse.Namespace) -> int:
    from pyengine import fleet as fl

    if args.fleet_command == "keygen":
        kid = fl.keygen(args.key, args.public, overwrite=args.force)
        if args.json:
            print_json({"key_id": kid, "private": args.key,
                        "public": args.public or args.key + ".pub"})
            return 0
        print(f"key {kid}: private {args.key} (keep it secret), public "
              f"{args.public or args.key + '.pub'} (give it to cores with --trust)")
        return 0
    where = fl.Fleet.parse(args.fleet, s3_settings(args))
    if args.fleet_command == "status":
        trusted = [fl.TrustedKey.load(p) for p in args.trust]
        if args.key:
            trusted.append(fl.SigningKey(args.key).public)
        if not trusted:
            raise ValueError("fleet status needs --trust PUBLIC_KEY (or --key) to verify the "
                             "fleet's documents")
        _print_status(fl.status(where, trusted), args.json)
        return 0
    key = fl.SigningKey(args.key)
    life = _lifetimes(args)
    broker = _broker(args)
    if args.fleet_command == "refresh":
        ts = fl.refresh(where, key, mqtt=broker,
                        trusted=[fl.TrustedKey.load(p) for p in args.trust] or None, **life)
        if args.json:
            print_json(ts)
            return 0
        print(f"signed timestamp {ts['serial']} of {where.uri} (serial "
              f"{ts['deployment']['serial']}), valid until {_ago(ts['expires'], True)}")
        return 0
    if args.fleet_command == "enroll":
        add = {}
        for spec in args.core:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--core {spec!r} must be NAME=PUBLIC_KEY_FILE")
            add[name] = fl.TrustedKey.load(path)
        if not add and not args.remove:
            raise ValueError("fleet enroll needs --core NAME=PUBLIC_KEY or --remove NAME")
        doc = fl.enroll(where, key, add=add, remove=args.remove, mqtt=broker, **life)
        if args.json:
            print_json(doc)
            return 0
        names = ", ".join(f"{n} ({c['key_id']})" for n, c in sorted(doc["cores"].items()))
        print(f"enrollment {doc['serial']} of {where.uri}: {names or 'no cores'}")
        return 0
    if args.fleet_command == "publish":
        doc = fl.publish(args.group, where, key, percent=args.percent,
                         max_failures=args.max_failures, mqtt=broker, **life)
    elif args.fleet_command == "promote":
        doc = fl.promote(where, key, percent=args.percent, force=args.force, mqtt=broker,
                         **life)
    elif args.fleet_command == "resume":
        doc = fl.resume(where, key, mqtt=broker, **life)
    else:
        doc = fl.rollback(where, key, to=args.to, mqtt=broker, **life)
    if args.json:
        print_json(doc)
    else:
        from pyengine.fleet.document import summary

        print(f"published {summary(doc)} to {where.uri}")
    return 0
