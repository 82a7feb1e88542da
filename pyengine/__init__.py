"""pyengine: run cloud-trained ML models on edge devices.

Inside a function::

    import pyengine as engine
    model = engine.load("digits")
    y = model.predict(x)
"""

from __future__ import annotations

try:
    from pyengine import _core
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "pyengine's native extension (pyengine._core) is not built. Install the package with "
        "`pip install .` (or `scripts/setup.sh`) from the source tree; a C++17 compiler and "
        f"CMake are needed. Original error: {exc}"
    ) from exc

from pyengine.builder import GraphBuilder
from pyengine.errors import BackendUnavailableError, DeviceUnavailableError, ModelFormatError
from pyengine.model import Model, TensorSpec, load
from pyengine.runtime import info

__version__: str = _core.__version__

__all__ = [
    "BackendUnavailableError",
    "DeviceUnavailableError",
    "GraphBuilder",
    "Model",
    "ModelFormatError",
    "TensorSpec",
    "__version__",
    "info",
    "load",
]
