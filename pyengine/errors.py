"""Exceptions raised by pyengine."""

from __future__ import annotations

from pyengine import _core

#: A model file or graph that cannot be used (damaged, unsupported). Subclass of ValueError.
ModelFormatError: type[ValueError] = _core.ModelFormatError

#: A batched model's queue is full (``max_queue_size`` requests wait); the call failed at once.
#: Subclass of RuntimeError. A request that waits past its timeout raises the built-in TimeoutError.
QueueFullError = _core.QueueFullError

#: A batched model was closed before the request ran, or the request came after ``close()``.
#: Subclass of RuntimeError.
BatcherClosedError = _core.BatcherClosedError

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


#: Ops that stay on the host by design, with what to do instead (said when a model has one).
HOST_SIDE_OPS = {
    "NonMaxSuppression": "detection post-processing runs on the host: convert up to its inputs "
    "(outputs=[boxes, scores], `--output-node` on the command line) and call "
    "pyengine.detection.non_max_suppression on what the model returns",
}


class UnsupportedOpsError(ModelFormatError):  # type: ignore[misc,valid-type]
    """A framework model uses ops the native engine cannot run; ``ops`` lists (node, op) pairs."""

    def __init__(self, path: str, framework: str, ops: list[tuple[str, str]]) -> None:
        listed = "; ".join(f"{node} ({op})" for node, op in ops)
        kinds = sorted({op for _, op in ops})
        hints = "".join(f" {op}: {HOST_SIDE_OPS[op]}." for op in kinds if op in HOST_SIDE_OPS)
        super().__init__(
            f"'{path}': cannot convert this {framework} model to the native engine: "
            f"{len(ops)} node(s) use unsupported op(s) {', '.join(kinds)}: {listed}.{hints} "
            f"Run it with backend='{framework}' (or 'auto', which falls back to the framework)"
        )
        self.path = path
        self.framework = framework
        self.ops = list(ops)


class QuantizedModelError(UnsupportedOpsError):
    """A quantized model the native importer does not take yet (``found`` says what made it
    quantized); ``ops`` lists (operators, op) pairs. ``backend="auto"`` falls back to the
    framework, as for any :class:`UnsupportedOpsError`."""

    def __init__(self, path: str, framework: str, found: str, ops: list[tuple[str, str]]) -> None:
        super().__init__(path, framework, ops)
        listed = ", ".join(f"{op} ({node})" for node, op in ops)
        self.args = (
            f"'{path}': a quantized {framework} model: {found}, read by {listed}. The native "
            f"importer takes float32 {framework} models (quantized {framework} import is not "
            "supported yet): convert the model without quantization, or run it with "
            f"backend='{framework}' (or 'auto', which falls back to the framework)",
        )


class FrameworkFallbackWarning(UserWarning):
    """``backend="auto"`` could not convert a model and runs it on its framework instead."""


class FrameworkVersionWarning(UserWarning):
    """A model was saved by a newer framework version than the one installed."""


class InputShapeUnknownError(ModelFormatError):  # type: ignore[misc,valid-type]
    """Converting needs an input's shape, which the model does not record; pass ``input_shapes``."""
