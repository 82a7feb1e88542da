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


# (expansion t, output channels c, repeats n, first stride s): MobileNet-v2's bottleneck table.
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(path: str, size: int = 224, width: float = 1.0, classes: int = 1000,
                 layout: str = "NCHW", blocks: tuple = MOBILENET_V2_BLOCKS, seed: int = 0) -> str:
    """A MobileNet-v2-style classifier with batch norm folded into the convolutions (as a
    converter emits it): 3x3 stem, inverted residual blocks (1x1 expand + ReLU6, 3x3 depthwise
    + ReLU6, 1x1 linear projection, Add when the shape allows), 1x1 head, global pool, Dense,
    softmax. Random He-scaled weights; `width` scales every channel count."""
    rng = np.random.default_rng(seed)
    g = pyengine.GraphBuilder()
    shape = [-1, 3, size, size] if layout == "NCHW" else [-1, size, size, 3]

    def ch(c: float) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    def conv(h: str, c_in: int, c_out: int, k: int, stride: int, groups: int, act: str,
             name: str) -> str:
        fan_in = c_in // groups * k * k
        w = rng.standard_normal((c_out, c_in // groups, k, k)).astype(np.float32)
        w *= np.float32(np.sqrt(2.0 / fan_in))
        b = (rng.standard_normal(c_out) * 0.05).astype(np.float32)
        p = k // 2
        ins = [h, g.constant(f"{name}/w", w), g.constant(f"{name}/b", b)]
        return g.node("Conv2D", ins, name=name, layout=layout, strides=[stride, stride],
                      pads=[p, p, p, p], groups=groups, activation=act)

    c_in = ch(32)
    h = conv(g.input("image", shape), 3, c_in, 3, 2, 1, "relu6", "stem")
    for bi, (t, c, n, s) in enumerate(blocks):
        c_out = ch(c)
        for r in range(n):
            stride = s if r == 0 else 1
            name = f"block{bi}_{r}"
            x = h
            hidden = c_in * t
            if t != 1:
                h = conv(h, c_in, hidden, 1, 1, 1, "relu6", f"{name}/expand")
            h = conv(h, hidden, hidden, 3, stride, hidden, "relu6", f"{name}/dw")
            h = conv(h, hidden, c_out, 1, 1, 1, "none", f"{name}/project")
            if stride == 1 and c_in == c_out:
                h = g.node("Add", [x, h], name=f"{name}/add")
            c_in = c_out
    head = max(1280, ch(1280)) if width > 1.0 else ch(1280)
    h = conv(h, c_in, head, 1, 1, 1, "relu6", "head")
    h = g.node("GlobalAvgPool", [h], name="gap", layout=layout)
    h = g.node("Flatten", [h], name="flatten")
    w = (rng.standard_normal((head, classes)) / np.sqrt(head)).astype(np.float32)
    b = np.zeros(classes, np.float32)
    h = g.node("Dense", [h, g.constant("fc/w", w), g.constant("fc/b", b)], name="fc")
    g.output(g.node("Softmax", [h], name="probs"))
    return g.save(path)
