"""The frameworks pyengine reads models of: the one registry of their names, packages and options.

A framework ``name`` here has its own files and nothing else to touch: ``pyengine/backends/<name>.py``
(``load(location, **options)``: the model run on the framework) and ``pyengine/convert/<name>.py``
(``convert(location, **options)``: the importer to the native graph), plus, when its saved models
need a new detection rule, :mod:`pyengine.locate`. Everything that lists frameworks (``load``'s
backends, ``convert``, ``pyengine info``, the CLI's choices, the bench's ``--compare``) asks this
module. See docs/extending.md.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

#: The file suffixes of Keras models (a .keras zip archive, a legacy HDF5 file), which the
#: TensorFlow importer and backend read.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")

#: The file name of the manifest that names a Chainer network's code (see docs/frameworks.md).
CHAINER_MANIFEST = "pyengine.json"


@dataclass(frozen=True)
class Framework:
    """A framework whose models pyengine loads and converts.

    Attributes
    ----------
    name
        The backend name (``load(backend=...)``), and the stem of its backend and importer modules.
    package
        The Python package that runs its models (checked without importing it).
    options
        The ``load``/``convert`` options its models take.
    saves
        What its saved models look like on disk, for messages that list what was expected.
    """

    name: str
    package: str
    options: frozenset[str]
    saves: str


FRAMEWORKS: dict[str, Framework] = {f.name: f for f in (
    Framework("tensorflow", "tensorflow",
              frozenset({"inputs", "outputs", "signature", "input_shapes"}),
              "a TensorFlow frozen graph (*.pb), SavedModel directory (saved_model.pb) or Keras "
              "model (*.keras, *.h5)"),
    Framework("mxnet", "mxnet", frozenset({"strict", "input_shapes"}),
              "an MXNet checkpoint (<prefix>-symbol.json + <prefix>-NNNN.params)"),
    Framework("chainer", "chainer", frozenset({"chain", "input_shapes"}),
              f"a Chainer model.npz with a {CHAINER_MANIFEST} manifest"),
    Framework("tflite", "tensorflow", frozenset({"input_shapes"}),
              "a TensorFlow Lite model (*.tflite)"),
    Framework("onnx", "onnxruntime", frozenset({"threads", "input_shapes", "outputs"}),
              "an ONNX model (*.onnx)"),
)}

#: The native engine's own models: ``.pyem`` files, which take no options.
NATIVE = "native"

#: What ``load(backend=...)`` takes: ``auto`` (native when the model converts), ``native``, or a
#: framework.
BACKENDS: tuple[str, ...] = ("auto", NATIVE, *FRAMEWORKS)

#: Every kind of model ``locate`` finds, for messages that say what was expected.
EXPECTED = ", ".join(f.saves for f in FRAMEWORKS.values()) + " or a native model (*.pyem)"


def options_for(framework: str, fn: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``fn`` takes, after checking they apply to ``framework``.

    Raises
    ------
    ValueError
        An option this framework's models do not take.
    """
    allowed = FRAMEWORKS[framework].options if framework in FRAMEWORKS else frozenset()
    wrong = sorted(set(options) - allowed)
    if wrong:
        listed = ", ".join(sorted(allowed)) or "none"
        raise ValueError(
            f"option(s) {', '.join(wrong)} do not apply to {framework} models "
            f"(they take: {listed})"
        )
    params = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in params}
