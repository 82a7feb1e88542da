"""What this pyengine build and machine offer (:func:`pyengine.info`), and the native engine's
thread count."""

from __future__ import annotations

import importlib.util
from typing import Any

from pyengine import _core, devices
from pyengine.frameworks import FRAMEWORKS, NATIVE


def thread_count() -> int:
    """Intra-op threads of the native engine's pool: PYENGINE_NUM_THREADS, else the number of cores.

    Raises
    ------
    ValueError
        PYENGINE_NUM_THREADS is set to something other than an integer from 1 to 1024.
    """
    return int(_core.num_threads())


def set_thread_count(n: int) -> None:
    """Change the native engine's intra-op thread count for this process (n >= 1)."""
    _core.set_num_threads(int(n))


def info() -> dict[str, Any]:
    """Version, CPU features, kernel variant (and its int8 GEMM path), threads, GPUs and backends.

    ``gpus`` lists the CUDA GPUs (empty when there are none); ``cuda`` says whether this build
    has CUDA support and, in ``error``, why no GPU is usable.

    Framework presence is checked without importing the frameworks.
    """
    return {
        "version": _core.__version__,
        "cpu": dict(_core.cpu_features()),
        "kernel_variant": _core.kernel_variant(),
        "int8_kernel": _core.int8_kernel(),
        "kernels_available": list(_core.kernels_available()),
        "threads": thread_count(),
        "ops": list(_core.op_names()),
        "gpus": devices.gpus(),
        "cuda": devices.cuda_status(),
        "backends": [NATIVE]
        + [f.name for f in FRAMEWORKS.values() if importlib.util.find_spec(f.package) is not None],
    }
