"""The image-classification function: a PNG or JPEG in, the top-k labels out.

The core runs this handler in a confined worker; ``engine.load("digits")`` names the deployed
model resource by its id, and ``context.resources["digits"]`` is the directory of the version
this call runs on (its ``labels.txt`` gives the class names). ``context.resources["captures"]``
is the volume granted read-only (a camera's capture folder, say): the function may read images
there and nowhere else on the host (the OS refuses it, whatever path the event names).

Event: ``{"image": "<base64 PNG/JPEG>"}`` or ``{"path": "<file in the captures volume>"}``
(relative to the volume, or absolute inside it), and ``"top_k": 3`` (optional, default the
``TOP_K`` environment value). Answer: ``{"label": "7", "probability": 0.99,
"top": [{"label": "7", "probability": 0.99}, ...]}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

import pyengine as engine

RESOURCE = "digits"
VOLUME = "captures"
#: Image files larger than this are refused before reading.
MAX_FILE_BYTES = 16 << 20
#: Decoded images larger than this are refused before resizing (decompression bombs).
MAX_PIXELS = 4096 * 4096
_model = None
_labels: dict[str, list[str]] = {}


def preprocess(data: bytes) -> np.ndarray:
    """Image bytes -> the model's input: 1x1x8x8 float32, 0 for background, 1 for ink.

    Any size and colour mode: converted to grey, area-averaged down to 8x8, and inverted when
    the background is light (dark ink on paper), as the digits were recorded light on dark.
    """
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise ValueError(f"the image is {img.width}x{img.height}; at most {MAX_PIXELS} pixels")
        grey = img.convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"'image' is not a PNG or JPEG image ({exc})") from None
    small = np.asarray(grey.resize((8, 8), Image.Resampling.BOX), np.float32) / 255.0
    if small.mean() > 0.5:  # light background: make the ink the high values
        small = 1.0 - small
    return small.reshape(1, 1, 8, 8)


def labels(directory: str) -> list[str]:
    """The class names in ``directory/labels.txt`` (read once per model version)."""
    if directory not in _labels:
        with open(os.path.join(directory, "labels.txt")) as f:
            _labels[directory] = [line.strip() for line in f if line.strip()]
    return _labels[directory]


def read_from_volume(path: str, volume: str | None) -> bytes:
    """The bytes of ``path`` (relative to the granted ``volume``, or absolute inside it)."""
    if volume is None:
        raise ValueError(f"'path' needs the {VOLUME!r} volume granted to this function")
    root = os.path.realpath(volume)
    full = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, full]) != root:
        raise ValueError(f"'path' {path!r} is outside the {VOLUME!r} volume ({root})")
    try:
        with open(full, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"'path' {path!r} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"'path' {path!r} is over {MAX_FILE_BYTES} bytes")
    return data


def function_handler(event, context):
    """Classify ``event["image"]`` or the file ``event["path"]``; see the module's docstring."""
    global _model
    if isinstance(event, dict) and isinstance(event.get("path"), str):
        data = read_from_volume(event["path"], context.resources.get(VOLUME))
    elif isinstance(event, dict) and isinstance(event.get("image"), str):
        try:
            data = base64.b64decode(event["image"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("'image' is not valid base64") from None
    else:
        raise ValueError("the event must be {\"image\": \"<base64 PNG or JPEG>\"} or "
                         "{\"path\": \"<image file in the captures volume>\"}")
    k = int(event.get("top_k", os.environ.get("TOP_K", "3")))
    if _model is None:
        _model = engine.load(RESOURCE)
    probs = np.asarray(_model.predict(preprocess(data)))[0]
    names = labels(context.resources[RESOURCE])
    top = np.argsort(probs)[::-1][: max(1, k)]
    ranked = [{"label": names[i], "probability": round(float(probs[i]), 6)} for i in top]
    return {"label": ranked[0]["label"], "probability": ranked[0]["probability"], "top": ranked}
