"""The group model: a validated group and its parts (resources, functions, their grants,
network and subscriptions), and its JSON form kept in the state.

Reading and validating a group file is :mod:`pyengine.deploy.validate`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from pyengine.batching_config import BatchingConfig
from pyengine.common.aws import AwsSettings
from pyengine.deploy.subscriptions import Subscription


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
