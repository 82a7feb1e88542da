"""The checks of each field of a group file (sources, destinations, owners, limits, run_as,
environment, network, invoke); :mod:`pyengine.deploy.validate` applies them. Each problem is
recorded as ``field.path: message`` naming the offending value and the rule it breaks."""

from __future__ import annotations

import grp
import os
import re
from typing import Any, Optional

from pyengine.common.config_file import functions_allow_root
from pyengine.common.environment import environment_problem, environment_size_problem
from pyengine.common.paths import denied_destination
from pyengine.deploy.destinations import real_destination
from pyengine.deploy.group import (
    DeviceSpec,
    Endpoint,
    ModelSpec,
    Network,
    Owner,
    RunAs,
    VolumeSpec,
)
from pyengine.sources import scheme_for, schemes_text

ID_RE = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")


HANDLER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


KMS_KEY_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:kms:[a-z]{2}(-[a-z]+)+-\d:\d{12}:key/(mrk-)?[0-9a-fA-F-]{32,36}$"
)


PACKAGE_EXTS = (".tar.gz", ".tgz", ".zip")


PERMISSIONS = ("ro", "rw")


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class Checker:
    def __init__(self, base_dir: str, local_sources: bool = False) -> None:
        self.problems: list[str] = []
        self.base_dir = base_dir
        #: Also check that file:// packages exist (a deploy reports them as a failed resource).
        self.local_sources = local_sources

    def bad(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def mapping(
        self, where: str, v: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict:
        if not isinstance(v, dict):
            self.bad(where, f"expected a mapping with {', '.join(required or allowed)}, got {v!r}")
            return {}
        for k in v:
            if k not in allowed:
                self.bad(
                    f"{where}.{k}" if where else str(k),
                    f"unknown field {k!r}; expected one of {', '.join(allowed)}",
                )
        for k in required:
            if k not in v or v[k] is None:
                self.bad(f"{where}.{k}" if where else k, "required field is missing")
        return v

    def ident(self, where: str, v: Any) -> str:
        if not isinstance(v, str) or not ID_RE.match(v):
            self.bad(where, f"{v!r} must be 1-128 characters of letters, digits, ':', '_' or '-'")
            return ""
        return v

    def string(self, where: str, v: Any) -> str:
        if not isinstance(v, str) or not v:
            self.bad(where, f"expected a non-empty string, got {v!r}")
            return ""
        return v

    def expand(self, where: str, v: str) -> str:
        def sub(m: re.Match) -> str:
            name = m.group(1) or m.group(2)
            if name not in os.environ:
                self.bad(where, f"{v!r} uses ${{{name}}}, which is not set in the environment")
                return m.group(0)
            return os.environ[name]

        return _ENV_RE.sub(sub, os.path.expanduser(v) if v.startswith("~") else v)

    def permission(self, where: str, v: Any) -> str:
        if v not in PERMISSIONS:
            self.bad(where, f"{v!r} is not a permission; expected 'ro' or 'rw'")
            return "ro"
        return str(v)

    def number(self, where: str, v: Any, lo: float, hi: float, integer: bool = False) -> Any:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or not (lo <= v <= hi):
            kind = "an integer" if integer else "a number"
            self.bad(where, f"{v!r} must be {kind} from {lo:g} to {hi:g}")
            return lo
        return v


def check_source(c: Checker, where: str, raw: Any) -> str:
    src = c.string(where, raw)
    if not src:
        return ""
    src = c.expand(where, src)
    if "://" not in src:  # a plain path: relative to the group file's directory
        src = "file://" + os.path.normpath(os.path.join(c.base_dir, src))
    scheme = scheme_for(src)
    if scheme is None:
        c.bad(where, f"{raw!r}: unsupported source; expected {schemes_text()}")
        return src
    # The scheme's own check first; then what the deploy needs of any package it names.
    problem = scheme.check(src)
    if problem is None and scheme.names_package and not src.endswith(PACKAGE_EXTS):
        problem = "packages must be .tar.gz, .tgz or .zip"
    if problem is None and c.local_sources and scheme.exists is not None:
        problem = scheme.exists(src)
    if problem is not None:
        c.bad(where, f"{raw!r}: {problem}")
    return src


def check_destination(c: Checker, where: str, raw: Any) -> str:
    dest = c.string(where, raw)
    if not dest:
        return ""
    dest = c.expand(where, dest)
    if not os.path.isabs(dest):
        c.bad(where, f"{raw!r} is not an absolute path")
        return ""
    if ".." in dest.split("/"):
        c.bad(where, f"{raw!r} contains '..'; write the path without it")
        return ""
    dest = os.path.normpath(dest)
    if dest.startswith("//"):
        dest = "/" + dest.lstrip("/")
    problem = denied_destination(dest)
    if problem:
        c.bad(where, f"{raw!r} is {problem}")
        return dest
    real = real_destination(dest)
    problem = denied_destination(real)
    if problem:
        c.bad(where, f"{raw!r} is, through symbolic links, {real}, which is {problem}")
    return dest


def check_owner(c: Checker, where: str, raw: Any) -> Optional[Owner]:
    if raw is None:
        return None
    m = c.mapping(where, raw, ("group", "permission"), ("permission",))
    if not m:
        return None
    perm = c.permission(f"{where}.permission", m.get("permission"))
    g = m.get("group")
    gid: Optional[int] = None
    if isinstance(g, bool):
        c.bad(f"{where}.group", f"{g!r} must be a group id or name")
    elif isinstance(g, int):
        if not 0 <= g < 2**32 - 1:
            c.bad(f"{where}.group", f"{g!r} is not a valid group id")
        gid = g
    elif isinstance(g, str):
        try:
            gid = grp.getgrnam(g).gr_gid
        except KeyError:
            c.bad(f"{where}.group", f"group {g!r} does not exist on this machine")
    elif g is not None:
        c.bad(f"{where}.group", f"{g!r} must be a group id or name")
    return Owner(gid, perm)


def check_model(c: Checker, where: str, raw: Any) -> Optional[ModelSpec]:
    m = c.mapping(
        where,
        raw,
        ("source", "destination", "owner", "sha256", "max_unpacked_mb", "max_files",
         "kms_key_arn"),
        ("source", "destination"),
    )
    if not m:
        return None
    src = (
        check_source(c, f"{where}.source", m.get("source")) if m.get("source") is not None else ""
    )
    dest = (
        check_destination(c, f"{where}.destination", m.get("destination"))
        if m.get("destination") is not None
        else ""
    )
    owner = check_owner(c, f"{where}.owner", m.get("owner"))
    sha = m.get("sha256")
    if sha is not None:
        if not isinstance(sha, str) or not SHA256_RE.match(sha.lower()):
            c.bad(f"{where}.sha256", f"{sha!r} must be 64 hexadecimal digits (or null)")
            sha = None
        else:
            sha = sha.lower()
    cap = m.get("max_unpacked_mb")
    cap_b = (
        int(c.number(f"{where}.max_unpacked_mb", cap, 1, 2**40) * 2**20)
        if cap is not None
        else None
    )
    mf = m.get("max_files")
    files = (
        int(c.number(f"{where}.max_files", mf, 1, 10**8, integer=True)) if mf is not None else None
    )
    kms = check_kms_key(c, f"{where}.kms_key_arn", m.get("kms_key_arn"), src)
    return ModelSpec(src, dest, owner, sha, cap_b, files, kms)


def check_kms_key(c: Checker, where: str, raw: Any, source: str) -> Optional[str]:
    """``kms_key_arn``: the ARN of the KMS key (not an alias: IAM policies name keys) an S3 or
    SageMaker source is encrypted with."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not KMS_KEY_ARN_RE.match(raw):
        hint = (
            "; an alias does not work in an IAM policy's Resource: give the key's ARN "
            "(aws kms describe-key --key-id alias/NAME shows it)"
            if isinstance(raw, str) and (":alias/" in raw or raw.startswith("alias/"))
            else ""
        )
        c.bad(where, f"{raw!r} must be a KMS key ARN, "
              f"arn:aws:kms:REGION:ACCOUNT:key/KEY-ID{hint}")
        return None
    if source and not source.startswith(("s3://", "sagemaker://")):
        c.bad(where, f"{raw!r}: only s3:// and sagemaker:// sources are encrypted with KMS keys "
              f"(the source is {source!r}); remove kms_key_arn")
        return None
    return raw


def check_device(c: Checker, where: str, raw: Any) -> Optional[DeviceSpec]:
    m = c.mapping(where, raw, ("path",), ("path",))
    p = m.get("path") if m else None
    if p is None:
        return None
    path = c.string(f"{where}.path", p)
    if path and (
        not path.startswith("/dev/") or ".." in path.split("/") or os.path.normpath(path) != path
    ):
        c.bad(
            f"{where}.path",
            f"{p!r}: device resources must be character or block devices under /dev",
        )
    return DeviceSpec(path)


def check_volume(c: Checker, where: str, raw: Any) -> Optional[VolumeSpec]:
    """``volume: {path}``: an absolute host directory, refused where a model destination is
    (system directories, root's home, a top-level directory), as written and through symbolic
    links. That it exists, is a directory and lies outside the core's root is checked by the
    deploy (which knows the root) and again by the core."""
    m = c.mapping(where, raw, ("path",), ("path",))
    p = m.get("path") if m else None
    if p is None:
        return None
    before = len(c.problems)
    path = check_destination(c, f"{where}.path", p)
    if path and len(c.problems) == before:
        real = os.path.realpath(path)
        problem = denied_destination(real)
        if problem and real != real_destination(path):
            c.bad(f"{where}.path", f"{p!r} is, through symbolic links, {real}, which is {problem}")
    return VolumeSpec(path) if path else None


#: Largest ``concurrency`` of a function (each call at once is a worker process).
CONCURRENCY_MAX = 256


def check_run_as(c: Checker, where: str, raw: Any) -> Optional[RunAs]:
    """``run_as: {uid, gid}``: numeric ids. uid or gid 0 is refused here unless the core
    configuration named by ``PYENGINE_CORE_CONFIG`` allows root functions; the core refuses
    them again when its own configuration does not (see :func:`pyengine.core.policy.plan`)."""
    if raw is None:
        return None
    m = c.mapping(where, raw, ("uid", "gid"), ("uid", "gid"))
    ids: dict[str, int] = {}
    for key in ("uid", "gid"):
        v = m.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32 - 1:
            c.bad(f"{where}.{key}", f"{v!r} must be a numeric {key} from 0 to {2**32 - 2}")
            continue
        ids[key] = v
    if len(ids) < 2:
        return None
    for key in ("uid", "gid"):
        if ids[key] == 0 and not root_functions_allowed():
            c.bad(f"{where}.{key}", "0 runs the function as root, which the core refuses "
                  "unless its configuration sets functions.allow_root: true (and "
                  "PYENGINE_CORE_CONFIG names that file when deploying); choose another id")
    return RunAs(ids["uid"], ids["gid"])


def root_functions_allowed() -> bool:
    """Whether the core configuration in ``PYENGINE_CORE_CONFIG`` (if any) sets
    ``functions.allow_root`` (validation's view; the core checks its own configuration)."""
    return functions_allow_root(os.environ.get("PYENGINE_CORE_CONFIG"))


def some(names: list[str], at_most: int = 20) -> str:
    """``names`` for a message: the first ``at_most`` (a huge group repeats them per problem)."""
    more = f", ... ({len(names) - at_most} more)" if len(names) > at_most else ""
    return ", ".join(names[:at_most]) + more if names else "none"


def check_environment(c: Checker, where: str, raw: Any) -> dict[str, str]:
    """A function's ``environment``: names to strings (numbers and booleans are written out,
    null is empty), each entry vetted by :func:`environment_problem`, the whole capped."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        c.bad(where, f"expected a mapping of variable names to values, got {type(raw).__name__}"
              f" {raw!r}")
        return {}
    env: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str):
            c.bad(where, f"{k!r} is not a variable name (a string of letters, digits and _)")
            continue
        if v is not None and not isinstance(v, (str, int, float)):
            c.bad(f"{where}.{k}", f"expected a string, number, boolean or null, got "
                  f"{type(v).__name__} {v!r}")
            continue
        value = "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        problem = environment_problem(k, value)
        if problem:
            c.bad(f"{where}.{k}", problem)
            continue
        env[k] = value
    problem = environment_size_problem(env)
    if problem:
        c.bad(where, problem)
    return env


_HOST_RE = re.compile(r"^(\*|[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\])$")


def _port(c: Checker, where: str, v: Any) -> Optional[int]:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        c.bad(where, f"{v!r} must be a TCP port from 1 to 65535")
        return None
    return v


def _endpoint(c: Checker, where: str, v: Any) -> Optional[Endpoint]:
    text = v if isinstance(v, str) else ""
    host, sep, port = text.rpartition(":")
    if not sep or not _HOST_RE.match(host) or not port.isdigit():
        c.bad(where, f"{v!r} must be HOST:PORT (e.g. mqtt.local:8883, 127.0.0.1:9000, "
              "[::1]:443 or *:443)")
        return None
    p = _port(c, where, int(port))
    return Endpoint(host, p) if p is not None else None


def check_network(c: Checker, where: str, raw: Any) -> Optional[Network]:
    """``network``: absent or ``none`` (no network), ``any``, a list of HOST:PORT to connect to,
    or a mapping ``{connect: [HOST:PORT...], bind: [PORT...]}``."""
    if raw is None or raw == "none":
        return None
    if raw == "any":
        return Network(any=True)
    if isinstance(raw, list):
        m: dict[str, Any] = {"connect": raw}
        connect_where = where
    elif isinstance(raw, dict):
        m = c.mapping(where, raw, ("connect", "bind"))
        connect_where = f"{where}.connect"
    else:
        c.bad(where, f"{raw!r} must be 'none', 'any', a list of HOST:PORT, or a mapping with "
              "connect (HOST:PORT list) and bind (port list)")
        return None
    out: dict[str, list[Any]] = {"connect": [], "bind": []}
    for key, check, at in (("connect", _endpoint, connect_where), ("bind", _port, f"{where}.bind")):
        items = m.get(key) or []
        if not isinstance(items, list):
            c.bad(at, f"expected a list, got {items!r}")
            continue
        for k, item in enumerate(items):
            got = check(c, f"{at}[{k}]", item)
            if got is not None:
                out[key].append(got)
    return Network(connect=tuple(out["connect"]), bind=tuple(sorted(set(out["bind"]))))


def invoke_list(c: Checker, where: str, raw: Any, fname: str,
                 names: list[str]) -> tuple[str, ...]:
    """``invoke``: names of other functions of the group (``names``) this one may call."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.bad(where, f"expected a list of function names, got {raw!r}")
        return ()
    out: list[str] = []
    for k, name in enumerate(raw):
        if not isinstance(name, str) or not ID_RE.match(name):
            c.bad(f"{where}[{k}]", f"{name!r} must be the name of a function of the group")
        elif name == fname:
            c.bad(f"{where}[{k}]", f"{name!r} is this function; a function calls its own code "
                  "directly, not through context.invoke")
        elif name not in names:
            c.bad(f"{where}[{k}]", f"{name!r} is not a function of the group (functions: "
                  f"{some(names)})")
        elif name in out:
            c.bad(f"{where}[{k}]", f"{name!r} is listed twice")
        else:
            out.append(name)
    return tuple(out)
