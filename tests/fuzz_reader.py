"""Fuzz target for the .pyem reader (atheris): any bytes -> ModelFormatError or OSError, never a crash.

Run: python tests/fuzz_reader.py CORPUS_DIR -max_total_time=60
The corpus is seeded with valid models so mutations reach deep into the table and graph.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import atheris
import numpy as np

with atheris.instrument_imports():
    import pyengine

SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
PATH = os.path.join(tempfile.mkdtemp(prefix="pyem-fuzz-", dir=SCRATCH), "x.pyem")


def one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        model = pyengine.load(PATH)
    except (pyengine.ModelFormatError, OSError):
        return
    # It loaded: running it with inputs of the declared shape must not crash either.
    feed = {}
    for spec in model.inputs:
        shape = [1 if d < 0 else d for d in spec.shape]
        if int(np.prod(shape)) > 1 << 20:
            return
        feed[spec.name] = np.ones(shape, np.float32)
    with contextlib.suppress(ValueError, MemoryError):  # outputs may be larger than memory
        model.predict(feed)


def seed_corpus(directory: str) -> None:
    """Write valid models covering every op into `directory`."""
    sys.path.insert(0, os.path.dirname(__file__))
    from models import cnn, mlp

    os.makedirs(directory, exist_ok=True)
    mlp(os.path.join(directory, "mlp.pyem"), sizes=(4, 8, 3))
    cnn(os.path.join(directory, "cnn.pyem"), size=8, channels=2)
    cnn(os.path.join(directory, "cnn_nhwc.pyem"), layout="NHWC", size=8, channels=2)
    g = pyengine.GraphBuilder()
    x = g.input("x", [-1, 2, 3, 4])
    y = g.node("Transpose", [x], perm=[0, 2, 3, 1])
    y = g.node("Pad", [y], pads=[0, 1, 0, 0, 0, 1, 0, 0], mode="reflect")
    y = g.node("Concat", [y, y], axis=1)
    y = g.node("Mean", [y], axes=[1], keepdims=False)
    y = g.node("Reshape", [y], shape=[0, -1])
    z = g.node("Mul", [y, g.constant("k", np.ones(1, np.float32))])
    g.output(g.node("Squeeze", [g.node("Sigmoid", [z])]))
    g.save(os.path.join(directory, "shapes.pyem"))


if __name__ == "__main__":
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus:
        seed_corpus(corpus[0])
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
