"""Where models run: device strings, the GPUs this machine offers, and the grant hook.

``device`` is ``"cpu"``, ``"cuda"`` (the first GPU), ``"cuda:N"`` or ``"auto"``. ``"auto"``
picks a GPU when one is present and usable, and otherwise the CPU.

Inside a function, a GPU is usable only when the group grants the function the GPU's device
resource (``device: {path: /dev/nvidia0}``). The core tells the function which device files it
was granted through the environment variable ``PYENGINE_GRANTED_DEVICES``: the granted paths,
separated by ``:`` or ``,`` (set and empty: none). When the variable is unset the process is
not a function under a core, and every GPU the CUDA runtime sees counts as granted.

A discrete GPU is granted by its ``/dev/nvidiaN`` file (N is the driver's device minor, read
from ``/proc/driver/nvidia/gpus/<pci bus id>/information``). An integrated GPU (Jetson) is
granted by ``/dev/nvidia0`` or any of the Tegra GPU nodes ``/dev/nvhost-*`` and ``/dev/nvgpu/*``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from pyengine import _core
from pyengine.device_files import TEGRA_PREFIXES as _TEGRA_PREFIXES
from pyengine.errors import DeviceUnavailableError

#: The environment variable a function worker sets to the device paths the group grants it.
GRANT_ENV = "PYENGINE_GRANTED_DEVICES"

_DEVICE_RE = re.compile(r"^cuda(?::(\d+))?$")
_PROC_GPUS = "/proc/driver/nvidia/gpus"


@dataclass(frozen=True)
class Device:
    """A concrete device: ``kind`` ``"cpu"`` or ``"cuda"``, and the GPU index for CUDA."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


#: The CPU.
CPU = Device("cpu")


def parse(device: str) -> Optional[Device]:
    """Parse a device string; ``None`` for ``"auto"``.

    Raises
    ------
    ValueError
        ``device`` is not ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """
    if not isinstance(device, str):
        raise ValueError(f"device={device!r} must be a string: 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device == "auto":
        return None
    if device == "cpu":
        return CPU
    m = _DEVICE_RE.match(device)
    if m is None:
        raise ValueError(
            f"device={device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index >= 0)"
        )
    return Device("cuda", int(m.group(1) or 0))


def cuda_status() -> dict[str, Any]:
    """Whether this build has CUDA support and why GPUs are unusable.

    Returns
    -------
    dict with ``built`` (compiled with PYENGINE_CUDA=ON), ``loaded`` (the CUDA backend library
    opened), ``library`` (its path), ``version`` (CUDA runtime, driver and cuBLAS versions) and
    ``error`` (empty when GPUs are usable, else what is missing).
    """
    return dict(_core.cuda_status())


def _device_minor(pci_bus_id: str) -> Optional[int]:
    """The NVIDIA driver's device minor (the N of /dev/nvidiaN) of a GPU, where /proc says."""
    if not pci_bus_id:
        return None
    try:
        names = os.listdir(_PROC_GPUS)
    except OSError:
        return None
    for name in names:
        if name.lower() != pci_bus_id.lower():
            continue
        try:
            with open(os.path.join(_PROC_GPUS, name, "information"), encoding="utf-8") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() == "Device Minor":
                        return int(value.strip())
        except (OSError, ValueError):
            return None
    return None


def device_path(gpu: dict[str, Any]) -> str:
    """The device file that grants ``gpu`` (an entry of :func:`gpus`)."""
    if gpu.get("integrated"):
        for p in ("/dev/nvhost-gpu", "/dev/nvgpu/igpu0/ctrl"):
            if os.path.exists(p):
                return p
        return "/dev/nvidia0"
    minor = _device_minor(str(gpu.get("pci_bus_id", "")))
    return f"/dev/nvidia{minor if minor is not None else gpu['index']}"


def gpus() -> list[dict[str, Any]]:
    """The CUDA GPUs this machine offers (empty without CUDA support, driver or GPU).

    Returns
    -------
    One dict per GPU: ``index``, ``name``, ``memory_bytes``, ``compute_capability``
    (``"8.7"``), ``pci_bus_id``, ``integrated`` and ``path`` (its device file).
    """
    out = []
    for g in _core.cuda_devices():
        d = dict(g)
        d["path"] = device_path(d)
        out.append(d)
    return out


def granted_paths() -> Optional[list[str]]:
    """The device paths granted to this function (``PYENGINE_GRANTED_DEVICES``); None if unset."""
    raw = os.environ.get(GRANT_ENV)
    if raw is None:
        return None
    return [p for p in re.split(r"[:,]", raw) if p.strip()]


def is_granted(gpu: dict[str, Any], granted: Optional[list[str]]) -> bool:
    """Whether ``gpu`` (an entry of :func:`gpus`) may be used given the granted paths."""
    if granted is None:
        return True
    paths = {os.path.normpath(p.strip()) for p in granted}
    if gpu.get("integrated") and (
        "/dev/nvidia0" in paths or any(p.startswith(_TEGRA_PREFIXES) for p in paths)
    ):
        return True
    return os.path.normpath(str(gpu.get("path") or device_path(gpu))) in paths


def resolve(device: str) -> Device:
    """The device a model loaded with ``device`` runs on.

    ``"auto"``: the first granted GPU, else the CPU. ``"cuda[:N]"``: that GPU, which must be
    granted when running as a function; whether it exists is checked when the model is bound.

    Raises
    ------
    ValueError
        A malformed device string.
    DeviceUnavailableError
        A GPU asked for by name that this function was not granted.
    """
    d = parse(device)
    granted = granted_paths()
    if d is None:
        for g in gpus():
            if is_granted(g, granted):
                return Device("cuda", int(g["index"]))
        return CPU
    if d.kind == "cuda" and granted is not None:
        seen = {int(g["index"]): g for g in gpus()}
        gpu = seen.get(d.index)
        if gpu is not None and not is_granted(gpu, granted):
            raise DeviceUnavailableError(
                f"device={device!r} ({gpu['path']}) is not granted to this function (granted: "
                f"{', '.join(granted) or 'none'}); add the GPU's device resource "
                f"(device: {{path: {gpu['path']}}}) to the function's resources in the group file"
            )
    return d
