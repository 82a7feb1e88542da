"""Backend selection for :func:`pyengine.load`: find the model, convert it to the native engine
when asked (or when ``auto`` can), else run it on its framework."""

from __future__ import annotations

import importlib
import os
import tempfile
import warnings
from typing import Any

from pyengine.convert import options_for
from pyengine.devices import CPU, Device
from pyengine.errors import (
    DeviceUnavailableError,
    FrameworkFallbackWarning,
    InputShapeUnknownError,
    ModelFormatError,
    UnsupportedOpsError,
)
from pyengine.locate import ModelLocation, locate
from pyengine.model import Model


def _native_from(location: ModelLocation, options: dict[str, Any], device: Device) -> Model:
    from pyengine.backends import native
    from pyengine.convert import to_builder

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


def load(path: str, backend: str, device: Device = CPU, device_auto: bool = True,
         **options: Any) -> Model:
    """See :func:`pyengine.load`; ``device`` is already resolved. Framework models run on the
    CPU: with ``device="auto"`` that is a quiet choice, with a GPU asked for by name an error."""
    from pyengine.backends import native

    wanted = None if backend in ("auto", "native") else backend
    location = locate(path, wanted, epoch=options.pop("epoch", None))
    if location.framework != (wanted or location.framework):
        raise ModelFormatError(
            f"'{location.path}' is a {location.framework} model, not a {backend} one; "
            "pass backend='auto' (or the model's own framework)"
        )
    if location.framework == "native":
        options_for("native", native.load, options)
        return native.load(location.path, device)
    module = importlib.import_module(f"pyengine.backends.{location.framework}")
    backend_options = options_for(location.framework, module.load, options)
    if backend in ("auto", "native"):
        try:
            return _native_from(location, options, device)
        except (UnsupportedOpsError, InputShapeUnknownError) as exc:
            if backend == "native":
                raise
            warnings.warn(
                f"{exc}. pyengine runs this model on {location.framework} instead of the "
                "native engine",
                FrameworkFallbackWarning,
                stacklevel=3,
            )
    if device.kind != "cpu" and not device_auto:
        raise DeviceUnavailableError(
            f"device={str(device)!r}: '{location.path}' runs on {location.framework}, and only "
            "native models run on a GPU here; convert it (pyengine convert) or use device='cpu'"
        )
    model: Model = module.load(location, **backend_options)
    return model
