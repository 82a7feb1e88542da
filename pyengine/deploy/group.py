"""The group file: parsing (YAML or JSON) and validation with precise messages.

Every problem names the field path (``resources[1].model.destination``), the offending value and
the rule it breaks; all problems are reported at once.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from pyengine.batching_config import BatchingConfig
from pyengine.deploy.environment import environment_problem, environment_size_problem
from pyengine.deploy.errors import GroupError
from pyengine.deploy.parse import parse_group_text, read_text
from pyengine.deploy.subscriptions import BROKERS, Subscription, filter_problem, routing_cycles
from pyengine.device_files import is_gpu_node
from pyengine.sources.aws import AwsSettings
from pyengine.sources.s3 import bucket_problem

ID_RE = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
HANDLER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
KMS_KEY_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:kms:[a-z]{2}(-[a-z]+)+-\d:\d{12}:key/(mrk-)?[0-9a-fA-F-]{32,36}$"
)
PACKAGE_EXTS = (".tar.gz", ".tgz", ".zip")
PERMISSIONS = ("ro", "rw")
#: Destinations inside these need root (or are the system itself).
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    "/run",
    "/var/run",
    "/var/lock",
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/cache",
    "/var/log",
    "/snap",
)
#: Home directories only their owner may enter (a destination inside one is refused).
PRIVATE_HOMES = ("/root",)
#: Destinations equal to these would replace a top-level directory.
TOP_DIRS = ("/", "/home", "/tmp", "/var", "/var/lib", "/srv", "/opt", "/mnt", "/media", "/root")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Owner:
    """Ownership of an installed resource: ``group`` (gid) gets read-only or read-write access."""

    group: Optional[int]
    permission: str = "ro"


@dataclass(frozen=True)
class ModelSpec:
    """A machine-learning resource: a package unpacked into ``destination``."""

    source: str
    destination: str
    owner: Optional[Owner] = None
    sha256: Optional[str] = None
    max_unpacked_bytes: Optional[int] = None
    max_files: Optional[int] = None
    #: The KMS key the S3 object (or the training job's artifact) is encrypted with (SSE-KMS):
    #: ``pyengine policy`` then grants kms:Decrypt on it.
    kms_key_arn: Optional[str] = None


@dataclass(frozen=True)
class DeviceSpec:
    """A device resource: a character or block device under /dev."""

    path: str


@dataclass(frozen=True)
class VolumeSpec:
    """A volume resource: a host directory (a camera's capture folder) granted as it is."""

    path: str


@dataclass(frozen=True)
class Resource:
    """One resource of a group (a model, a device or a volume)."""

    id: str
    name: str
    model: Optional[ModelSpec] = None
    device: Optional[DeviceSpec] = None
    volume: Optional[VolumeSpec] = None

    @property
    def kind(self) -> str:
        """ "model", "device" or "volume"."""
        if self.model is not None:
            return "model"
        return "device" if self.device is not None else "volume"

    @property
    def max_permission(self) -> str:
        """The most a function may be granted: the owner setting's (ro without one); devices
        and volumes are granted as each function's entry says."""
        if self.device is not None or self.volume is not None:
            return "rw"
        owner = self.model.owner if self.model else None
        return owner.permission if owner else "ro"


@dataclass(frozen=True)
class FunctionResource:
    """A function's access to a resource; ``batching``: the core batches the function's calls
    to this model (the entry's ``batching`` block), None when it does not."""

    id: str
    permission: str = "ro"
    batching: Optional[BatchingConfig] = None


@dataclass(frozen=True)
class Endpoint:
    """A host and TCP port a function may connect to (``host`` may be ``*``)."""

    host: str
    port: int


@dataclass(frozen=True)
class Network:
    """What a function may do on the network (the entry's ``network``).

    ``any``: no restriction. Otherwise TCP connections only to the ``connect`` endpoints and
    listening only on the ``bind`` ports. The OS enforces ports only (Landlock has no address
    rules): an endpoint's host is documentation, and the port is open towards every host.
    """

    any: bool = False
    connect: tuple[Endpoint, ...] = ()
    bind: tuple[int, ...] = ()

    def connect_ports(self) -> tuple[int, ...]:
        """The ports of ``connect``, sorted, each once."""
        return tuple(sorted({e.port for e in self.connect}))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Network:
        """Inverse of :func:`dataclasses.asdict`."""
        return Network(bool(d.get("any")), tuple(Endpoint(**e) for e in d.get("connect", ())),
                       tuple(int(p) for p in d.get("bind", ())))


@dataclass(frozen=True)
class RunAs:
    """The user and group a function runs as (``run_as``), instead of a user of its own."""

    uid: int
    gid: int


@dataclass(frozen=True)
class Function:
    """A Lambda-style handler: ``handler`` is ``module.function`` inside ``code`` (a directory).

    ``network``: None (the default) means no network at all. ``invoke``: the functions of the
    group this one may call with ``context.invoke``.
    """

    name: str
    handler: str
    code: str
    pinned: bool = False
    timeout_s: float = 3.0
    memory_mb: int = 128
    environment: dict[str, str] = field(default_factory=dict)
    resources: tuple[FunctionResource, ...] = ()
    #: Caps on the copy of ``code`` (None: the defaults of ``unpack.copy_tree``).
    max_code_bytes: Optional[int] = None
    max_code_files: Optional[int] = None
    network: Optional[Network] = None
    invoke: tuple[str, ...] = ()
    #: None: the core's choice (a user of its own for each function).
    run_as: Optional[RunAs] = None
    #: Most calls at once (one worker each); None: 1 pinned, 4 on demand.
    concurrency: Optional[int] = None
    #: An on-demand worker idle this long stops; None: 60 s.
    idle_timeout_s: Optional[float] = None


@dataclass(frozen=True)
class Group:
    """A validated group."""

    name: str
    resources: tuple[Resource, ...] = ()
    functions: tuple[Function, ...] = ()
    s3: AwsSettings = AwsSettings()
    sagemaker: AwsSettings = AwsSettings()
    path: str = ""
    subscriptions: tuple[Subscription, ...] = ()

    def resource(self, rid: str) -> Resource:
        """The resource with id ``rid`` (KeyError when none)."""
        for r in self.resources:
            if r.id == rid:
                return r
        raise KeyError(rid)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (kept in the state database, read back by :func:`from_dict`)."""
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Group:
        """Inverse of :meth:`to_dict`."""
        res = []
        for r in d.get("resources", []):
            m = r.get("model")
            model = None
            if m:
                o = m.get("owner")
                model = ModelSpec(**{**m, "owner": Owner(**o) if o else None})
            dev = DeviceSpec(**r["device"]) if r.get("device") else None
            vol = VolumeSpec(**r["volume"]) if r.get("volume") else None
            res.append(Resource(r["id"], r["name"], model, dev, vol))
        funcs = [
            Function(
                **{
                    **f,
                    "resources": tuple(_function_resource(x) for x in f.get("resources", [])),
                    "network": Network.from_dict(f["network"]) if f.get("network") else None,
                    "invoke": tuple(f.get("invoke", ())),
                    "run_as": RunAs(**f["run_as"]) if f.get("run_as") else None,
                }
            )
            for f in d.get("functions", [])
        ]
        return Group(
            d["name"],
            tuple(res),
            tuple(funcs),
            AwsSettings(**d.get("s3", {})),
            AwsSettings(**d.get("sagemaker", {})),
            d.get("path", ""),
            tuple(Subscription(**x) for x in d.get("subscriptions", [])),
        )


def _function_resource(d: dict[str, Any]) -> FunctionResource:
    b = d.get("batching")
    return FunctionResource(**{**d, "batching": BatchingConfig(**b) if b else None})


def read_group_file(path: str) -> dict[str, Any]:
    """The raw mapping in a YAML or JSON group file, read with the limits of
    :mod:`pyengine.deploy.parse` (size, aliases, nesting, duplicate keys)."""
    data = parse_group_text(read_text(path), path)
    if not isinstance(data, dict):
        raise GroupError(path, [f"the top level must be a mapping, not {type(data).__name__}"])
    return data


def load_group(path: str) -> Group:
    """Read and validate a group file; raises :class:`GroupError` listing every problem."""
    path = os.path.abspath(path)
    return validate_group(read_group_file(path), path)


def group_file_problems(path: str) -> list[str]:
    """Every problem a deploy of group file ``path`` would meet before downloading anything:
    the schema's (as :func:`load_group` lists them) and local (file://) packages that do not
    exist, all at once, as ``field.path: message``. Reads only (``pyengine validate``)."""
    path = os.path.abspath(path)
    try:
        validate_group(read_group_file(path), path, local_sources=True)
    except GroupError as exc:
        return list(exc.problems)
    return []


class _Checker:
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


def _check_bucket(c: _Checker, where: str, bucket: str, raw: str) -> None:
    problem = bucket_problem(bucket)
    if problem:
        c.bad(where, f"{raw!r}: {problem}")


def _check_source(c: _Checker, where: str, raw: Any) -> str:
    src = c.string(where, raw)
    if not src:
        return ""
    src = c.expand(where, src)
    if "://" not in src:  # a plain path: relative to the group file's directory
        src = "file://" + os.path.normpath(os.path.join(c.base_dir, src))
    if src.startswith("file://"):
        path = src[len("file://") :]
        if not os.path.isabs(path):
            c.bad(
                where,
                f"{raw!r}: file:// sources need an absolute path (file:///abs/path); "
                "write a plain relative path to resolve it against the group file's directory",
            )
        elif not path.endswith(PACKAGE_EXTS):
            c.bad(where, f"{raw!r}: packages must be .tar.gz, .tgz or .zip")
        elif c.local_sources and not os.path.isfile(path):
            c.bad(where, f"{raw!r}: {path} is not a file (the package must exist to deploy)")
    elif src.startswith("s3://"):
        bucket, _, key = src[5:].partition("/")
        if not bucket or not key:
            c.bad(where, f"{raw!r} must be s3://BUCKET/KEY")
        else:
            _check_bucket(c, where, bucket, str(raw))
            if not key.endswith(PACKAGE_EXTS):
                c.bad(where, f"{raw!r}: packages must be .tar.gz, .tgz or .zip")
    elif src.startswith("sagemaker://"):
        from pyengine.sources.sagemaker import training_job_name

        try:
            training_job_name(src)
        except ValueError as exc:
            c.bad(where, f"{raw!r}: {exc}")
    else:
        c.bad(where, f"{raw!r}: unsupported source; expected file://, s3:// or sagemaker://")
    return src


def denied_destination(dest: str) -> Optional[str]:
    """Why ``dest`` (absolute, normalised) may not be a destination, or None when it may: inside
    a system directory or root's home, or a top-level directory itself. Validation applies it
    to the path as written and to its real path; the deploy applies it again right before
    installing."""
    for d in PRIVATE_HOMES:
        if dest.startswith(d + "/"):
            return (
                f"inside {d}, root's home directory, which only root may enter (mode 0700): the "
                "core runs each function as a user of its own, which could not reach the model; "
                "choose a directory such as /srv/models/NAME"
            )
    for d in SYSTEM_DIRS:
        if dest == d or dest.startswith(d + "/"):
            return (
                f"inside {d}, a system directory that needs root; "
                "choose a directory such as /srv/models/NAME"
            )
    if re.match(r"^/lib[^/]*(/|$)", dest):
        return "inside a system library directory; choose another directory"
    if dest in TOP_DIRS:
        return "a top-level directory; name a directory of its own inside it"
    return None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _owner_text(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid}:{st.st_gid}"


def existing_ancestor(path: str) -> str:
    """The nearest directory entry on ``path``'s way that exists (``path`` itself when it does),
    every symbolic link before it followed."""
    path = os.path.realpath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def placement_problem(dest: str) -> Optional[str]:
    """Why the deploying user (this process) cannot install at ``dest``, or None: the deploy
    writes the destination's link and its version store in its parent, making the parent (and
    what is missing above it) first, so the nearest existing directory on the way must be one
    this user may write in. Errors carry the fix, not a later ``[Errno 13]``."""
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    anc = existing_ancestor(parent)
    try:
        st = os.stat(anc)
    except OSError as exc:
        return f"{anc} on its way cannot be examined ({exc.strerror}); check the path"
    if not stat.S_ISDIR(st.st_mode):
        return f"{anc} on its way is not a directory; choose another destination"
    if os.access(anc, os.W_OK | os.X_OK):
        return None
    uid = os.geteuid()
    what = (
        f"cannot create {parent}: {anc}, the nearest directory on the way that exists, is not "
        f"writable by it ({_owner_text(st)})"
        if anc != os.path.realpath(parent)
        else f"cannot write in {parent} ({_owner_text(st)})"
    )
    return (
        f"the deploying user {_user_name(uid)} (uid {uid}) {what}; create the directory for "
        f"this user first (`sudo install -d -o {_user_name(uid)} {parent}`), or choose a "
        "destination under a directory it owns"
    )


def destination_problems(group: Group) -> list[str]:
    """Every model destination this deploying user cannot install at, as ``field: problem``
    (checked by :func:`pyengine.deploy.deploy` before anything is made)."""
    out = []
    for i, r in enumerate(group.resources):
        if r.model is not None and r.model.destination:
            problem = placement_problem(r.model.destination)
            if problem:
                out.append(f"resources[{i}].model.destination: {r.model.destination!r}: "
                           f"{problem}")
    return out


def real_destination(dest: str) -> str:
    """``dest`` with its parent resolved (every symbolic link on the way followed, as far as
    it exists); the destination itself, a link pyengine manages, is not followed."""
    parent, name = os.path.split(dest.rstrip("/") or "/")
    return os.path.join(os.path.realpath(parent), name) if name else "/"


def _check_destination(c: _Checker, where: str, raw: Any) -> str:
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


def _check_owner(c: _Checker, where: str, raw: Any) -> Optional[Owner]:
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


def _check_model(c: _Checker, where: str, raw: Any) -> Optional[ModelSpec]:
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
        _check_source(c, f"{where}.source", m.get("source")) if m.get("source") is not None else ""
    )
    dest = (
        _check_destination(c, f"{where}.destination", m.get("destination"))
        if m.get("destination") is not None
        else ""
    )
    owner = _check_owner(c, f"{where}.owner", m.get("owner"))
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
    kms = _check_kms_key(c, f"{where}.kms_key_arn", m.get("kms_key_arn"), src)
    return ModelSpec(src, dest, owner, sha, cap_b, files, kms)


def _check_kms_key(c: _Checker, where: str, raw: Any, source: str) -> Optional[str]:
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


def _check_device(c: _Checker, where: str, raw: Any) -> Optional[DeviceSpec]:
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


def _check_volume(c: _Checker, where: str, raw: Any) -> Optional[VolumeSpec]:
    """``volume: {path}``: an absolute host directory, refused where a model destination is
    (system directories, root's home, a top-level directory), as written and through symbolic
    links. That it exists, is a directory and lies outside the core's root is checked by the
    deploy (which knows the root) and again by the core."""
    m = c.mapping(where, raw, ("path",), ("path",))
    p = m.get("path") if m else None
    if p is None:
        return None
    before = len(c.problems)
    path = _check_destination(c, f"{where}.path", p)
    if path and len(c.problems) == before:
        real = os.path.realpath(path)
        problem = denied_destination(real)
        if problem and real != real_destination(path):
            c.bad(f"{where}.path", f"{p!r} is, through symbolic links, {real}, which is {problem}")
    return VolumeSpec(path) if path else None


#: Largest ``concurrency`` of a function (each call at once is a worker process).
CONCURRENCY_MAX = 256


def _check_run_as(c: _Checker, where: str, raw: Any) -> Optional[RunAs]:
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
    path = os.environ.get("PYENGINE_CORE_CONFIG")
    if not path:
        return False
    from pyengine.core.config import ConfigError, load_config

    try:
        return load_config(path).functions.allow_root
    except (ConfigError, OSError, ValueError):
        return False


def validate_group(data: dict[str, Any], path: str = "<group>", local_sources: bool = False
                   ) -> Group:
    """Validate a raw group mapping; relative paths resolve against ``path``'s directory.
    ``local_sources``: also require file:// packages to exist (a deploy instead reports a
    missing one as that resource's failure)."""
    c = _Checker(os.path.dirname(os.path.abspath(path)) if path != "<group>" else os.getcwd(),
                 local_sources)
    top = c.mapping(
        "", data, ("name", "resources", "functions", "subscriptions", "s3", "sagemaker"), ("name",)
    )
    name = c.ident("name", top.get("name")) if top.get("name") is not None else ""
    aws: dict[str, AwsSettings] = {}
    for svc in ("s3", "sagemaker"):
        m = c.mapping(svc, top.get(svc) or {}, ("endpoint_url", "region"))
        ep, region = m.get("endpoint_url"), m.get("region")
        if ep is not None and (not isinstance(ep, str) or not re.match(r"^https?://", ep)):
            c.bad(f"{svc}.endpoint_url", f"{ep!r} must be an http:// or https:// URL")
        if region is not None and not isinstance(region, str):
            c.bad(f"{svc}.region", f"{region!r} must be a region name such as us-east-1")
        aws[svc] = AwsSettings(
            c.expand(f"{svc}.endpoint_url", ep) if isinstance(ep, str) else None,
            region if isinstance(region, str) else None,
        )

    resources: list[Resource] = []
    raw_res = top.get("resources") or []
    if not isinstance(raw_res, list):
        c.bad("resources", f"expected a list, got {raw_res!r}")
        raw_res = []
    seen: dict[str, str] = {}
    for i, r in enumerate(raw_res):
        where = f"resources[{i}]"
        m = c.mapping(where, r, ("id", "name", "model", "device", "volume"), ("id",))
        if not m:
            continue
        rid = c.ident(f"{where}.id", m.get("id")) if m.get("id") is not None else ""
        rname = c.ident(f"{where}.name", m["name"]) if m.get("name") is not None else rid
        if rid in seen:
            c.bad(f"{where}.id", f"{rid!r} is already the id of {seen[rid]}; ids must be unique")
        seen[rid] = where
        kinds = [k for k in ("model", "device", "volume") if m.get(k) is not None]
        if len(kinds) != 1:
            c.bad(where, "a resource needs exactly one of 'model', 'device' or 'volume'"
                  f"{' (it has ' + ', '.join(kinds) + ')' if kinds else ''}")
            continue
        model = _check_model(c, f"{where}.model", m["model"]) if kinds == ["model"] else None
        dev = _check_device(c, f"{where}.device", m["device"]) if kinds == ["device"] else None
        vol = _check_volume(c, f"{where}.volume", m["volume"]) if kinds == ["volume"] else None
        if model is None and dev is None and vol is None:
            continue
        resources.append(Resource(rid, rname, model, dev, vol))

    dests = [
        (r.model.destination, i) for i, r in enumerate(resources) if r.model and r.model.destination
    ]
    for a, ia in dests:
        for b, ib in dests:
            if ia < ib and (
                a == b or b.startswith(a.rstrip("/") + "/") or a.startswith(b.rstrip("/") + "/")
            ):
                rel = (
                    "the same as" if a == b else ("inside" if a.startswith(b + "/") else "contains")
                )
                c.bad(
                    f"resources[{ib}].model.destination",
                    f"{b!r} overlaps resources[{ia}] ({a!r}: {rel}); each resource needs its own "
                    "directory, not nested in another's",
                )

    for iv, v in enumerate(resources):
        if v.volume is None:
            continue
        vp = v.volume.path.rstrip("/") or "/"
        for a, ia in dests:
            if a == vp or a.startswith(vp + "/") or vp.startswith(a.rstrip("/") + "/"):
                c.bad(f"resources[{iv}].volume.path", f"{v.volume.path!r} overlaps the model "
                      f"destination of resources[{ia}] ({a!r}): a function writing the volume "
                      "would change the installed model; keep volumes and models apart")

    functions: list[Function] = []
    raw_fn = top.get("functions") or []
    if not isinstance(raw_fn, list):
        c.bad("functions", f"expected a list, got {raw_fn!r}")
        raw_fn = []
    fnames: set[str] = set()
    by_id = {r.id: r for r in resources}
    known_ids = _some(sorted(by_id))
    # Every name, for the invoke lists (which may name functions further down).
    all_names = sorted({str(f["name"]) for f in raw_fn if isinstance(f, dict) and f.get("name")})
    for i, f in enumerate(raw_fn):
        where = f"functions[{i}]"
        m = c.mapping(
            where,
            f,
            (
                "name",
                "handler",
                "code",
                "pinned",
                "timeout_s",
                "memory_mb",
                "environment",
                "resources",
                "max_code_mb",
                "max_code_files",
                "network",
                "invoke",
                "run_as",
                "concurrency",
                "idle_timeout_s",
            ),
            ("name", "handler", "code"),
        )
        if not m:
            continue
        fname = c.ident(f"{where}.name", m.get("name")) if m.get("name") is not None else ""
        if fname in fnames:
            c.bad(f"{where}.name", f"{fname!r} is already the name of another function")
        fnames.add(fname)
        handler = m.get("handler")
        if handler is not None and (not isinstance(handler, str) or not HANDLER_RE.match(handler)):
            c.bad(
                f"{where}.handler",
                f"{handler!r} must be module.function (e.g. classify.function_handler)",
            )
            handler = None
        code = ""
        if m.get("code") is not None:
            code = c.string(f"{where}.code", m["code"])
            if code:
                code = os.path.normpath(os.path.join(c.base_dir, c.expand(f"{where}.code", code)))
                if not os.path.isdir(code):
                    c.bad(f"{where}.code", f"{m['code']!r} ({code}) is not a directory")
                elif handler:
                    mod = handler.rsplit(".", 1)[0].replace(".", "/")
                    if not (
                        os.path.isfile(os.path.join(code, mod + ".py"))
                        or os.path.isfile(os.path.join(code, mod, "__init__.py"))
                    ):
                        c.bad(f"{where}.handler", f"{handler!r}: no {mod}.py in {code}")
        pinned = m.get("pinned", False)
        if not isinstance(pinned, bool):
            c.bad(f"{where}.pinned", f"{pinned!r} must be true or false")
        timeout = c.number(f"{where}.timeout_s", m.get("timeout_s", 3), 0.001, 86400)
        memory = c.number(f"{where}.memory_mb", m.get("memory_mb", 128), 1, 2**20, integer=True)
        env = _check_environment(c, f"{where}.environment", m.get("environment"))
        frs: list[FunctionResource] = []
        raw_fr = m.get("resources") or []
        if not isinstance(raw_fr, list):
            c.bad(f"{where}.resources", f"expected a list, got {raw_fr!r}")
            raw_fr = []
        for j, fr in enumerate(raw_fr):
            w = f"{where}.resources[{j}]"
            fm = c.mapping(w, fr, ("id", "permission", "batching"), ("id",))
            if not fm:
                continue
            fr_id = fm.get("id")
            perm = c.permission(f"{w}.permission", fm.get("permission", "ro"))
            if not isinstance(fr_id, str) or fr_id not in by_id:
                c.bad(
                    f"{w}.id",
                    f"{fr_id!r} is not the id of any resource in the group "
                    f"(known: {known_ids})",
                )
                continue
            res = by_id[str(fr_id)]
            if perm == "ro" and res.device is not None and is_gpu_node(res.device.path):
                c.bad(
                    f"{w}.permission",
                    f"'ro' on GPU {res.device.path}: the CUDA driver opens the GPU's device "
                    "files read-write, which a ro device grant refuses; grant rw",
                )
            if perm == "rw" and res.max_permission == "ro":
                c.bad(
                    f"{w}.permission",
                    f"'rw' is more than resource {fr_id!r} allows: its owner setting is "
                    f"{'ro' if res.model and res.model.owner else 'absent (read-only)'}; set "
                    "model.owner.permission to rw or grant ro",
                )
            batching = None
            if fm.get("batching") is not None:
                if res.kind != "model":
                    c.bad(f"{w}.batching", f"{fr_id!r} is a device; only model resources batch")
                else:
                    try:
                        batching = BatchingConfig.from_dict(fm["batching"], f"{w}.batching")
                    except ValueError as exc:
                        c.problems.append(str(exc))
            frs.append(FunctionResource(str(fr_id), perm, batching))
        if pinned is True and m.get("idle_timeout_s") is not None:
            c.bad(f"{where}.idle_timeout_s", f"{m['idle_timeout_s']!r}: a pinned function's "
                  "workers never stop for being idle; remove idle_timeout_s or set pinned: false")
        code_mb = m.get("max_code_mb")
        code_files = m.get("max_code_files")
        functions.append(
            Function(
                fname,
                str(handler or ""),
                code,
                bool(pinned),
                float(timeout),
                int(memory),
                env,
                tuple(frs),
                int(c.number(f"{where}.max_code_mb", code_mb, 1, 2**20) * 2**20)
                if code_mb is not None
                else None,
                int(c.number(f"{where}.max_code_files", code_files, 1, 10**8, integer=True))
                if code_files is not None
                else None,
                _check_network(c, f"{where}.network", m.get("network")),
                _invoke_list(c, f"{where}.invoke", m.get("invoke"), fname, all_names),
                _check_run_as(c, f"{where}.run_as", m.get("run_as")),
                int(c.number(f"{where}.concurrency", m["concurrency"], 1, CONCURRENCY_MAX,
                             integer=True)) if m.get("concurrency") is not None else None,
                float(c.number(f"{where}.idle_timeout_s", m["idle_timeout_s"], 0.1, 86400))
                if m.get("idle_timeout_s") is not None else None,
            )
        )

    _check_rw_exclusive(c, functions, {r.id for r in resources if r.kind == "model"})
    subscriptions = _check_subscriptions(c, top.get("subscriptions"), fnames)
    if c.problems:
        raise GroupError(path, c.problems)
    return Group(
        name, tuple(resources), tuple(functions), aws["s3"], aws["sagemaker"], path, subscriptions
    )


def _some(names: list[str], at_most: int = 20) -> str:
    """``names`` for a message: the first ``at_most`` (a huge group repeats them per problem)."""
    more = f", ... ({len(names) - at_most} more)" if len(names) > at_most else ""
    return ", ".join(names[:at_most]) + more if names else "none"


def _check_environment(c: _Checker, where: str, raw: Any) -> dict[str, str]:
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


def _port(c: _Checker, where: str, v: Any) -> Optional[int]:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        c.bad(where, f"{v!r} must be a TCP port from 1 to 65535")
        return None
    return v


def _endpoint(c: _Checker, where: str, v: Any) -> Optional[Endpoint]:
    text = v if isinstance(v, str) else ""
    host, sep, port = text.rpartition(":")
    if not sep or not _HOST_RE.match(host) or not port.isdigit():
        c.bad(where, f"{v!r} must be HOST:PORT (e.g. mqtt.local:8883, 127.0.0.1:9000, "
              "[::1]:443 or *:443)")
        return None
    p = _port(c, where, int(port))
    return Endpoint(host, p) if p is not None else None


def _check_network(c: _Checker, where: str, raw: Any) -> Optional[Network]:
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


def _invoke_list(c: _Checker, where: str, raw: Any, fname: str,
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
                  f"{_some(names)})")
        elif name in out:
            c.bad(f"{where}[{k}]", f"{name!r} is listed twice")
        else:
            out.append(name)
    return tuple(out)



def _check_rw_exclusive(c: _Checker, functions: list[Function], models: set[str]) -> None:
    """A model resource one function may write is that function's alone: another function
    mapping the same files would see them change (a truncation kills it with SIGBUS). Devices
    (a GPU) are shared as the group says."""
    users: dict[str, list[tuple[int, int, str]]] = {}
    for i, f in enumerate(functions):
        for j, fr in enumerate(f.resources):
            if fr.id in models:
                users.setdefault(fr.id, []).append((i, j, fr.permission))
    for rid, grants in users.items():
        writers = [(i, j) for i, j, perm in grants if perm == "rw"]
        if not writers or len(grants) < 2:
            continue
        wi, wj = writers[0]
        for i, j, perm in grants:
            if (i, j) != (wi, wj):
                c.bad(f"functions[{i}].resources[{j}]",
                      f"resource {rid!r} is granted rw to function {functions[wi].name!r} "
                      f"(functions[{wi}].resources[{wj}]); a resource a function may write "
                      f"cannot be granted to another ({perm} here): give each its own resource")


def _check_subscriptions(c: _Checker, raw: Any, functions: set[str]) -> tuple[Subscription, ...]:
    """The ``subscriptions`` list: endpoints are functions of the group, devices or cloud."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.bad("subscriptions", f"expected a list, got {raw!r}")
        return ()
    known = _some(sorted(functions))
    out: list[Subscription] = []
    wheres: list[str] = []
    seen: dict[tuple[str, str, str], str] = {}
    for i, s in enumerate(raw):
        where = f"subscriptions[{i}]"
        m = c.mapping(where, s, ("source", "topic", "target", "retain"),
                      ("source", "topic", "target"))
        if not m or any(m.get(k) is None for k in ("source", "topic", "target")):
            continue
        ok = True
        for key in ("source", "target"):
            v = m[key]
            if v in BROKERS:
                if v in functions:
                    c.bad(f"{where}.{key}", f"{v!r} is ambiguous: it means the {v} endpoint, and "
                          f"a function of the group has that name; rename the function")
                    ok = False
                continue
            if not isinstance(v, str) or v not in functions:
                c.bad(f"{where}.{key}", f"{v!r} is not 'devices', 'cloud' or the name of a "
                      f"function of the group (functions: {known})")
                ok = False
        problem = filter_problem(m["topic"])
        if problem:
            c.bad(f"{where}.topic", problem)
            ok = False
        if ok and m["source"] in BROKERS and m["target"] in BROKERS:
            c.bad(where, f"{m['source']!r} to {m['target']!r}: a subscription needs a function "
                  "at one end (the core does not relay between brokers)")
            ok = False
        retain = m.get("retain", False)
        if not isinstance(retain, bool):
            c.bad(f"{where}.retain", f"{retain!r} must be true or false")
            ok = False
        elif retain and (m["source"] in BROKERS or m["target"] not in BROKERS):
            c.bad(f"{where}.retain", "only a subscription from a function to 'devices' or "
                  f"'cloud' can grant retained messages (this one is {m['source']!r} to "
                  f"{m['target']!r})")
            ok = False
        if not ok:
            continue
        sub = Subscription(str(m["source"]), str(m["topic"]), str(m["target"]), retain)
        key3 = (sub.source, sub.topic, sub.target)
        if key3 in seen:
            c.bad(where, f"the same subscription as {seen[key3]}; list each route once")
            continue
        seen[key3] = where
        out.append(sub)
        wheres.append(where)
    for component, on_it in routing_cycles(out):
        route = "; ".join(f"{wheres[i]}: {out[i].source} -> {out[i].topic} -> {out[i].target}"
                          for i in on_it)
        one = len(component) == 1
        c.bad(", ".join(wheres[i] for i in on_it),
              f"a routing cycle: what {' and '.join(component)} "
              f"{'publishes' if one else 'publish'} can come back to call "
              f"{'it' if one else 'them'} again, without end ({route}); make the topics of "
              "one of these routes disjoint")
    return tuple(out)
