"""The core's own configuration: MQTT brokers and data capture (``core start --config FILE``).

```yaml
mqtt:                         # the devices' broker (subscriptions' "devices")
  host: 127.0.0.1
  port: 1883                  # 8883 is usual with TLS
  tls: {ca: /etc/pyengine/ca.pem, cert: /etc/pyengine/core.pem, key: /etc/pyengine/core.key}
  username: core              # password: from password_file, else $PYENGINE_MQTT_PASSWORD
  password_file: /etc/pyengine/mqtt.pass
  client_id: pyengine-core    # default: pyengine-<hostname>-<hash of the core's root>
  keepalive_s: 30
cloud: {host: ..., port: 8883, tls: {...}}   # optional: subscriptions' "cloud"
queue_size: 1000              # messages waiting per function before new ones are dropped
capture:
  s3: s3://bucket/prefix/     # where pyengine.capture() samples go; none: they stay spooled
  endpoint_url: null          # an S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL_S3)
  region: null
  spool_mb: 256               # the local spool's cap; the oldest samples are evicted past it
  batch_size: 100             # samples per uploaded object
  batch_s: 5                  # the longest a sample waits for its batch to fill
functions:                    # how the core runs functions (see docs/core.md)
  uid_first: 70000            # a root core gives each function its own uid from this range
  uid_count: 30000
  processes_max: 512          # RLIMIT_NPROC: tasks (processes and threads) per function
api:                          # who may call the core (see docs/core.md; flags of core start win)
  socket: /var/lib/pyengine/core.sock   # default: ROOT/core.sock, mode 0660
  socket_group: pyengine      # its members may invoke (default: the core's group)
  port: 8686                  # a TCP listener too (default: none); callers need the token
  host: 127.0.0.1             # any other address needs the token
  token_file: /etc/pyengine/api.token   # default: ROOT/api.token, written at first start (0600)
  debug: false                # error answers carry tracebacks
```

Every problem is reported at once with its field path, like the group file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from pyengine.core.api import ApiSettings, group_id
from pyengine.core.policy import DEFAULT_PROCESSES_MAX
from pyengine.core.users import UidRange

#: Environment variables with the brokers' passwords (when no password_file is given).
PASSWORD_ENV = {"mqtt": "PYENGINE_MQTT_PASSWORD", "cloud": "PYENGINE_CLOUD_MQTT_PASSWORD"}


class ConfigError(ValueError):
    """The core's configuration is invalid; the message lists every problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"invalid core configuration {source}:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class TlsSettings:
    """TLS to a broker: ``ca`` verifies the broker (system CAs when None); ``cert``/``key``
    authenticate the core (AWS IoT style); ``insecure`` skips the host name check."""

    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    insecure: bool = False


@dataclass(frozen=True)
class MqttSettings:
    """How the core reaches one broker."""

    host: str
    port: int = 1883
    tls: Optional[TlsSettings] = None
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    #: Empty: the core picks ``pyengine-<hostname>-<hash of its root>`` (:func:`client_id`).
    client_id: str = ""
    keepalive_s: int = 30

    def address(self) -> str:
        """host:port (for messages)."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CaptureSettings:
    """Where captured samples go and how much the local spool may hold."""

    s3: Optional[str] = None
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    spool_mb: float = 256.0
    batch_size: int = 100
    batch_s: float = 5.0
    retry_max_s: float = 30.0

    def bucket_prefix(self) -> tuple[str, str]:
        """(bucket, key prefix) of ``s3``; the prefix is empty or ends with '/'."""
        assert self.s3
        bucket, _, prefix = self.s3[len("s3://"):].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return bucket, prefix


@dataclass(frozen=True)
class FunctionSettings:
    """How the core runs functions: the uid range of their users (a root core) and their
    process limit."""

    uids: UidRange = UidRange()
    processes_max: int = DEFAULT_PROCESSES_MAX


@dataclass(frozen=True)
class CoreConfig:
    """The core's configuration (all optional: a core without brokers still runs functions)."""

    mqtt: Optional[MqttSettings] = None
    cloud: Optional[MqttSettings] = None
    queue_size: int = 1000
    capture: CaptureSettings = CaptureSettings()
    functions: FunctionSettings = FunctionSettings()
    api: ApiSettings = ApiSettings()


class _Check:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def mapping(self, where: str, v: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(v, dict):
            self.bad(where, f"expected a mapping with {', '.join(allowed)}, got {v!r}")
            return {}
        for k in v:
            if k not in allowed:
                self.bad(f"{where}.{k}" if where else str(k),
                         f"unknown field {k!r}; expected one of {', '.join(allowed)}")
        return v

    def number(self, where: str, v: Any, lo: float, hi: float, integer: bool = False) -> Any:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or not lo <= v <= hi:
            self.bad(where, f"{v!r} must be {'an integer' if integer else 'a number'} "
                     f"from {lo:g} to {hi:g}")
            return None
        return v

    def file(self, where: str, v: Any) -> Optional[str]:
        if v is None:
            return None
        if not isinstance(v, str) or not os.path.isabs(v):
            self.bad(where, f"{v!r} must be an absolute path")
            return None
        if not os.path.isfile(v):
            self.bad(where, f"{v!r} is not a file")
        return v


def client_id(root: str, broker: str) -> str:
    """The default MQTT client id of the core in ``root``: stable across restarts (the broker
    keeps the session) and different for two cores on one host."""
    digest = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:8]
    return f"pyengine-{socket.gethostname()}-{digest}" + ("-cloud" if broker == "cloud" else "")


def parse_address(text: str, where: str = "--mqtt") -> tuple[str, int]:
    """``host:port`` (or ``host``, port 1883; ``[v6]:port``) -> (host, port); ValueError else."""
    m = re.match(r"^\[([0-9a-fA-F:.]+)\](?::(\d+))?$|^([^:\[\]\s/]+)(?::(\d+))?$", text or "")
    if not m:
        raise ValueError(f"{where}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:1883)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4) or 1883)
    if not 0 < port < 65536:
        raise ValueError(f"{where}: {text!r}: port {port} is not from 1 to 65535")
    return host, port


def _mqtt(c: _Check, where: str, raw: Any) -> Optional[MqttSettings]:
    m = c.mapping(where, raw, ("host", "port", "tls", "username", "password", "password_file",
                               "client_id", "keepalive_s"))
    if not m:
        return None
    host = m.get("host")
    if not isinstance(host, str) or not host or "/" in host or " " in host:
        c.bad(f"{where}.host", f"{host!r} must be a host name or address")
        host = ""
    port = c.number(f"{where}.port", m.get("port", 1883), 1, 65535, integer=True) or 1883
    tls = None
    raw_tls = m.get("tls")
    if raw_tls is True:
        tls = TlsSettings()
    elif raw_tls not in (None, False):
        t = c.mapping(f"{where}.tls", raw_tls, ("ca", "cert", "key", "insecure"))
        cert = c.file(f"{where}.tls.cert", t.get("cert"))
        key = c.file(f"{where}.tls.key", t.get("key"))
        if (cert is None) != (key is None):
            c.bad(f"{where}.tls", "cert and key go together: give both or neither")
        insecure = t.get("insecure", False)
        if not isinstance(insecure, bool):
            c.bad(f"{where}.tls.insecure", f"{insecure!r} must be true or false")
            insecure = False
        tls = TlsSettings(c.file(f"{where}.tls.ca", t.get("ca")), cert, key, insecure)
    user = m.get("username")
    if user is not None and not isinstance(user, str):
        c.bad(f"{where}.username", f"{user!r} must be a string")
        user = None
    password = m.get("password")
    if password is not None and not isinstance(password, str):
        c.bad(f"{where}.password", "must be a string")
        password = None
    pfile = c.file(f"{where}.password_file", m.get("password_file"))
    if pfile and os.path.isfile(pfile):
        with open(pfile, encoding="utf-8") as fh:
            password = fh.read().strip()
    password = password or os.environ.get(PASSWORD_ENV.get(where, ""), "") or None
    cid = m.get("client_id") or ""
    if not isinstance(cid, str) or len(cid) > 128:
        c.bad(f"{where}.client_id", f"{cid!r} must be a string of at most 128 characters")
        cid = ""
    keep = c.number(f"{where}.keepalive_s", m.get("keepalive_s", 30), 5, 3600, integer=True)
    return MqttSettings(host, int(port), tls, user, password, cid, int(keep or 30))


def validate_config(data: Any, source: str = "<config>") -> CoreConfig:
    """A :class:`CoreConfig` from a raw mapping; :class:`ConfigError` listing every problem."""
    c = _Check()
    top = c.mapping("", data if data is not None else {}, ("mqtt", "cloud", "queue_size",
                                                          "capture", "functions", "api"))
    mqtt = _mqtt(c, "mqtt", top["mqtt"]) if top.get("mqtt") is not None else None
    cloud = _mqtt(c, "cloud", top["cloud"]) if top.get("cloud") is not None else None
    qsize = c.number("queue_size", top.get("queue_size", 1000), 1, 10**7, integer=True)
    cap = c.mapping("capture", top.get("capture") or {},
                    ("s3", "endpoint_url", "region", "spool_mb", "batch_size", "batch_s",
                     "retry_max_s"))
    s3 = cap.get("s3")
    if s3 is not None and (not isinstance(s3, str)
                           or not re.match(r"^s3://[a-z0-9][a-z0-9-]{1,61}[a-z0-9](/.*)?$", s3)):
        c.bad("capture.s3", f"{s3!r} must be s3://BUCKET/PREFIX/ (a bucket name of 3-63 "
              "lowercase letters, digits and hyphens)")
        s3 = None
    ep = cap.get("endpoint_url")
    if ep is not None and (not isinstance(ep, str) or not re.match(r"^https?://", ep)):
        c.bad("capture.endpoint_url", f"{ep!r} must be an http:// or https:// URL")
        ep = None
    region = cap.get("region")
    if region is not None and not isinstance(region, str):
        c.bad("capture.region", f"{region!r} must be a region name such as us-east-1")
        region = None
    defaults = CaptureSettings()
    spool = c.number("capture.spool_mb", cap.get("spool_mb", defaults.spool_mb), 0.001, 2**30)
    batch = c.number("capture.batch_size", cap.get("batch_size", defaults.batch_size), 1, 100000,
                     integer=True)
    batch_s = c.number("capture.batch_s", cap.get("batch_s", defaults.batch_s), 0, 86400)
    retry = c.number("capture.retry_max_s", cap.get("retry_max_s", defaults.retry_max_s), 0.01,
                     86400)
    functions = _functions(c, top.get("functions") or {})
    api = _api(c, top.get("api") or {})
    if c.problems:
        raise ConfigError(source, c.problems)
    return CoreConfig(mqtt, cloud, int(qsize), CaptureSettings(
        s3, ep, region, float(spool), int(batch), float(batch_s), float(retry)), functions, api)


def _api(c: _Check, raw: Any) -> ApiSettings:
    a = c.mapping("api", raw, ("socket", "socket_group", "port", "host", "token_file", "token",
                               "debug"))
    paths = {}
    for key in ("socket", "token_file"):
        v = a.get(key)
        if v is not None and (not isinstance(v, str) or not os.path.isabs(v)):
            c.bad(f"api.{key}", f"{v!r} must be an absolute path")
            v = None
        paths[key] = v
    gid = None
    group = a.get("socket_group")
    if group is not None:
        if isinstance(group, bool) or not isinstance(group, (int, str)):
            c.bad("api.socket_group", f"{group!r} must be a group name or gid")
        else:
            try:
                gid = group_id(group)
            except ValueError as exc:
                c.bad("api.socket_group", str(exc))
    port = a.get("port")
    if port is not None:
        port = c.number("api.port", port, 0, 65535, integer=True)
    host = a.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host or "/" in host or " " in host:
        c.bad("api.host", f"{host!r} must be a host name or address")
        host = "127.0.0.1"
    flags = {}
    for key, default in (("token", True), ("debug", False)):
        v = a.get(key, default)
        if not isinstance(v, bool):
            c.bad(f"api.{key}", f"{v!r} must be true or false")
            v = default
        flags[key] = v
    return ApiSettings(socket=paths["socket"], socket_group=gid, host=host, port=port,
                       token_file=paths["token_file"], token=flags["token"],
                       debug=flags["debug"])


def _functions(c: _Check, raw: Any) -> FunctionSettings:
    f = c.mapping("functions", raw, ("uid_first", "uid_count", "processes_max"))
    default = FunctionSettings()
    # Above the ids of system and login users (1000-60000) and nobody; 2^31 keeps clear of
    # (uid_t)-1 and of signed overflows in tools.
    first = c.number("functions.uid_first", f.get("uid_first", default.uids.first), 65536,
                     2**31 - 1, integer=True)
    count = c.number("functions.uid_count", f.get("uid_count", default.uids.count), 1, 2**30,
                     integer=True)
    if first is not None and count is not None and first + count > 2**31:
        c.bad("functions.uid_count", f"{count} uids from {first} go past 2147483647")
    nproc = c.number("functions.processes_max", f.get("processes_max", default.processes_max),
                     16, 10**6, integer=True)
    return FunctionSettings(UidRange(int(first or default.uids.first),
                                     int(count or default.uids.count)),
                            int(nproc or default.processes_max))


def load_config(path: Optional[str] = None, mqtt: Optional[str] = None,
                capture_s3: Optional[str] = None) -> CoreConfig:
    """The core's configuration from ``path`` (YAML or JSON; none: defaults), with ``--mqtt
    host:port`` and ``--capture-s3`` given on the command line taking precedence."""
    data: Any = {}
    source = path or "<command line>"
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(path, [f"cannot read it: {exc.strerror or exc}"]) from None
        try:
            if path.endswith(".json") or text.lstrip().startswith("{"):
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except ImportError:
            raise ConfigError(path, ["YAML needs PyYAML: pip install 'pyengine[yaml]' "
                                     "(or write the configuration as JSON)"]) from None
        except Exception as exc:  # noqa: BLE001 - JSON and YAML syntax errors alike
            raise ConfigError(path, [f"not valid JSON or YAML: {exc}"]) from None
    if not isinstance(data, dict):
        data = {} if data is None else data
    if mqtt:
        try:
            host, port = parse_address(mqtt)
        except ValueError as exc:
            raise ConfigError(source, [str(exc)]) from None
        base = dict(data.get("mqtt") or {}) if isinstance(data, dict) else {}
        data = {**data, "mqtt": {**base, "host": host, "port": port}}
    if capture_s3:
        data = {**data, "capture": {**(data.get("capture") or {}), "s3": capture_s3}}
    cfg = validate_config(data, source)
    return replace(cfg)
