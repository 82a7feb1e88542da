"""Small native models that tests and benches build with GraphBuilder."""

from __future__ import annotations

import numpy as np

import pyengine


def mlp(path: str, sizes: tuple[int, ...] = (64, 256, 256, 10), seed: int = 0) -> str:
    """A Dense/ReLU stack ending in softmax."""
    rng = np.random.default_rng(seed)
    g = pyengine.GraphBuilder()
    h = g.input("x", [-1, sizes[0]])
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = g.constant(f"fc{i}/w", rng.standard_normal((k, n)).astype(np.float32) / np.sqrt(k))
        b = g.constant(f"fc{i}/b", rng.standard_normal(n).astype(np.float32) * 0.1)
        last = i == len(sizes) - 2
        h = g.node("Dense", [h, w, b], name=f"fc{i}", activation="none" if last else "relu")
    g.output(g.node("Softmax", [h], name="probs"))
    return g.save(path)


def cnn(path: str, layout: str = "NCHW", size: int = 28, channels: int = 16, seed: int = 0) -> str:
    """conv-bn-relu-pool x2, global pool, dense: a small image classifier."""
    rng = np.random.default_rng(seed)
    g = pyengine.GraphBuilder()
    shape = [-1, 1, size, size] if layout == "NCHW" else [-1, size, size, 1]
    h = g.input("image", shape)
    c_in = 1
    for i, c in enumerate((channels, channels * 2)):
        w = g.constant(f"conv{i}/w", rng.standard_normal((c, c_in, 3, 3)).astype(np.float32) * 0.3)
        h = g.node("Conv2D", [h, w], name=f"conv{i}", layout=layout, pads=[1, 1, 1, 1])
        bn = [g.constant(f"bn{i}/{k}", v) for k, v in (
            ("scale", rng.uniform(0.5, 1.5, c)), ("bias", rng.standard_normal(c) * 0.1),
            ("mean", rng.standard_normal(c) * 0.1), ("var", rng.uniform(0.5, 1.5, c)))]
        h = g.node("BatchNorm", [h, *bn], name=f"bn{i}", axis=1 if layout == "NCHW" else -1)
        h = g.node("Relu", [h], name=f"relu{i}")
        h = g.node("MaxPool", [h], name=f"pool{i}", layout=layout, kernel=[2, 2], strides=[2, 2])
        c_in = c
    h = g.node("GlobalAvgPool", [h], name="gap", layout=layout)
    h = g.node("Flatten", [h], name="flatten")
    w = g.constant("fc/w", rng.standard_normal((c_in, 10)).astype(np.float32) * 0.3)
    b = g.constant("fc/b", np.zeros(10, np.float32))
    g.output(g.node("Dense", [h, w, b], name="logits"))
    return g.save(path)
