"""What this pyengine build and machine offer."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from pyengine import _core, devices

FRAMEWORKS = {"tensorflow": "tensorflow", "mxnet": "mxnet", "chainer": "chainer", "onnx": "onnxruntime"}


def thread_count() -> int:
    """Intra-op threads: PYENGINE_NUM_THREADS, else the number of cores."""
    env = os.environ.get("PYENGINE_NUM_THREADS", "")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"PYENGINE_NUM_THREADS={env!r} is not a positive integer") from None
        if n < 1:
            raise ValueError(f"PYENGINE_NUM_THREADS={env!r} is not a positive integer")
        return n
    return int(_core.cpu_features()["cores"])


def info() -> dict[str, Any]:
    """Version, CPU features, kernel variant in use, threads, GPUs seen and the backends present.

    ``gpus`` lists the CUDA GPUs (empty when there are none); ``cuda`` says whether this build
    has CUDA support and, in ``error``, why no GPU is usable.

    Framework presence is checked without importing the frameworks.
    """
    return {
        "version": _core.__version__,
        "cpu": dict(_core.cpu_features()),
        "kernel_variant": _core.kernel_variant(),
        "kernels_available": list(_core.kernels_available()),
        "threads": thread_count(),
        "ops": list(_core.op_names()),
        "gpus": devices.gpus(),
        "cuda": devices.cuda_status(),
        "backends": ["native"]
        + [name for name, module in FRAMEWORKS.items() if importlib.util.find_spec(module) is not None],
    }
