"""Native model builders (:class:`pyengine.GraphBuilder`, no framework needed): the models of
``pyengine bench --suite standard`` and of the tests (tests/models.py re-exports them).

Every builder returns the :class:`~pyengine.GraphBuilder` (call ``.save(path)``); weights are
random with a fixed seed, scaled so that activations neither vanish nor explode.
"""

from __future__ import annotations

import numpy as np

from pyengine.builder import GraphBuilder

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


def mlp_graph(sizes: tuple[int, ...] = MLP_SIZES, seed: int = 0) -> GraphBuilder:
    """A Dense/ReLU stack ending in softmax."""
    g = GraphBuilder()
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
    return g


def cnn_params(channels: int = 16, seed: int = 0, in_channels: int = 1,
               batchnorm: bool = True) -> dict[str, np.ndarray]:
    """Weights of :func:`cnn_graph` by tensor name (conv weights OIHW), float32."""
    rng = np.random.default_rng(seed)
    p: dict[str, np.ndarray] = {}
    c_in = in_channels
    for i, c in enumerate((channels, channels * 2)):
        p[f"conv{i}/w"] = rng.standard_normal((c, c_in, 3, 3)).astype(np.float32) * 0.3
        if batchnorm:
            p[f"bn{i}/scale"] = rng.uniform(0.5, 1.5, c)
            p[f"bn{i}/bias"] = rng.standard_normal(c) * 0.1
            p[f"bn{i}/mean"] = rng.standard_normal(c) * 0.1
            p[f"bn{i}/var"] = rng.uniform(0.5, 1.5, c)
        else:
            p[f"conv{i}/b"] = rng.standard_normal(c).astype(np.float32) * 0.1
        c_in = c
    p["fc/w"] = rng.standard_normal((c_in, 10)).astype(np.float32) * 0.3
    p["fc/b"] = np.zeros(10, np.float32)
    return {k: np.asarray(v, np.float32) for k, v in p.items()}


def cnn_graph(layout: str = "NCHW", size: int = 28, channels: int = 16, seed: int = 0,
              in_channels: int = 1, batchnorm: bool = True) -> GraphBuilder:
    """conv-bn-relu-pool x2, global pool, dense: a small image classifier.

    With ``batchnorm=False`` each convolution has a bias and a fused ReLU instead (the graph a
    converter emits after folding batch norm into the convolution).
    """
    p = cnn_params(channels, seed, in_channels, batchnorm)
    g = GraphBuilder()
    shape = [-1, in_channels, size, size] if layout == "NCHW" else [-1, size, size, in_channels]
    h = g.input("image", shape)
    for i in range(2):
        w = g.constant(f"conv{i}/w", p[f"conv{i}/w"])
        if batchnorm:
            h = g.node("Conv2D", [h, w], name=f"conv{i}", layout=layout, pads=[1, 1, 1, 1])
            bn = [g.constant(f"bn{i}/{k}", p[f"bn{i}/{k}"]) for k in ("scale", "bias", "mean", "var")]
            h = g.node("BatchNorm", [h, *bn], name=f"bn{i}", axis=1 if layout == "NCHW" else -1)
            h = g.node("Relu", [h], name=f"relu{i}")
        else:
            b = g.constant(f"conv{i}/b", p[f"conv{i}/b"])
            h = g.node("Conv2D", [h, w, b], name=f"conv{i}", layout=layout, pads=[1, 1, 1, 1],
                       activation="relu")
        h = g.node("MaxPool", [h], name=f"pool{i}", layout=layout, kernel=[2, 2], strides=[2, 2])
    h = g.node("GlobalAvgPool", [h], name="gap", layout=layout)
    h = g.node("Flatten", [h], name="flatten")
    g.output(g.node("Dense", [h, g.constant("fc/w", p["fc/w"]), g.constant("fc/b", p["fc/b"])],
                    name="logits"))
    return g


# (expansion, output channels, repeats, first stride) as in MobileNet-v2's table 2.
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1))
#: Every stage of MobileNet-v2's table 2 (the 224x224 ImageNet network's body).
MOBILENET_V2_FULL_BLOCKS = MOBILENET_V2_BLOCKS[:3] + (
    (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2_graph(
    size: int = 112, width: int = 32, seed: int = 0,
    blocks: tuple[tuple[int, int, int, int], ...] = MOBILENET_V2_BLOCKS,
    layout: str = "NCHW", classes: int = 10,
) -> GraphBuilder:
    """A MobileNet-v2-style network (NCHW or NHWC): a 3x3/2 stem, inverted residual blocks (1x1
    expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 linear projection, residual add where shapes
    allow), global pooling and a dense classifier. Batch norm is folded into the convolutions'
    biases."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder()
    counter = iter(range(10**6))

    def conv(h: str, c_in: int, c_out: int, k: int, stride: int, groups: int, act: str) -> str:
        i = next(counter)
        fan_in = c_in // groups * k * k
        w0 = rng.standard_normal((c_out, c_in // groups, k, k)).astype(np.float32)
        w = g.constant(f"c{i}/w", w0 * np.sqrt(2.0 / fan_in))
        b = g.constant(f"c{i}/b", rng.standard_normal(c_out).astype(np.float32) * 0.05)
        p = k // 2
        return g.node("Conv2D", [h, w, b], name=f"conv{i}", pads=[p, p, p, p],
                      strides=[stride, stride], groups=groups, activation=act, layout=layout)

    h = g.input("image", [-1, 3, size, size] if layout == "NCHW" else [-1, size, size, 3])
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
    h = g.node("GlobalAvgPool", [h], name="gap", layout=layout)
    h = g.node("Flatten", [h], name="flatten")
    w = g.constant("fc/w", rng.standard_normal((c, classes)).astype(np.float32) / np.sqrt(c))
    b = g.constant("fc/b", np.zeros(classes, np.float32))
    g.output(g.node("Dense", [h, w, b], name="logits"))
    return g


# (blocks, output channels) per stage of ResNet-18's basic blocks.
RESNET18_STAGES = ((2, 64), (2, 128), (2, 256), (2, 512))


def resnet_graph(
    size: int = 224, classes: int = 1000, seed: int = 0,
    stages: tuple[tuple[int, int], ...] = RESNET18_STAGES, residual_gain: float = 0.3,
) -> GraphBuilder:
    """A ResNet-style network (NCHW; ResNet-18 by default): a 7x7/2 stem and a 3x3/2 max pool,
    stages of basic blocks (two 3x3 convolutions, the first strided at a stage's start, with a
    1x1 projection on the shortcut where the shape changes), ReLU after each residual add,
    global pooling and a dense classifier. Batch norm is folded into the convolutions' biases;
    ``residual_gain`` scales each block's last convolution (as trained networks' batch norms do)
    so that activations do not double at every add."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder()
    counter = iter(range(10**6))

    def conv(h: str, c_in: int, c_out: int, k: int, stride: int, act: str,
             gain: float = 1.0) -> str:
        i = next(counter)
        w0 = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32)
        w = g.constant(f"c{i}/w", w0 * np.float32(gain * np.sqrt(2.0 / (c_in * k * k))))
        b = g.constant(f"c{i}/b", rng.standard_normal(c_out).astype(np.float32) * 0.05)
        p = k // 2
        return g.node("Conv2D", [h, w, b], name=f"conv{i}", pads=[p, p, p, p],
                      strides=[stride, stride], activation=act)

    h = conv(g.input("image", [-1, 3, size, size]), 3, 64, 7, 2, "relu")
    h = g.node("MaxPool", [h], name="pool", kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c = 64
    for stage, (blocks, c_out) in enumerate(stages):
        for r in range(blocks):
            stride = 2 if stage > 0 and r == 0 else 1
            y = conv(h, c, c_out, 3, stride, "relu")
            y = conv(y, c_out, c_out, 3, 1, "none", residual_gain)
            short = h if stride == 1 and c == c_out else conv(h, c, c_out, 1, stride, "none")
            h = g.node("Relu", [g.node("Add", [y, short], name=f"res{next(counter)}")],
                       name=f"relu{next(counter)}")
            c = c_out
    h = g.node("Flatten", [g.node("GlobalAvgPool", [h], name="gap")], name="flatten")
    w = g.constant("fc/w", rng.standard_normal((c, classes)).astype(np.float32) / np.sqrt(c))
    b = g.constant("fc/b", np.zeros(classes, np.float32))
    g.output(g.node("Dense", [h, w, b], name="logits"))
    return g
