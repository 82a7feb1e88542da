"""pyengine: run cloud-trained ML models on edge devices.

Inside a function::

    import pyengine as engine
    model = engine.load("digits")
    y = model.predict(x)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyengine.model import Model

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
    from pyengine.loader import load as _load_file
    from pyengine.model import Model, TensorSpec
    from pyengine.sysinfo import info

    __version__: str = _core.__version__

    def load(path: str | os.PathLike[str], backend: str = "auto", device: str = "auto",
             **options: Any) -> Model:
        """Load a model from a file or directory.

        Parameters
        ----------
        path
            A model file, or a directory holding one model (descending into a single top-level
            folder): ``.pyem``; a TensorFlow frozen graph ``.pb`` or SavedModel directory; an MXNet
            ``<prefix>-symbol.json`` + ``<prefix>-NNNN.params``; a Chainer ``model.npz`` (with a
            ``pyengine.json`` manifest or ``chain=``); an ONNX ``.onnx``. Inside a function, a
            resource id (the handle then follows the resource to its newest version between calls).
        backend
            ``"auto"`` converts framework models to the native engine and runs them there, falling
            back to the framework (with one :class:`~pyengine.errors.FrameworkFallbackWarning`) when
            an op does not convert. ``"native"`` converts or fails. ``"tensorflow"``, ``"mxnet"``,
            ``"chainer"``, ``"onnx"`` run the model on that framework.
        device
            ``"cpu"``, ``"cuda"`` (the first GPU), ``"cuda:N"``, or ``"auto"``: a GPU when one is
            present and, inside a function, granted to it (see :mod:`pyengine.devices`), else the CPU.
        **options
            Framework options (an option that does not apply to the model is a ValueError):
            ``inputs``/``outputs``/``signature`` (TensorFlow), ``epoch``/``strict`` (MXNet),
            ``chain`` (Chainer), ``threads`` (ONNX), ``input_shapes`` (all four: sizes the model leaves free).

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        ModelFormatError
            No recognisable model, several candidates, or a damaged model.
        UnsupportedOpsError
            ``backend="native"`` and some ops do not convert (each is listed with its node).
        BackendUnavailableError
            The framework the model needs is not installed (the message names the pip extra).
        ValueError
            An unknown backend or a malformed device string.
        DeviceUnavailableError
            A GPU was asked for and this build has no CUDA support, the CUDA backend or driver is
            missing, there is no such GPU, or it is not granted to the function.
        """
        fspath = os.fspath(path)
        if os.environ.get("PYENGINE_RESOURCES"):  # inside a function: a resource id names its model
            # Imported here: a plain process never loads the core's package.
            from pyengine.core.function_api import load_resource

            handle = load_resource(fspath, backend=backend, device=device, **options)
            if handle is not None:
                return handle
        return _load_file(fspath, backend, device, **options)

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
    from pyengine.core.function_api import capture as _capture

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
