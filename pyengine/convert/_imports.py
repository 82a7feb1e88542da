"""Lazy framework imports shared by importers and backends: a missing framework names its extra."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from pyengine.errors import BackendUnavailableError


def framework(module: str, backend: str, extra: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`BackendUnavailableError` naming the pip extra."""
    if backend == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if backend == "mxnet":
        os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
        import numpy

        # MXNet 1.9.1 reads numpy.bool, an alias numpy removed in 1.24; restore it for MXNet.
        if "bool" not in numpy.__dict__:
            numpy.bool = bool  # type: ignore[attr-defined]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(backend, extra or backend, exc) from exc
