"""What a function sees inside its worker: the call context and resource-backed model handles.

The worker sets ``PYENGINE_RESOURCES`` (JSON: resource id -> destination path) before the
handler's module is imported; ``pyengine.load("<id>")`` then comes here. At the start of each
call the worker pins every resource to the version its destination names at that instant
(:func:`begin_call`), so a call runs on one version from start to end, and a handle from
``pyengine.load`` switches to a newer version between calls.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from pyengine.model import Array, Model, TensorSpec

ENV_RESOURCES = "PYENGINE_RESOURCES"

_lock = threading.Lock()
_pinned: dict[str, str] = {}
_fixed: dict[str, str] = {}


def fix_versions(versions: dict[str, str]) -> None:
    """Resources this worker keeps on one version for its whole life (its rw grants)."""
    _fixed.update(versions)


def _version(resource_id: str, destination: str) -> str:
    return _fixed.get(resource_id) or os.path.realpath(destination)


def destinations() -> dict[str, str]:
    """Resource id -> destination path of the function running in this process."""
    raw = os.environ.get(ENV_RESOURCES)
    return json.loads(raw) if raw else {}


def resolve(resource_id: str) -> str:
    """The version of ``resource_id`` the current call uses (the destination when not in a call)."""
    with _lock:
        pinned = _pinned.get(resource_id)
    if pinned is not None:
        return pinned
    dests = destinations()
    if resource_id not in dests:
        raise KeyError(f"resource {resource_id!r} is not granted to this function; "
                       f"its resources are {sorted(dests)}")
    return _version(resource_id, dests[resource_id])


def begin_call() -> dict[str, str]:
    """Pin each resource to the version its destination names now; returns id -> that path."""
    current = {rid: _version(rid, path) for rid, path in destinations().items()}
    with _lock:
        _pinned.clear()
        _pinned.update(current)
    return current


class ResourceModel(Model):
    """A model loaded by resource id: follows the resource to its newest version between calls."""

    def __init__(self, resource_id: str, backend: str, device: str,
                 options: dict[str, Any]) -> None:
        self.resource_id = resource_id
        self._args = (backend, device, options)
        self._lock = threading.Lock()
        self._path = ""
        self._model: Model | None = None
        self._current()

    def _current(self) -> Model:
        path = resolve(self.resource_id)
        with self._lock:
            if self._model is None or path != self._path:
                from pyengine.model import load

                backend, device, options = self._args
                self._model = load(path, backend=backend, device=device, **options)
                self._path = path
            return self._model

    @property
    def path(self) -> str:
        """The version directory the handle is using now."""
        self._current()
        return self._path

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self._current().backend

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._current().inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._current().outputs

    def _run(self, arrays: list[Array]) -> list[Array]:
        return self._current()._run(arrays)


def load_resource(name: str, backend: str = "auto", device: str = "auto",
                  **options: Any) -> Model | None:
    """``pyengine.load(name)`` in a function: a handle when ``name`` is a granted resource id."""
    if name not in destinations():
        return None
    return ResourceModel(name, backend, device, options)


class Context:
    """The second argument of a handler.

    Attributes
    ----------
    function_name
        The function's name.
    invocation_id
        This call's id (also in the caller's answer and the log lines).
    resources
        Resource id -> local path of the version this call uses.
    logger
        A logger whose lines carry the function name and invocation id.
    """

    def __init__(self, function_name: str, invocation_id: str, deadline: float,
                 resources: dict[str, str], logger: logging.Logger) -> None:
        self.function_name = function_name
        self.invocation_id = invocation_id
        self.resources = resources
        self.logger: logging.LoggerAdapter[logging.Logger] = logging.LoggerAdapter(
            logger, {"invocation": invocation_id})
        self._deadline = deadline

    def remaining_time(self) -> float:
        """Seconds left before the call times out."""
        return max(0.0, self._deadline - time.monotonic())

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the call times out (the AWS Lambda spelling)."""
        return int(self.remaining_time() * 1000)

    def __repr__(self) -> str:
        return (f"<Context function={self.function_name} invocation={self.invocation_id} "
                f"remaining={self.remaining_time():.3f}s resources={sorted(self.resources)}>")
