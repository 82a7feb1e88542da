"""An example function: classify 64-feature rows with the group's "digits" model.

The model is loaded once, when the core starts this pinned function; the handle follows the
resource to each new version a deployment installs.
"""

import os

import numpy as np

import pyengine as engine

model = engine.load("digits")


def function_handler(event, context):
    x = np.asarray(event["x"], dtype=np.float32).reshape(-1, 64)
    probs = model.predict(x)
    context.logger.info("classified %d row(s)", len(x))
    return {
        "classes": probs.argmax(axis=1).tolist(),
        "confidence": np.round(probs.max(axis=1).astype(np.float64), 4).tolist(),
        "model_version": os.path.basename(context.resources["digits"]),
    }
