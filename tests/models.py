"""Small native models that tests and benches build with GraphBuilder.

Each ``<name>_graph`` returns the GraphBuilder (benches export the same graph to ONNX from it);
``<name>`` writes it to a .pyem file and returns the path.
"""

from __future__ import annotations

import numpy as np

import pyengine


def mlp_graph(sizes: tuple[int, ...] = (64, 256, 256, 10), seed: int = 0) -> pyengine.GraphBuilder:
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
    return g


def mlp(path: str, sizes: tuple[int, ...] = (64, 256, 256, 10), seed: int = 0) -> str:
    return mlp_graph(sizes, seed).save(path)


def cnn_graph(layout: str = "NCHW", size: int = 28, channels: int = 16, seed: int = 0,
              in_channels: int = 1, batchnorm: bool = True) -> pyengine.GraphBuilder:
    """conv-bn-relu-pool x2, global pool, dense: a small image classifier.

    With ``batchnorm=False`` each convolution has a bias and a fused ReLU instead (the graph a
    converter emits after folding batch norm into the convolution).
    """
    rng = np.random.default_rng(seed)
    g = pyengine.GraphBuilder()
    shape = [-1, in_channels, size, size] if layout == "NCHW" else [-1, size, size, in_channels]
    h = g.input("image", shape)
    c_in = in_channels
    for i, c in enumerate((channels, channels * 2)):
        w = g.constant(f"conv{i}/w", rng.standard_normal((c, c_in, 3, 3)).astype(np.float32) * 0.3)
        if batchnorm:
            h = g.node("Conv2D", [h, w], name=f"conv{i}", layout=layout, pads=[1, 1, 1, 1])
            bn = [g.constant(f"bn{i}/{k}", v) for k, v in (
                ("scale", rng.uniform(0.5, 1.5, c)), ("bias", rng.standard_normal(c) * 0.1),
                ("mean", rng.standard_normal(c) * 0.1), ("var", rng.uniform(0.5, 1.5, c)))]
            h = g.node("BatchNorm", [h, *bn], name=f"bn{i}", axis=1 if layout == "NCHW" else -1)
            h = g.node("Relu", [h], name=f"relu{i}")
        else:
            b = g.constant(f"conv{i}/b", rng.standard_normal(c).astype(np.float32) * 0.1)
            h = g.node("Conv2D", [h, w, b], name=f"conv{i}", layout=layout, pads=[1, 1, 1, 1],
                       activation="relu")
        h = g.node("MaxPool", [h], name=f"pool{i}", layout=layout, kernel=[2, 2], strides=[2, 2])
        c_in = c
    h = g.node("GlobalAvgPool", [h], name="gap", layout=layout)
    h = g.node("Flatten", [h], name="flatten")
    w = g.constant("fc/w", rng.standard_normal((c_in, 10)).astype(np.float32) * 0.3)
    b = g.constant("fc/b", np.zeros(10, np.float32))
    g.output(g.node("Dense", [h, w, b], name="logits"))
    return g


def cnn(path: str, layout: str = "NCHW", size: int = 28, channels: int = 16, seed: int = 0) -> str:
    return cnn_graph(layout, size, channels, seed).save(path)


# (expansion, output channels, repeats, first stride) as in MobileNet-v2's table 2.
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1))


def mobilenet_v2_graph(
    size: int = 112, width: int = 32, seed: int = 0,
    blocks: tuple[tuple[int, int, int, int], ...] = MOBILENET_V2_BLOCKS,
) -> pyengine.GraphBuilder:
    """A MobileNet-v2-style network (NCHW): a 3x3/2 stem, inverted residual blocks (1x1 expand +
    ReLU6, 3x3 depthwise + ReLU6, 1x1 linear projection, residual add where shapes allow),
    global pooling and a dense classifier. Batch norm is folded into the convolutions' biases."""
    rng = np.random.default_rng(seed)
    g = pyengine.GraphBuilder()
    counter = iter(range(10**6))

    def conv(h: str, c_in: int, c_out: int, k: int, stride: int, groups: int, act: str) -> str:
        i = next(counter)
        fan_in = c_in // groups * k * k
        w0 = rng.standard_normal((c_out, c_in // groups, k, k)).astype(np.float32)
        w = g.constant(f"c{i}/w", w0 * np.sqrt(2.0 / fan_in))
        b = g.constant(f"c{i}/b", rng.standard_normal(c_out).astype(np.float32) * 0.05)
        p = k // 2
        return g.node("Conv2D", [h, w, b], name=f"conv{i}", pads=[p, p, p, p],
                      strides=[stride, stride], groups=groups, activation=act)

    h = g.input("image", [-1, 3, size, size])
    h = conv(h, 3, width, 3, 2, 1, "relu6")
    c = width
    for t, c_out, n, s in blocks:
        for r in range(n):
            stride = s if r == 0 else 1
            x = h
            hidden = c * t
            if t != 1:
                h = conv(h, c, hidden, 1, 1, 1, "relu6")
            h = conv(h, hidden, hidden, 3, stride, hidden, "relu6")
            h = conv(h, hidden, c_out, 1, 1, 1, "none")
            if stride == 1 and c == c_out:
                h = g.node("Add", [x, h], name=f"res{next(counter)}")
            c = c_out
    h = g.node("GlobalAvgPool", [h], name="gap")
    h = g.node("Flatten", [h], name="flatten")
    w = g.constant("fc/w", rng.standard_normal((c, 10)).astype(np.float32) / np.sqrt(c))
    b = g.constant("fc/b", np.zeros(10, np.float32))
    g.output(g.node("Dense", [h, w, b], name="logits"))
    return g
