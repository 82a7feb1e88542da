"""Framework model -> native graph (.pyem): one importer per framework.

>>> import pyengine
>>> pyengine.convert("/models/digits", "digits.pyem")      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
import tempfile
from typing import Any

from pyengine.builder import GraphBuilder
from pyengine.convert._graph import input_shapes_hint
from pyengine.errors import InputShapeUnknownError, ModelFormatError
from pyengine.frameworks import FRAMEWORKS, options_for
from pyengine.locate import ModelLocation, locate


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
    check_free_sizes(location.path, builder)
    return builder


def check_free_sizes(path: str, builder: GraphBuilder) -> None:
    """Refuse a graph whose inputs leave dimensions beyond the batch free when it does not run
    for every size of them (a CNN whose flattened features feed a dense layer: only the trained
    image size fits), so that the problem surfaces here, naming ``input_shapes``, and not as an
    invalid graph when the converted model loads.

    Raises
    ------
    InputShapeUnknownError
        The graph fails the native engine's load-time check with the free sizes it probes.
    """
    from pyengine import _core

    free = [(i["name"], list(i["shape"])) for i in builder.graph["inputs"]
            if any(d < 0 for d in i["shape"][1:])]
    if not free:
        return
    fd, tmp = tempfile.mkstemp(prefix="pyengine-check-", suffix=".pyem")
    os.close(fd)
    try:
        builder.save(tmp)
        _core.Model(tmp)
    except ModelFormatError as exc:
        reason = str(exc).split("invalid graph: ", 1)[-1]
        listed = ", ".join(f"'{name}' {shape}" for name, shape in free)
        raise InputShapeUnknownError(
            f"'{path}': input(s) {listed} leave dimensions beyond the batch free (-1), and the "
            f"graph does not run for every size of them ({reason}); pass "
            f"{input_shapes_hint(free)} with the sizes the model was trained for"
        ) from None
    finally:
        os.unlink(tmp)


WEIGHT_LAYOUTS = ("plain", "auto", "nchwc16", "nchwc8", "nchwc4")


def weight_blocks(weight_layout: str) -> list[int]:
    """The blocks whose convolution weights ``weight_layout`` asks to store: ``plain`` none,
    ``auto`` the block of this machine's kernels, ``nchwc16``/``nchwc8``/``nchwc4`` that block;
    several may be joined with commas (``nchwc16,nchwc4`` for a fleet of x86 and ARM devices).

    Raises
    ------
    ValueError
        A name that is not one of the above.
    """
    from pyengine import _core

    blocks: list[int] = []
    for item in weight_layout.split(","):
        name = item.strip().lower()
        if name not in WEIGHT_LAYOUTS or (name == "plain" and weight_layout.strip() != "plain"):
            raise ValueError(
                f"weight_layout {weight_layout!r}: {item.strip()!r} is not one of "
                f"{', '.join(WEIGHT_LAYOUTS)} (plain alone; the others may be joined with commas)"
            )
        if name == "plain":
            continue
        block = _core.nchwc_block() if name == "auto" else int(name[len("nchwc"):])
        if block not in blocks:
            blocks.append(block)
    return blocks


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    framework: str | None = None,
    weight_layout: str = "plain",
    **options: Any,
) -> str:
    """Convert a TensorFlow (or Keras, or TFLite), MXNet, Chainer or ONNX model into a native
    ``.pyem`` file.

    Parameters
    ----------
    src
        The model file or directory (found as :func:`pyengine.load` finds it).
    dst
        The ``.pyem`` file to write (atomically).
    framework
        Only consider this framework's models in ``src`` (default: whichever is there).
    weight_layout
        ``plain`` (default) stores convolution weights as the ops take them (OIHW), which every
        engine repacks once at load. ``nchwc16``, ``nchwc8``, ``nchwc4`` (joined with commas for
        several) or ``auto`` (this machine's kernels) also store the blocked form those kernels
        use, which an engine with that block reads in place from the mapped file, with no copy;
        any other machine still runs the file from the plain weights (docs/format.md).
    **options
        Importer options: ``inputs``/``outputs`` (TensorFlow node names; ``outputs`` also ONNX
        values to end the graph at), ``input_shapes``
        (``{name: shape}``, -1 free; every framework), ``epoch`` (MXNet), ``chain`` (Chainer: a Chain
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
    blocks = weight_blocks(weight_layout)
    epoch = options.pop("epoch", None)
    location = locate(os.fspath(src), framework, epoch=epoch)
    builder = to_builder(location, **options)
    for block in blocks:
        builder.add_blocked_weights(block)
    return builder.save(dst)
