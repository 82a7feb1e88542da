"""Quick start: write a small native model, load it zero-copy, run it, and show the engine.

Run with ``python examples/quickstart.py [WORKDIR]``.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

import pyengine


def write_mlp(path: str, seed: int = 0) -> str:
    """A 64-256-10 MLP with softmax, written as a .pyem file."""
    rng = np.random.default_rng(seed)
    g = pyengine.GraphBuilder(producer="examples/quickstart.py")
    x = g.input("x", [-1, 64])
    w0 = g.constant("fc0/w", rng.standard_normal((64, 256)).astype(np.float32) / 8)
    b0 = g.constant("fc0/b", np.zeros(256, np.float32))
    h = g.node("Dense", [x, w0, b0], name="fc0", activation="relu")
    w1 = g.constant("fc1/w", rng.standard_normal((256, 10)).astype(np.float32) / 16)
    b1 = g.constant("fc1/b", np.zeros(10, np.float32))
    g.output(g.node("Softmax", [g.node("Dense", [h, w1, b1], name="fc1")], name="probs"))
    return g.save(path)


def main(workdir: str) -> None:
    path = write_mlp(os.path.join(workdir, "mlp.pyem"))
    model = pyengine.load(path)
    print(model)
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    probs = model.predict(x)
    print("predicted classes:", probs.argmax(axis=1).tolist())
    print("row sums (softmax):", np.round(probs.sum(axis=1), 5).tolist())
    info = pyengine.info()
    print(f"pyengine {info['version']}: kernels {info['kernel_variant']}, {info['threads']} threads")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
