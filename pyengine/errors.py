"""Exceptions raised by pyengine."""

from __future__ import annotations

from pyengine import _core

#: A model file or graph that cannot be used (damaged, unsupported). Subclass of ValueError.
ModelFormatError = _core.ModelFormatError

#: A device was asked for that this build or machine cannot provide: no CUDA support in the
#: build, the CUDA backend or driver missing, no such GPU, or a GPU not granted to the function.
#: Subclass of RuntimeError; the message names what is missing.
DeviceUnavailableError = _core.DeviceUnavailableError


class BackendUnavailableError(ImportError):
    """A backend's framework is not installed; the message names the pip extra to install."""

    def __init__(self, backend: str, extra: str, cause: BaseException | None = None) -> None:
        detail = f" ({cause})" if cause is not None else ""
        super().__init__(
            f"the {backend} backend needs its framework, which is not importable{detail}; "
            f"install it with: pip install 'pyengine[{extra}]'"
        )
        self.backend = backend
        self.extra = extra
