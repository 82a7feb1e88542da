"""Keras model files (``.keras`` zip archives, legacy ``.h5``) frozen to a TensorFlow GraphDef.

The TensorFlow importer and backend both read the frozen graph, so a Keras file converts and
runs exactly as the frozen graph of the same model does (see docs/frameworks.md).
"""

from __future__ import annotations

import re
import zipfile
from typing import Any

from pyengine.errors import ModelFormatError

#: The first bytes of every HDF5 file.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_container(path: str) -> None:
    """Refuse a file that is not the container its suffix promises before Keras reads it, so a
    truncated or foreign file is named with what was wrong."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelFormatError(f"'{path}': cannot read ({exc})") from None
    if path.endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise ModelFormatError(
                f"'{path}' is not a Keras archive: a .keras file is a zip archive (with "
                "config.json and model.weights.h5), and this one is not a readable zip "
                "(truncated or another kind of file)"
            )
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise ModelFormatError(f"'{path}': damaged Keras archive ({exc})") from None
        if "config.json" not in names:
            raise ModelFormatError(
                f"'{path}': Keras archive without config.json (holds {sorted(names)[:5]})"
            )
        if bad is not None:
            raise ModelFormatError(f"'{path}': damaged Keras archive (member '{bad}' fails its CRC)")
    elif head != HDF5_SIGNATURE:
        raise ModelFormatError(
            f"'{path}' is not a Keras HDF5 model: it does not start with the HDF5 signature "
            f"(first bytes {head!r})"
        )


def _node_name(name: str, fallback: str) -> str:
    """``name`` made a valid TensorFlow node name (letters, digits, ``_.-/``)."""
    clean = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name).lstrip("_.-/")
    return clean or fallback


def freeze_keras(tf: Any, path: str) -> tuple[Any, list[str], list[str]]:
    """Load the Keras model at ``path`` (inference only, no custom objects) and freeze its call
    with a free batch into a GraphDef.

    Returns
    -------
    The GraphDef, its input node names (the model's input names) and its output node names (the
    model's output names where Keras gives them).

    Raises
    ------
    ModelFormatError
        The file is damaged, not a Keras model, or a model Keras cannot load without its code.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    _check_container(path)
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, KeyError, TypeError... by case
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(
            f"'{path}': Keras cannot load this model ({type(exc).__name__}: {reason})"
        ) from None
    try:
        model_inputs = list(model.inputs)
    except (AttributeError, ValueError):
        model_inputs = []
    if not model_inputs:
        raise ModelFormatError(
            f"'{path}': the Keras model has no defined inputs (a subclassed model saved before "
            "it was built); save it after calling it once, or export a SavedModel"
        )
    names: list[str] = []
    specs = []
    for i, t in enumerate(model_inputs):
        name = _node_name(getattr(t, "name", "") or "", f"input_{i}")
        while name in names:
            name += "_"
        names.append(name)
        dtype = tf.as_dtype(getattr(t, "dtype", "float32") or "float32")
        specs.append(tf.TensorSpec([None, *t.shape[1:]], dtype, name=name))

    def call(*xs: Any) -> Any:
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    try:
        concrete = tf.function(call).get_concrete_function(*specs)
        frozen = convert_variables_to_constants_v2(concrete)
    except Exception as exc:
        raise ModelFormatError(
            f"'{path}': TensorFlow cannot trace this Keras model ({type(exc).__name__}: {exc})"
        ) from None
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name.split(":")[0] for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name.split(":")[0] for t in frozen.outputs]
    wanted = list(getattr(model, "output_names", None) or [])
    if len(wanted) == len(outputs):
        outputs = _rename_outputs(graph_def, outputs, wanted)
    return graph_def, inputs, outputs


def _rename_outputs(graph_def: Any, outputs: list[str], wanted: list[str]) -> list[str]:
    """Give the output nodes (the trailing Identity nodes nothing reads) the model's output
    names, where those are free, so converted and framework models expose the Keras names."""
    taken = {n.name for n in graph_def.node}
    read = {i.lstrip("^").split(":")[0] for n in graph_def.node for i in n.input}
    by_name = {n.name: n for n in graph_def.node}
    renamed = []
    for old, want in zip(outputs, wanted):
        new = _node_name(want, old)
        if new != old and new not in taken and old not in read:
            by_name[old].name = new
            taken.add(new)
            renamed.append(new)
        else:
            renamed.append(old)
    return renamed
