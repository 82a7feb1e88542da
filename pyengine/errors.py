"""Exceptions raised by pyengine."""

from __future__ import annotations

from pyengine import _core

#: A model file or graph that cannot be used (damaged, unsupported). Subclass of ValueError.
ModelFormatError = _core.ModelFormatError

#: A batched model's queue is full (``max_queue_size`` requests wait); the call failed at once.
#: Subclass of RuntimeError. A request that waits past its timeout raises the built-in TimeoutError.
QueueFullError = _core.QueueFullError

#: A batched model was closed before the request ran, or the request came after ``close()``.
#: Subclass of RuntimeError.
BatcherClosedError = _core.BatcherClosedError


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
