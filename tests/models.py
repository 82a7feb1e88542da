"""Small native models that tests and benches build with GraphBuilder.

The weights come from ``mlp_params`` / ``cnn_params`` so that other builders (the ONNX twins in
``onnx_models.py``) can make the same function in another framework.
"""

from __future__ import annotations

import numpy as np

import pyengine

MLP_SIZES = (64, 256, 256, 10)


def mlp_params(
    sizes: tuple[int, ...] = MLP_SIZES, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(w[k, n], b[n]) per Dense layer, float32."""
    rng = np.random.default_rng(seed)
    out = []
    for k, n in zip(sizes[:-1], sizes[1:]):
        w = rng.standard_normal((k, n)).astype(np.float32) / np.sqrt(k)
        b = rng.standard_normal(n).astype(np.float32) * 0.1
        out.append((w.astype(np.float32), b.astype(np.float32)))
    return out


def mlp(path: str, sizes: tuple[int, ...] = MLP_SIZES, seed: int = 0) -> str:
    """A Dense/ReLU stack ending in softmax."""
    g = pyengine.GraphBuilder()
    h = g.input("x", [-1, sizes[0]])
    params = mlp_params(sizes, seed)
    for i, (w, b) in enumerate(params):
        last = i == len(params) - 1
        h = g.node(
            "Dense",
            [h, g.constant(f"fc{i}/w", w), g.constant(f"fc{i}/b", b)],
            name=f"fc{i}",
            activation="none" if last else "relu",
        )
    g.output(g.node("Softmax", [h], name="probs"))
    return g.save(path)


def cnn_params(channels: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights of :func:`cnn` by tensor name (conv weights OIHW), float32."""
    rng = np.random.default_rng(seed)
    p: dict[str, np.ndarray] = {}
    c_in = 1
    for i, c in enumerate((channels, channels * 2)):
        p[f"conv{i}/w"] = rng.standard_normal((c, c_in, 3, 3)).astype(np.float32) * 0.3
        p[f"bn{i}/scale"] = rng.uniform(0.5, 1.5, c)
        p[f"bn{i}/bias"] = rng.standard_normal(c) * 0.1
        p[f"bn{i}/mean"] = rng.standard_normal(c) * 0.1
        p[f"bn{i}/var"] = rng.uniform(0.5, 1.5, c)
        c_in = c
    p["fc/w"] = rng.standard_normal((c_in, 10)).astype(np.float32) * 0.3
    p["fc/b"] = np.zeros(10, np.float32)
    return {k: np.asarray(v, np.float32) for k, v in p.items()}


def cnn(path: str, layout: str = "NCHW", size: int = 28, channels: int = 16, seed: int = 0) -> str:
    """conv-bn-relu-pool x2, global pool, dense: a small image classifier."""
    p = cnn_params(channels, seed)
    g = pyengine.GraphBuilder()
    shape = [-1, 1, size, size] if layout == "NCHW" else [-1, size, size, 1]
    h = g.input("image", shape)
    for i in range(2):
        h = g.node(
            "Conv2D",
            [h, g.constant(f"conv{i}/w", p[f"conv{i}/w"])],
            name=f"conv{i}",
            layout=layout,
            pads=[1, 1, 1, 1],
        )
        bn = [g.constant(f"bn{i}/{k}", p[f"bn{i}/{k}"]) for k in ("scale", "bias", "mean", "var")]
        h = g.node("BatchNorm", [h, *bn], name=f"bn{i}", axis=1 if layout == "NCHW" else -1)
        h = g.node("Relu", [h], name=f"relu{i}")
        h = g.node("MaxPool", [h], name=f"pool{i}", layout=layout, kernel=[2, 2], strides=[2, 2])
    h = g.node("GlobalAvgPool", [h], name="gap", layout=layout)
    h = g.node("Flatten", [h], name="flatten")
    g.output(
        g.node(
            "Dense",
            [h, g.constant("fc/w", p["fc/w"]), g.constant("fc/b", p["fc/b"])],
            name="logits",
        )
    )
    return g.save(path)
