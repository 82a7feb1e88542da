"""The image-classification function: a base64 PNG or JPEG in, the top-k labels out.

The core runs this handler in a confined worker; ``engine.load("digits")`` names the deployed
model resource by its id, and ``context.resources["digits"]`` is the directory of the version
this call runs on (its ``labels.txt`` gives the class names).

Event: ``{"image": "<base64 PNG/JPEG>", "top_k": 3}`` (``top_k`` optional, default the
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


def function_handler(event, context):
    """Classify ``event["image"]``; see the module's docstring for the event and answer."""
    global _model
    if not isinstance(event, dict) or not isinstance(event.get("image"), str):
        raise ValueError("the event must be {\"image\": \"<base64 PNG or JPEG>\"}")
    try:
        data = base64.b64decode(event["image"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("'image' is not valid base64") from None
    k = int(event.get("top_k", os.environ.get("TOP_K", "3")))
    if _model is None:
        _model = engine.load(RESOURCE)
    probs = np.asarray(_model.predict(preprocess(data)))[0]
    names = labels(context.resources[RESOURCE])
    top = np.argsort(probs)[::-1][: max(1, k)]
    ranked = [{"label": names[i], "probability": round(float(probs[i]), 6)} for i in top]
    return {"label": ranked[0]["label"], "probability": ranked[0]["probability"], "top": ranked}
