"""The core's own configuration: MQTT brokers and data capture (``core start --config FILE``).

```yaml
mqtt:                         # the devices' broker (subscriptions' "devices")
  host: 127.0.0.1
  port: 1883                  # 8883 is usual with TLS
  tls: {ca: /etc/pyengine/ca.pem, cert: /etc/pyengine/core.pem, key: /etc/pyengine/core.key}
  username: core              # password: from password_file, else $PYENGINE_MQTT_PASSWORD
  password_file: /etc/pyengine/mqtt.pass
  client_id: pyengine-core    # default: random, made once and kept in ROOT/mqtt-client-id
  keepalive_s: 30
cloud: {host: ..., port: 8883, tls: {...}}   # optional: subscriptions' "cloud"
fleet_mqtt: {host: ..., topic_prefix: ops/}  # optional: fleet traffic (default: mqtt's broker)
queue_size: 1000              # messages waiting per function before new ones are dropped
queue_mb: 16                  # bytes of payloads waiting per function before new ones are dropped
message_max_mb: 4             # larger payloads for a function are refused (counted)
message_limits:               # per-function overrides of the three above
  classify: {queue_size: 100, queue_mb: 64, message_max_mb: 32}
capture:
  s3: s3://bucket/prefix/     # where pyengine.capture() samples go; none: they stay spooled
  endpoint_url: null          # an S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL_S3)
  region: null
  spool_mb: 256               # the whole spool's cap on disk (allocated blocks)
  function_mb: 64             # each function's quota on disk; its own oldest samples go first
  function_files: 10000       # each function's quota of samples (one file each)
  batch_size: 100             # samples per uploaded object
  batch_s: 5                  # the longest a sample waits for its batch to fill
functions:                    # how the core runs functions (see docs/core.md)
  uid_first: 70000            # a root core gives each function its own uid from this range
  uid_count: 30000
  processes_max: 544          # RLIMIT_NPROC: tasks (processes and threads) per function
                              # (default 512 + 16 per CPU)
  scratch_mb: 256             # each function's scratch (HOME, TMPDIR): a tmpfs of this size
                              # (root core), else checked: over it, no new calls (507)
api:                          # who may call the core (see docs/core.md; flags of core start win)
  socket: /var/lib/pyengine/core.sock   # default: ROOT/core.sock, mode 0660
  socket_group: pyengine      # its members may invoke (default: the core's group)
  port: 8686                  # a TCP listener too (default: none); callers need the token
  host: 127.0.0.1             # any other address needs the token
  token_file: /etc/pyengine/api.token   # default: ROOT/api.token, written at first start (0600)
  debug: false                # error answers carry tracebacks
  console: false              # the local console under /console (needs port; docs/console.md)
  body_max_mb: 16             # largest request body (413 above it)
  connections_max: 1024       # connections at once (kept below the fd limit)
  idle_timeout_s: 10          # an idle or stalled connection is closed after this
logs:                         # ROOT/logs/core.log and ROOT/logs/<function>.log
  max_mb: 10                  # a log is rotated at this size...
  files: 5                    # ...keeping this many old files (<name>.log.1 newest)
```

Every problem is reported at once with its field path, like the group file.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any, Optional

from pyengine.common.config_file import ConfigFileError, read_config_file
from pyengine.common.mqtt import MqttSettings, TlsSettings, parse_address
from pyengine.core.api import ApiSettings, group_id
from pyengine.core.policy import DEFAULT_PROCESSES_MAX
from pyengine.core.users import UidRange

log = logging.getLogger("pyengine.core.config")

#: Environment variables with the brokers' passwords (when no password_file is given).
PASSWORD_ENV = {"mqtt": "PYENGINE_MQTT_PASSWORD", "cloud": "PYENGINE_CLOUD_MQTT_PASSWORD",
                "fleet_mqtt": "PYENGINE_FLEET_MQTT_PASSWORD"}
#: The file in the core's root with its random MQTT client id.
CLIENT_ID_FILE = "mqtt-client-id"
#: Largest ``message_max_mb``: a payload travels to its worker base64-encoded in one frame of at
#: most :data:`pyengine.core.protocol.MAX_MESSAGE` (64 MiB) bytes.
MESSAGE_MAX_MB = 44.0


class ConfigError(ValueError):
    """The core's configuration is invalid; the message lists every problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"invalid core configuration {source}:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class CaptureSettings:
    """Where captured samples go and how much the local spool may hold."""

    s3: Optional[str] = None
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    spool_mb: float = 256.0
    function_mb: float = 64.0
    function_files: int = 10000
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
class MessageLimits:
    """How much may wait for one function, and the largest message it is sent."""

    queue_size: int = 1000
    queue_mb: float = 16.0
    message_max_mb: float = 4.0

    @property
    def queue_bytes(self) -> int:
        """``queue_mb`` in bytes."""
        return int(self.queue_mb * (1 << 20))

    @property
    def message_max_bytes(self) -> int:
        """``message_max_mb`` in bytes."""
        return int(self.message_max_mb * (1 << 20))


@dataclass(frozen=True)
class FunctionSettings:
    """How the core runs functions: the uid range of their users (a root core), their
    process limit, and whether a group may run a function as root (``run_as`` uid or gid 0)."""

    uids: UidRange = UidRange()
    processes_max: int = DEFAULT_PROCESSES_MAX
    allow_root: bool = False
    #: Each function's scratch (ROOT/run/<function>): a tmpfs of this size, or checked.
    scratch_mb: float = 256.0


@dataclass(frozen=True)
class LogSettings:
    """Rotation of ``ROOT/logs/*.log``: at ``max_mb``, keeping ``files`` old ones."""

    max_mb: float = 10.0
    files: int = 5


@dataclass(frozen=True)
class CoreConfig:
    """The core's configuration (all optional: a core without brokers still runs functions)."""

    mqtt: Optional[MqttSettings] = None
    cloud: Optional[MqttSettings] = None
    queue_size: int = 1000
    capture: CaptureSettings = CaptureSettings()
    functions: FunctionSettings = FunctionSettings()
    #: Fleet traffic's broker; None: the devices' broker (``mqtt``), in a session of its own.
    fleet_mqtt: Optional[MqttSettings] = None
    queue_mb: float = 16.0
    message_max_mb: float = 4.0
    #: Function name -> its own limits (the top-level ones for the rest).
    function_limits: tuple[tuple[str, MessageLimits], ...] = ()

    def limits(self, function: str) -> MessageLimits:
        """The message limits of ``function``."""
        return dict(self.function_limits).get(function) or MessageLimits(
            self.queue_size, self.queue_mb, self.message_max_mb)

    def fleet_broker(self) -> Optional[MqttSettings]:
        """The broker settings of fleet traffic (``fleet_mqtt``, else ``mqtt``), with a client
        id of its own (``<the core's id>-fleet``: never the devices' session's id)."""
        if self.fleet_mqtt is not None:
            return self.fleet_mqtt
        if self.mqtt is None:
            return None
        cid = f"{self.mqtt.client_id}-fleet" if self.mqtt.client_id else ""
        return replace(self.mqtt, client_id=cid)
    api: ApiSettings = ApiSettings()
    logs: LogSettings = LogSettings()


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
    """The default MQTT client id of the core in ``root`` for ``broker`` (mqtt, cloud or
    fleet_mqtt): ``pyengine-<128 random bits>`` (plus ``-cloud``/``-fleet``).

    Stable across restarts (the broker keeps the session) and unguessable: a client that
    connects with a core's id takes its session over, so the id is no function of the host
    name or path. It is made once and kept in ``ROOT/mqtt-client-id`` (mode 0600).
    """
    path = os.path.join(os.path.abspath(root), CLIENT_ID_FILE)
    try:
        with open(path, encoding="ascii") as fh:
            base = fh.read().strip()
    except FileNotFoundError:
        base = ""
    if not re.fullmatch(r"pyengine-[0-9a-f]{32}", base):
        if base:
            log.warning("%s does not hold a client id made by the core; making a new one", path)
        base = f"pyengine-{secrets.token_hex(16)}"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(base + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    return base + {"cloud": "-cloud", "fleet_mqtt": "-fleet"}.get(broker, "")


def _mqtt(c: _Check, where: str, raw: Any) -> Optional[MqttSettings]:
    m = c.mapping(where, raw, ("host", "port", "tls", "username", "password", "password_file",
                               "client_id", "keepalive_s", "topic_prefix"))
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
    prefix = m.get("topic_prefix", "")
    if prefix and (not isinstance(prefix, str) or not prefix.endswith("/")
                   or "+" in prefix or "#" in prefix or prefix.startswith("/")):
        c.bad(f"{where}.topic_prefix", f"{prefix!r} must be topic levels ending with '/' "
              "(such as ops/), without wildcards")
        prefix = ""
    if prefix and where != "fleet_mqtt":
        c.bad(f"{where}.topic_prefix", "only fleet_mqtt takes a topic prefix (device topics "
              "are the subscriptions' own)")
        prefix = ""
    return MqttSettings(host, int(port), tls, user, password, cid, int(keep or 30), prefix)


def _limits(c: _Check, where: str, raw: dict[str, Any], base: MessageLimits) -> MessageLimits:
    pre = f"{where}." if where else ""
    size = c.number(f"{pre}queue_size", raw.get("queue_size", base.queue_size), 1, 10**7,
                    integer=True)
    qmb = c.number(f"{pre}queue_mb", raw.get("queue_mb", base.queue_mb), 0.001, 2**20)
    mmb = c.number(f"{pre}message_max_mb", raw.get("message_max_mb", base.message_max_mb),
                   0.0001, MESSAGE_MAX_MB)
    out = MessageLimits(int(size or base.queue_size), float(qmb or base.queue_mb),
                        float(mmb or base.message_max_mb))
    if qmb is not None and mmb is not None and out.message_max_mb > out.queue_mb:
        c.bad(f"{pre}message_max_mb", f"{out.message_max_mb:g} is more than queue_mb "
              f"({out.queue_mb:g}): such a message could never wait in the queue")
    return out


def validate_config(data: Any, source: str = "<config>") -> CoreConfig:
    """A :class:`CoreConfig` from a raw mapping; :class:`ConfigError` listing every problem."""
    c = _Check()
    top = c.mapping("", data if data is not None else {},
                    ("mqtt", "cloud", "fleet_mqtt", "queue_size", "queue_mb", "message_max_mb",
                     "message_limits", "capture", "functions", "api", "logs"))
    mqtt = _mqtt(c, "mqtt", top["mqtt"]) if top.get("mqtt") is not None else None
    cloud = _mqtt(c, "cloud", top["cloud"]) if top.get("cloud") is not None else None
    fleet = _mqtt(c, "fleet_mqtt", top["fleet_mqtt"]) if top.get("fleet_mqtt") is not None \
        else None
    limits = _limits(c, "", top, MessageLimits())
    per_function: list[tuple[str, MessageLimits]] = []
    raw_fns = top.get("message_limits") or {}
    if not isinstance(raw_fns, dict):
        c.bad("message_limits", f"expected a mapping of function name -> limits, got "
              f"{raw_fns!r}")
        raw_fns = {}
    for fname, raw in raw_fns.items():
        where = f"message_limits.{fname}"
        m = c.mapping(where, raw, ("queue_size", "queue_mb", "message_max_mb"))
        if m:
            per_function.append((str(fname), _limits(c, where, m, limits)))
    cap = c.mapping("capture", top.get("capture") or {},
                    ("s3", "endpoint_url", "region", "spool_mb", "function_mb", "function_files",
                     "batch_size", "batch_s", "retry_max_s"))
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
    fn_mb = c.number("capture.function_mb", cap.get("function_mb", min(
        defaults.function_mb, spool or defaults.function_mb)), 0.001, 2**30)
    fn_files = c.number("capture.function_files", cap.get("function_files",
                                                          defaults.function_files),
                        1, 10**7, integer=True)
    if spool is not None and fn_mb is not None and fn_mb > spool:
        c.bad("capture.function_mb", f"{fn_mb:g} is more than spool_mb ({spool:g})")
    batch = c.number("capture.batch_size", cap.get("batch_size", defaults.batch_size), 1, 100000,
                     integer=True)
    batch_s = c.number("capture.batch_s", cap.get("batch_s", defaults.batch_s), 0, 86400)
    retry = c.number("capture.retry_max_s", cap.get("retry_max_s", defaults.retry_max_s), 0.01,
                     86400)
    functions = _functions(c, top.get("functions") or {})
    api = _api(c, top.get("api") or {})
    logs = _logs(c, top.get("logs") or {})
    if c.problems:
        raise ConfigError(source, c.problems)
    return CoreConfig(mqtt, cloud, limits.queue_size, CaptureSettings(
        s3, ep, region, float(spool), float(fn_mb), int(fn_files), int(batch), float(batch_s),
        float(retry)), functions, fleet_mqtt=fleet, queue_mb=limits.queue_mb,
        message_max_mb=limits.message_max_mb, function_limits=tuple(per_function), api=api, logs=logs)


def _api(c: _Check, raw: Any) -> ApiSettings:
    a = c.mapping("api", raw, ("socket", "socket_group", "port", "host", "token_file", "token",
                               "debug", "console", "body_max_mb", "connections_max", "idle_timeout_s"))
    base = ApiSettings()
    body = c.number("api.body_max_mb", a.get("body_max_mb", base.body_max_mb), 0.001, 64)
    conns = c.number("api.connections_max", a.get("connections_max", base.connections_max),
                     16, 10**6, integer=True)
    idle = c.number("api.idle_timeout_s", a.get("idle_timeout_s", base.idle_timeout_s),
                    0.1, 3600)
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
    for key, default in (("token", True), ("debug", False), ("console", False)):
        v = a.get(key, default)
        if not isinstance(v, bool):
            c.bad(f"api.{key}", f"{v!r} must be true or false")
            v = default
        flags[key] = v
    return ApiSettings(socket=paths["socket"], socket_group=gid, host=host, port=port,
                       token_file=paths["token_file"], token=flags["token"],
                       debug=flags["debug"], console=flags["console"], body_max_mb=float(body or base.body_max_mb),
                       connections_max=int(conns or base.connections_max),
                       idle_timeout_s=float(idle or base.idle_timeout_s))


def _logs(c: _Check, raw: Any) -> LogSettings:
    g = c.mapping("logs", raw, ("max_mb", "files"))
    default = LogSettings()
    size = c.number("logs.max_mb", g.get("max_mb", default.max_mb), 0.001, 2**20)
    files = c.number("logs.files", g.get("files", default.files), 0, 1000, integer=True)
    return LogSettings(float(size if size is not None else default.max_mb),
                       int(files if files is not None else default.files))


def _functions(c: _Check, raw: Any) -> FunctionSettings:
    f = c.mapping("functions", raw, ("uid_first", "uid_count", "processes_max", "allow_root",
                                     "scratch_mb"))
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
    allow_root = f.get("allow_root", False)
    if not isinstance(allow_root, bool):
        c.bad("functions.allow_root", f"{allow_root!r} must be true or false")
        allow_root = False
    scratch = c.number("functions.scratch_mb", f.get("scratch_mb", default.scratch_mb), 1,
                       2**30)
    return FunctionSettings(UidRange(int(first or default.uids.first),
                                     int(count or default.uids.count)),
                            int(nproc or default.processes_max), allow_root,
                            float(scratch or default.scratch_mb))


def load_config(path: Optional[str] = None, mqtt: Optional[str] = None,
                capture_s3: Optional[str] = None) -> CoreConfig:
    """The core's configuration from ``path`` (YAML or JSON; none: defaults), with ``--mqtt
    host:port`` and ``--capture-s3`` given on the command line taking precedence."""
    data: Any = {}
    source = path or "<command line>"
    if path:
        try:
            data = read_config_file(path)
        except ConfigFileError as exc:
            raise ConfigError(path, [exc.problem]) from None
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
