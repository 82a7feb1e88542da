"""The device files a device resource opens: a GPU's node and the companion nodes its driver
needs. Paths only (no native core): the deploy checks them, the core grants them.
"""

from __future__ import annotations

import os
import re

#: An integrated GPU's (Jetson) nodes.
TEGRA_PREFIXES = ("/dev/nvhost-", "/dev/nvgpu/")
_NVIDIA_NODE_RE = re.compile(r"^/dev/nvidia\d+$")
#: The nodes the NVIDIA driver needs beside ``/dev/nvidiaN``: required, then where present.
NVIDIA_COMPANIONS = ("/dev/nvidiactl", "/dev/nvidia-uvm")
NVIDIA_OPTIONAL = ("/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
#: A Jetson's GPU driver: the memory manager, then every ``/dev/nvhost-*`` node present.
TEGRA_COMPANIONS = ("/dev/nvmap",)


def _names(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def is_gpu_node(path: str) -> bool:
    """Whether ``path`` is a GPU's device file (``/dev/nvidiaN``, ``/dev/nvhost-*``,
    ``/dev/nvgpu/...``): granting it grants its companions (:func:`companions`)."""
    return bool(_NVIDIA_NODE_RE.match(path)) or path.startswith(TEGRA_PREFIXES)


def companions(path: str) -> tuple[list[str], list[str]]:
    """The other device files a GPU granted by ``path`` needs: (required, present optional).

    A discrete GPU (``/dev/nvidiaN``) needs ``/dev/nvidiactl`` and ``/dev/nvidia-uvm`` (made
    by ``nvidia-modprobe -u -c 0`` or the first CUDA program run as root), and uses
    ``/dev/nvidia-uvm-tools`` and ``/dev/nvidia-modeset`` where present. A Jetson GPU needs
    ``/dev/nvmap`` and every ``/dev/nvhost-*`` node (and ``/dev/nvgpu/*``) present. Other
    devices have none. Required nodes are listed whether or not they exist (the caller says
    which is missing); optional ones only when they exist.
    """
    if _NVIDIA_NODE_RE.match(path):
        return list(NVIDIA_COMPANIONS), [p for p in NVIDIA_OPTIONAL if os.path.exists(p)]
    if path.startswith(TEGRA_PREFIXES):
        present = [f"/dev/{n}" for n in _names("/dev") if n.startswith("nvhost-")]
        present += [f"/dev/nvgpu/{n}" for n in _names("/dev/nvgpu")]  # a directory per GPU
        return list(TEGRA_COMPANIONS), [p for p in present if p != path]
    return [], []


def device_nodes(path: str) -> tuple[list[str], list[str]]:
    """(the device files a grant of ``path`` opens, the required ones missing): the node itself
    and, for a GPU, its companions (:func:`companions`)."""
    required, optional = companions(path)
    nodes = [path, *optional]
    missing: list[str] = []
    for node in required:
        (nodes if os.path.exists(node) else missing).append(node)
    return [n for n in nodes if os.path.exists(n)], missing

