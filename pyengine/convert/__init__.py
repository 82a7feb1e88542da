"""Framework model -> native graph (.pyem): one importer per framework.

>>> import pyengine
>>> pyengine.convert("/models/digits", "digits.pyem")      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any, Callable

from pyengine.builder import GraphBuilder
from pyengine.errors import ModelFormatError
from pyengine.locate import ModelLocation, locate

FRAMEWORKS = ("tensorflow", "mxnet", "chainer", "onnx")

#: The options each framework's models take in load() and convert() (``epoch`` is MXNet's too).
OPTIONS = {
    "tensorflow": {"inputs", "outputs", "signature", "input_shapes"},
    "mxnet": {"strict", "input_shapes"},
    "chainer": {"chain", "input_shapes"},
    "onnx": {"threads"},
    "native": set(),
}


def options_for(framework: str, fn: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``fn`` takes, after checking they apply to ``framework``.

    Raises
    ------
    ValueError
        An option this framework's models do not take.
    """
    wrong = sorted(set(options) - OPTIONS[framework])
    if wrong:
        allowed = ", ".join(sorted(OPTIONS[framework])) or "none"
        raise ValueError(
            f"option(s) {', '.join(wrong)} do not apply to {framework} models "
            f"(they take: {allowed})"
        )
    params = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in params}


def to_builder(location: ModelLocation, **options: Any) -> GraphBuilder:
    """Import the located model into a :class:`GraphBuilder` (not yet written).

    Raises
    ------
    UnsupportedOpsError
        The model uses ops the native engine lacks (every one is listed with its node).
    ModelFormatError
        The model is damaged or cannot be read.
    BackendUnavailableError
        The framework the importer needs is not installed.
    """
    if location.framework not in FRAMEWORKS:
        raise ModelFormatError(f"'{location.path}' is already a native model; nothing to convert")
    module = importlib.import_module(f"pyengine.convert.{location.framework}")
    try:
        builder: GraphBuilder = module.convert(
            location, **options_for(location.framework, module.convert, options)
        )
    except (KeyError, IndexError, AttributeError) as exc:  # a structurally damaged graph
        raise ModelFormatError(
            f"'{location.path}': malformed {location.framework} model ({type(exc).__name__}: {exc})"
        ) from exc
    return builder


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    framework: str | None = None,
    **options: Any,
) -> str:
    """Convert a TensorFlow, MXNet, Chainer or ONNX model into a native ``.pyem`` file.

    Parameters
    ----------
    src
        The model file or directory (found as :func:`pyengine.load` finds it).
    dst
        The ``.pyem`` file to write (atomically).
    framework
        Only consider this framework's models in ``src`` (default: whichever is there).
    **options
        Importer options: ``inputs``/``outputs`` (TensorFlow node names), ``input_shapes``
        (``{name: shape}``; MXNet and Chainer), ``epoch`` (MXNet), ``chain`` (Chainer: a Chain
        instance when the package has no manifest).

    Returns
    -------
    The path written.

    Raises
    ------
    UnsupportedOpsError
        Some ops have no native equivalent; the message lists every one with its node name.
    ModelFormatError
        No model, several candidates, or a damaged model.
    """
    epoch = options.pop("epoch", None)
    location = locate(os.fspath(src), framework, epoch=epoch)
    return to_builder(location, **options).save(dst)
