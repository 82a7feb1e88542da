"""The example group's function: classify a 64-value feature vector with the `digits` model.

The core (pyengine/core) runs this handler in a worker process with the group's resources
available; ``engine.load("digits")`` names the deployed resource by its id.
"""

from __future__ import annotations

import os

import numpy as np

import pyengine as engine

_model = None


def function_handler(event, context):
    """``event`` = {"x": [64 floats]} -> {"label": int, "top": [[label, probability], ...]}."""
    global _model
    if _model is None:
        _model = engine.load("digits")
    x = np.asarray(event["x"], np.float32).reshape(1, -1)
    probs = np.asarray(_model.predict(x))[0]
    k = int(os.environ.get("TOP_K", "3"))
    top = np.argsort(probs)[::-1][:k]
    return {"label": int(top[0]), "top": [[int(i), float(probs[i])] for i in top]}
