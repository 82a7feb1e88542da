"""What the local console shows (:mod:`pyengine.core.console`), read from the running core.

Each function here returns plain JSON-ready data; nothing in it is HTML. Time series for the
charts come from a :class:`Sampler` that snapshots the core's metrics every ``interval_s``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Iterator, Optional

from pyengine import _core, loader
from pyengine import deploy as dp
from pyengine.core.logs import log_files, log_path
from pyengine.core.metrics import BUCKETS
from pyengine.deploy import installed
from pyengine.sysinfo import info

if TYPE_CHECKING:  # the core holds the console; the console only reads it
    from pyengine.core.server import Core

#: An hour of samples at the default interval.
SERIES_INTERVAL_S = 10.0
SERIES_LEN = 360
#: Lines of a function's log sent before following it.
LOG_TAIL_LINES = 200
#: A log line longer than this is cut (the core's log writer cuts at 16 KiB already).
LOG_LINE_MAX = 4096


def quantile(buckets: list[int], q: float) -> Optional[float]:
    """The ``q`` quantile (seconds) of a duration histogram with counts per :data:`BUCKETS`
    bucket (not cumulative), interpolated inside the bucket as Prometheus does; None when empty.
    Calls past the last bound count as the last bound."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    acc = 0
    for i, n in enumerate(buckets):
        if n and acc + n >= rank:
            lo = BUCKETS[i - 1] if i > 0 else 0.0
            return lo + (BUCKETS[i] - lo) * (rank - acc) / n
        acc += n
    return BUCKETS[-1]


class Sampler:
    """Snapshots of each function's calls and duration histogram every ``interval_s``: the
    charts' invocations per minute and latency over the last ``length`` samples."""

    def __init__(self, core: Core, interval_s: float = SERIES_INTERVAL_S,
                 length: int = SERIES_LEN) -> None:
        self.core = core
        self.interval_s = interval_s
        self._samples: collections.deque[tuple[float, dict[str, tuple[int, list[int]]]]] = \
            collections.deque(maxlen=length)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pyengine-console-sampler",
                                        daemon=True)

    def start(self) -> None:
        """Take the first sample now, then one every ``interval_s``."""
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()

    def _sample(self) -> None:
        self._samples.append((time.time(), self.core.metrics.histograms()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def series(self) -> dict[str, Any]:
        """Per function, one point per interval: its time, calls per minute, p50 and p99 (ms)."""
        samples = list(self._samples) + [(time.time(), self.core.metrics.histograms())]
        out: dict[str, list[dict[str, Any]]] = {}
        for (t0, before), (t1, after) in zip(samples, samples[1:]):
            dt = max(t1 - t0, 1e-3)
            for fn, (calls, buckets) in after.items():
                calls0, buckets0 = before.get(fn, (0, [0] * len(buckets)))
                delta = [b - a for a, b in zip(buckets0, buckets)]
                p50, p99 = quantile(delta, 0.5), quantile(delta, 0.99)
                out.setdefault(fn, []).append({
                    "t": round(t1, 3), "per_min": round((calls - calls0) * 60.0 / dt, 2),
                    "p50_ms": None if p50 is None else round(p50 * 1e3, 3),
                    "p99_ms": None if p99 is None else round(p99 * 1e3, 3)})
        return {"interval_s": self.interval_s, "functions": out}


def overview(core: Core, started: float) -> dict[str, Any]:
    """The core: version, kernels, CPU and GPU, uptime, confinement, deployment and health."""
    engine = info()
    group = core.group
    deployment: dict[str, Any] | None = None
    if group is not None and group.deployment:
        deployment = {"id": group.deployment, "group": group.name}
        try:
            d = dp.get_deployment(int(group.deployment), core.root)
            deployment.update(status=d.status, started=d.started, finished=d.finished)
        except (ValueError, dp.DeployError):
            pass  # a deployment id that is not a number (an older state) shows without them
    confinement = ["a user per function" if os.geteuid() == 0 else "the core's own user",
                   "no_new_privs", "no core dumps"]
    if core.landlock:
        confinement.append(f"Landlock ABI {core.landlock_abi}")
    if core.network.netns:
        confinement.append("network namespaces")
    if core.cgroups is not None:
        confinement.append(core.cgroups.describe())
    return {
        "version": _core.__version__,
        "kernels": engine["kernel_variant"],
        "kernels_available": engine["kernels_available"],
        "threads": engine["threads"],
        "cpu": engine["cpu"],
        "gpus": engine["gpus"],
        "uptime_s": round(time.time() - started, 1),
        "landlock_abi": core.landlock_abi,
        "confinement": confinement,
        "deployment": deployment,
        "ready": core.ready(),
        "functions": [{"name": f["name"], "status": f["status"]} for f in core.functions()],
    }


def deployments(core: Core) -> list[dict[str, Any]]:
    """Every deployment, newest first, with each item's outcome."""
    return [d.as_dict() for d in dp.list_deployments(core.root)]


def resources(core: Core) -> dict[str, Any]:
    """Each installed resource with the functions that use it and their permission; each model's
    inputs and outputs where the native engine can read its file."""
    users: dict[str, list[dict[str, str]]] = {}
    kinds: dict[str, str] = {}
    for spec in core.group.functions if core.group is not None else ():
        for g in spec.resources:
            users.setdefault(g.id, []).append({"function": spec.name, "permission": g.permission})
            kinds[g.id] = g.kind
    rows = []
    for r in installed.list_installed(core.root):
        if r["kind"] == "function":
            continue
        row = {k: r.get(k) for k in ("kind", "key", "version", "source", "destination",
                                     "token", "deployment_id")}
        row["digest"] = _digest(r.get("token"))
        row["bytes"] = _size(r.get("version_path"))
        row["used_by"] = users.get(r["key"], [])
        if r["kind"] == "model" and r.get("destination"):
            row["signature"] = _signature(r["destination"])
        rows.append(row)
    listed = {r["key"] for r in rows}
    # Devices and volumes are granted, not installed: they come from the functions' grants.
    for spec in core.group.functions if core.group is not None else ():
        for g in spec.resources:
            if g.kind != "model" and g.id not in listed:
                listed.add(g.id)
                rows.append({"kind": g.kind, "key": g.id, "destination": g.path,
                             "used_by": users.get(g.id, [])})
    return {"resources": rows}


def _digest(token: Optional[str]) -> Optional[str]:
    """What identifies the installed bytes, from the source's change token: a file's SHA-256
    (``size:mtime:sha256``), an S3 object's version or ETag (``s3:bucket/key:etag=...``)."""
    if not token:
        return None
    last = token.rsplit(":", 1)[-1]
    if len(last) == 64 and all(c in "0123456789abcdef" for c in last):
        return "sha256:" + last
    return last if token.startswith("s3:") else token


def _size(path: Optional[str]) -> Optional[int]:
    if not path or not os.path.isdir(path):
        return None
    total = 0
    for d, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(d, name)).st_size
    return total


def _signature(destination: str) -> dict[str, Any]:
    """A native model's inputs and outputs. Only .pyem files are opened here: the core never
    runs a framework's loader (a pickle is code) on a deployed file outside a function."""
    if not os.path.isdir(destination):
        return {"note": "not a directory"}
    files = sorted(f for f in os.listdir(destination) if f.endswith(".pyem"))
    if not files:
        return {"note": "not a native .pyem model: a function sees its signature with "
                        "pyengine.load"}
    try:
        m = loader.load(os.path.join(destination, files[0]), backend="native")
        return {"file": files[0],
                "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
                           for t in m.inputs],
                "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
                            for t in m.outputs]}
    except Exception as exc:  # noqa: BLE001 - a damaged file shows its error, not a 500
        return {"file": files[0], "error": f"{type(exc).__name__}: {exc}"}


def functions(core: Core) -> dict[str, Any]:
    """Each function's status with invocations, errors, latency p50/p99 and batch sizes."""
    rows = []
    batching = {fn: st for (fn, _), st in core.batching_stats().items()}
    hist = core.metrics.histograms()
    errors = core.metrics.errors()
    for f in core.functions():
        calls, buckets = hist.get(f["name"], (0, []))
        p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
        rows.append({**{k: f[k] for k in ("name", "status", "pinned", "workers", "max_workers",
                                         "invocations", "last_error")},
                     "errors": errors.get(f["name"], 0),
                     "p50_ms": None if p50 is None else round(p50 * 1e3, 3),
                     "p99_ms": None if p99 is None else round(p99 * 1e3, 3),
                     "batching": batching.get(f["name"])})
    return {"functions": rows}


def follow_log(root: str, function: str, pattern: str, stop: threading.Event,
               tail: int = LOG_TAIL_LINES, poll_s: float = 0.25) -> Iterator[Optional[str]]:
    """The last ``tail`` lines of ``function``'s log (rotated files included) that contain
    ``pattern``, then each new one as it is written, across rotation; None every ``poll_s``
    with nothing new, so the caller can send a heartbeat. The file read for the tail is the
    one followed, so no line written meanwhile is lost."""
    path = log_path(root, function)
    f: Optional[IO[bytes]] = None
    ino = None
    pending = b""
    try:
        with contextlib.suppress(FileNotFoundError):
            f = open(path, "rb")  # noqa: SIM115 - open while it is followed
            ino = os.fstat(f.fileno()).st_ino
        keep: collections.deque[str] = collections.deque(maxlen=tail)
        for old in log_files(path)[:-1] if f is not None else log_files(path):
            with contextlib.suppress(OSError), open(old, "rb") as fh:
                keep.extend(line for line in _lines(fh.read().split(b"\n")) if pattern in line)
        yield from keep
        while not stop.is_set():
            if f is None:
                try:
                    f = open(path, "rb")  # noqa: SIM115 - open while it is followed
                    ino = os.fstat(f.fileno()).st_ino
                except FileNotFoundError:
                    yield None
                    stop.wait(poll_s)
                    continue
            chunk = f.read(1 << 16)
            if chunk:
                *complete, pending = (pending + chunk).split(b"\n")
                for line in _lines(complete):
                    if pattern in line:
                        yield line
                continue
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino != ino:  # rotated: read the new file from its start
                    f.close()
                    f = None
                    pending = b""
                    continue
            yield None
            stop.wait(poll_s)
    finally:
        if f is not None:
            f.close()


def _lines(raw: list[bytes]) -> Iterator[str]:
    for line in raw:
        if line:
            yield line.decode("utf-8", "replace")[:LOG_LINE_MAX]
