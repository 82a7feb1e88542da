"""Model loading: find the model, convert it to the native engine when asked (or when ``auto``
can), else run it on its framework's backend.

The backends are the modules ``pyengine.backends.<name>``, one per entry of
:data:`pyengine.frameworks.FRAMEWORKS` plus ``native``; :func:`pyengine.load` comes here for
model files (inside a function, the core's function API first turns a resource id into a handle
that loads through here).
"""

from __future__ import annotations

import importlib
import os
import tempfile
import warnings
from typing import Any

from pyengine import devices
from pyengine.backends import native
from pyengine.convert import to_builder
from pyengine.devices import Device
from pyengine.errors import (
    DeviceUnavailableError,
    FrameworkFallbackWarning,
    InputShapeUnknownError,
    ModelFormatError,
    UnsupportedOpsError,
)
from pyengine.frameworks import BACKENDS, NATIVE, options_for
from pyengine.locate import ModelLocation, locate
from pyengine.model import Model

__all__ = ["BACKENDS", "load"]


def _native_from(location: ModelLocation, options: dict[str, Any], device: Device) -> Model:
    builder = to_builder(location, **options)
    fd, tmp = tempfile.mkstemp(prefix="pyengine-", suffix=".pyem")
    os.close(fd)
    try:
        builder.save(tmp)
        model = native.load(tmp, device)  # mapped: the file can go once loaded
    finally:
        os.unlink(tmp)
    model.path = location.path
    return model


def load(path: str | os.PathLike[str], backend: str = "auto", device: str = "auto",
         **options: Any) -> Model:
    """Load the model file or directory ``path``; see :func:`pyengine.load` for the arguments
    and errors. Framework models run on the CPU: with ``device="auto"`` that is a quiet choice,
    with a GPU asked for by name an error."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    dev = devices.resolve(device)
    wanted = None if backend in ("auto", NATIVE) else backend
    location = locate(os.fspath(path), wanted, epoch=options.pop("epoch", None))
    if location.framework != (wanted or location.framework):
        raise ModelFormatError(
            f"'{location.path}' is a {location.framework} model, not a {backend} one; "
            "pass backend='auto' (or the model's own framework)"
        )
    if location.framework == NATIVE:
        options_for(NATIVE, native.load, options)
        return native.load(location.path, dev)
    module = importlib.import_module(f"pyengine.backends.{location.framework}")
    backend_options = options_for(location.framework, module.load, options)
    if backend in ("auto", NATIVE):
        try:
            return _native_from(location, options, dev)
        except (UnsupportedOpsError, InputShapeUnknownError) as exc:
            if backend == NATIVE:
                raise
            warnings.warn(
                f"{exc}. pyengine runs this model on {location.framework} instead of the "
                "native engine",
                FrameworkFallbackWarning,
                stacklevel=3,
            )
    if dev.kind != "cpu" and device != "auto":
        raise DeviceUnavailableError(
            f"device={str(dev)!r}: '{location.path}' runs on {location.framework}, and only "
            "native models run on a GPU here; convert it (pyengine convert) or use device='cpu'"
        )
    model: Model = module.load(location, **backend_options)
    return model
