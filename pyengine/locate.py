"""Find the model inside a file or directory and tell which framework saved it.

Used by :func:`pyengine.load` and :func:`pyengine.convert`; it never imports a framework.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pyengine.errors import ModelFormatError
from pyengine.frameworks import CHAINER_MANIFEST, EXPECTED, KERAS_SUFFIXES

_PARAMS = re.compile(r"^(?P<prefix>.+)-(?P<epoch>\d{4,})\.params$")


@dataclass(frozen=True)
class ModelLocation:
    """A model found on disk.

    Attributes
    ----------
    framework
        ``"native"`` or a name in :data:`pyengine.frameworks.FRAMEWORKS`.
    path
        The model's main file (``.pb``, ``.keras``/``.h5``, ``-symbol.json``, ``.npz``,
        ``.onnx``, ``.tflite``, ``.pyem``), or the
        directory of a TensorFlow SavedModel.
    extra
        Framework details: ``saved_model`` and ``keras`` (TensorFlow), ``params`` and ``epoch`` (MXNet),
        ``manifest`` (Chainer, the parsed manifest or None).
    """

    framework: str
    path: str
    extra: dict[str, Any] = field(default_factory=dict)


def _mxnet(symbol: str, epoch: int | None) -> ModelLocation:
    prefix = symbol[: -len("-symbol.json")]
    folder, base = os.path.split(prefix)
    epochs: dict[int, str] = {}
    for f in os.listdir(folder or "."):
        m = _PARAMS.match(f)
        if m and m.group("prefix") == base:
            epochs[int(m.group("epoch"))] = os.path.join(folder, f)
    if not epochs:
        raise ModelFormatError(
            f"'{symbol}': MXNet symbol without weights; expected '{prefix}-NNNN.params' beside it"
        )
    if epoch is None:
        epoch = max(epochs)
    elif epoch not in epochs:
        raise ModelFormatError(
            f"'{symbol}': no weights for epoch {epoch}; found epochs {sorted(epochs)}"
        )
    return ModelLocation(
        "mxnet", symbol, {"params": epochs[epoch], "epoch": epoch, "prefix": prefix}
    )


def _chainer(npz: str) -> ModelLocation:
    manifest_path = os.path.join(os.path.dirname(npz), CHAINER_MANIFEST)
    manifest = None
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError) as exc:
            raise ModelFormatError(
                f"'{manifest_path}': not a readable JSON manifest ({exc})"
            ) from None
        if (
            not isinstance(manifest, dict)
            or not isinstance(manifest.get("module"), str)
            or not isinstance(manifest.get("class"), str)
        ):
            raise ModelFormatError(
                f"'{manifest_path}': expected a JSON object with string fields "
                "'module' (the .py file "
                "defining the network) and 'class' (its Chain class); see docs/frameworks.md"
            )
        manifest = dict(manifest, _dir=os.path.dirname(manifest_path))
    return ModelLocation("chainer", npz, {"manifest": manifest})


def _classify_file(path: str, epoch: int | None) -> ModelLocation | None:
    base = os.path.basename(path)
    if base == "saved_model.pb" or base == "saved_model.pbtxt":
        return ModelLocation("tensorflow", os.path.dirname(path), {"saved_model": True})
    if base.endswith(".pb"):
        return ModelLocation("tensorflow", path, {"saved_model": False})
    if base.endswith(KERAS_SUFFIXES):
        return ModelLocation("tensorflow", path, {"saved_model": False, "keras": True})
    if base.endswith("-symbol.json"):
        return _mxnet(path, epoch)
    m = _PARAMS.match(base)
    if m:
        sym = os.path.join(os.path.dirname(path), m.group("prefix") + "-symbol.json")
        if not os.path.isfile(sym):
            raise ModelFormatError(
                f"'{path}': MXNet weights without their symbol; expected '{sym}'"
            )
        return _mxnet(sym, int(m.group("epoch")) if epoch is None else epoch)
    if base.endswith(".onnx"):
        return ModelLocation("onnx", path)
    if base.endswith(".tflite"):
        return ModelLocation("tflite", path)
    if base.endswith(".pyem"):
        return ModelLocation("native", path)
    if base.endswith(".npz"):
        return _chainer(path)
    return None


def _candidates(folder: str, epoch: int | None) -> list[ModelLocation]:
    names = sorted(os.listdir(folder))
    if "saved_model.pb" in names or "saved_model.pbtxt" in names:
        return [ModelLocation("tensorflow", folder, {"saved_model": True})]
    found: list[ModelLocation] = []
    for name in names:
        p = os.path.join(folder, name)
        if not os.path.isfile(p) or _PARAMS.match(name):  # weights come with their symbol
            continue
        loc = _classify_file(p, epoch)
        if loc is not None:
            found.append(loc)
    # An .npz without a manifest beside another model is data (sample inputs), not a Chainer model.
    if any(f.framework != "chainer" for f in found):
        found = [f for f in found if f.framework != "chainer" or f.extra.get("manifest")]
    return found


def locate(path: str, framework: str | None = None, epoch: int | None = None) -> ModelLocation:
    """Find the model at ``path``.

    Parameters
    ----------
    path
        A model file, or a directory holding one model (a directory whose only entry is a folder
        is searched inside that folder, as unpacked archives often have one).
    framework
        Only consider this framework's models (``None`` or ``"auto"``: any).
    epoch
        MXNet: the checkpoint epoch to use (default: the highest present).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ModelFormatError
        No recognisable model, several candidates, or a model missing its other half.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model at '{path}' (expected {EXPECTED})")
    if framework in (None, "auto"):
        framework = None
    if os.path.isfile(path):
        loc = _classify_file(path, epoch)
        if loc is None:
            if framework == "tensorflow":
                return ModelLocation("tensorflow", path, {"saved_model": False})
            if framework in ("onnx", "tflite"):
                return ModelLocation(framework, path)
            raise ModelFormatError(
                f"'{path}' is not a recognisable model file; expected {EXPECTED}"
            )
        return loc
    folder = path
    entries = [e for e in os.listdir(folder) if not e.startswith(".")]
    if len(entries) == 1 and os.path.isdir(os.path.join(folder, entries[0])):
        folder = os.path.join(folder, entries[0])
    found = _candidates(folder, epoch)
    if framework is not None:
        found = [f for f in found if f.framework == framework]
    if not found:
        wanted = f"a {framework} model" if framework else EXPECTED
        raise ModelFormatError(f"'{path}' holds no recognisable model; expected {wanted}")
    if len(found) > 1:
        listed = ", ".join(f"{os.path.basename(f.path)} ({f.framework})" for f in found)
        raise ModelFormatError(
            f"'{path}' holds {len(found)} candidate models: {listed}; pass the file's path "
            "(or backend=...) to pick one"
        )
    return found[0]
