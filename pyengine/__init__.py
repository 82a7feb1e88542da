"""pyengine: run cloud-trained ML models on edge devices.

Inside a function::

    import pyengine as engine
    model = engine.load("digits")
    y = model.predict(x)
"""

from __future__ import annotations

from typing import Any

_CORE_MISSING: ImportError | None = None
try:
    from pyengine import _core as _core  # explicit re-export (mypy): other modules import it from here
except ImportError as exc:  # pragma: no cover - only without a build
    # Deployment (pyengine.deploy, pyengine.sources, `pyengine deploy`) needs no native code, so
    # the package still imports; the model API raises this error when first used.
    _CORE_MISSING = ImportError(
        "pyengine's native extension (pyengine._core) is not built. Install the package with "
        "`pip install .` (or `scripts/setup.sh`) from the source tree; a C++17 compiler and "
        f"CMake are needed. Original error: {exc}"
    )
    _CORE_MISSING.__cause__ = exc

if _CORE_MISSING is None:
    from pyengine.batching import BatchedModel, BatchingConfig
    from pyengine.builder import GraphBuilder
    from pyengine.convert import convert
    from pyengine.errors import (
        BackendUnavailableError,
        BatcherClosedError,
        DeviceUnavailableError,
        FrameworkFallbackWarning,
        FrameworkVersionWarning,
        InputShapeUnknownError,
        ModelFormatError,
        QueueFullError,
        UnsupportedOpsError,
    )
    from pyengine.model import Model, TensorSpec, load
    from pyengine.runtime import info

    __version__: str = _core.__version__
else:  # pragma: no cover - only without a build

    def __getattr__(name: str) -> Any:
        # Only the model API needs the core; anything else (a submodule being imported with
        # `from pyengine import deploy`) must get AttributeError so the import system goes on.
        if name in __all__:
            raise _CORE_MISSING  # type: ignore[misc]
        raise AttributeError(f"module 'pyengine' has no attribute {name!r}")


def quantize(model: Any, calibration: Any, output: Any, **options: Any) -> Any:
    """Post-training static int8 quantization of a float .pyem model; see
    :func:`pyengine.quantization.quantize` (imported on first use)."""
    from pyengine.quantization import quantize as _quantize

    return _quantize(model, calibration, output, **options)


def capture(inputs: Any, outputs: Any = None, meta: Any = None) -> int:
    """Record a sample (inputs, outputs, meta) for training, inside a function run by the core.

    The core spools it on disk (fsynced before this returns) and uploads it to the S3 prefix
    of its configuration in batches; see docs/messaging.md. Returns the sample's sequence
    number; raises RuntimeError outside a function call.
    """
    from pyengine.core.runtime import capture as _capture

    return _capture(inputs, outputs, meta)


__all__ = [
    "BackendUnavailableError",
    "BatchedModel",
    "BatcherClosedError",
    "BatchingConfig",
    "FrameworkFallbackWarning",
    "FrameworkVersionWarning",
    "DeviceUnavailableError",
    "GraphBuilder",
    "InputShapeUnknownError",
    "Model",
    "ModelFormatError",
    "QueueFullError",
    "TensorSpec",
    "UnsupportedOpsError",
    "__version__",
    "capture",
    "convert",
    "info",
    "load",
    "quantize",
]
