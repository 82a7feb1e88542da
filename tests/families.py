"""One model per edge family of issue 25, as ONNX graphs built with ``onnx.helper`` and He-scaled
random weights (tests/cnn_zoo.py's ``Net``): a YOLO-style detector, a U-Net/DeepLab-style
segmenter, a keyword-spotting net (Conv1D + GRU), a BERT-tiny-style encoder and a ViT-tiny-style
classifier. Layer counts and widths follow the published small variants at the bench's default
sizes; tests build smaller versions (``size`` and ``depth`` arguments).

bench/bench_families.py times them against onnxruntime. Every builder returns
``(model_bytes, inputs)``: the serialized ``onnx.ModelProto`` and a function of (batch, seed)
giving a feed dict of matching random inputs. Every graph has a free batch dimension ``N``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from cnn_zoo import Net

Feed = Callable[[int, int], dict[str, np.ndarray]]


def _finish(n: Net, inputs: list[Any], outputs: list[tuple[str, list[Any]]]) -> bytes:
    """The serialized, checked model of ``n``'s nodes with these inputs and (name, shape)
    outputs (an Identity names each output)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    outs = []
    for i, (value, shape) in enumerate(outputs):
        name = f"out{i}" if len(outputs) > 1 else "y"
        n.nodes.append(helper.make_node("Identity", [value], [name], name=name))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        n.nodes, n.name, inputs, outs,
        initializer=[numpy_helper.from_array(v, name=k) for k, v in n.inits.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _image_feed(name: str, shape: tuple[int, ...]) -> Feed:
    def feed(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {name: rng.standard_normal((batch, *shape)).astype(np.float32)}
    return feed


def _ints(n: Net, *values: int) -> str:
    return n.const("shape", np.array(values, np.int64))


def _silu(n: Net, x: str) -> str:
    return n.act(x, "silu")


# ---------------------------------------------------------------- YOLO-style detector


def yolo(size: int = 320, classes: int = 80, width: int = 16, anchors: int = 3,
         seed: int = 0) -> tuple[bytes, Feed]:
    """A YOLOv5-nano-like detector: a stride-32 SiLU backbone, an FPN neck (nearest Resize x2,
    Concat with the stride-16 map) and decoded heads on both scales: Sigmoid for box centres,
    objectness and classes, Exp (times the anchor) for box sizes, as [N, boxes, 5 + classes]."""
    from onnx import TensorProto, helper

    n = Net("yolo", seed, size)
    n.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])
    c = [width, width * 2, width * 4, width * 8, width * 16]
    x = n.conv("x", 3, c[0], 3, stride=2, act="silu")
    feats = []
    for i in range(1, 5):
        x = n.conv(x, c[i - 1], c[i], 3, stride=2, act="silu")
        y = n.conv(x, c[i], c[i] // 2, 1, act="silu")
        y = n.conv(y, c[i] // 2, c[i] // 2, 3, act="silu")
        x = n.concat([n.conv(x, c[i], c[i] // 2, 1, act="silu"), y])
        x = n.conv(x, c[i], c[i], 1, act="silu", gain=0.5)
        feats.append(x)
    p4, p5 = feats[2], feats[3]
    p5 = n.conv(p5, c[4], c[3], 1, act="silu")
    up = n.node("Resize", [p5, "", n.const("scales", np.array([1, 1, 2, 2], np.float32))],
                "upsample", mode="nearest")
    p4 = n.conv(n.concat([up, p4]), c[3] * 2, c[3], 3, act="silu")
    per = 5 + classes
    boxes = []
    for stride, (p, ch) in ((16, (p4, c[3])), (32, (p5, c[3]))):
        cells = (size // stride) ** 2
        h = n.conv(p, ch, anchors * per, 1, bn=False, act=None, bias=True, gain=0.1)
        h = n.node("Reshape", [h, _ints(n, 0, anchors, per, cells)])
        h = n.node("Transpose", [h], perm=[0, 1, 3, 2])  # [N, anchors, cells, per]
        xy, wh, rest = (n.fresh(k) for k in ("xy", "wh", "rest"))
        n.nodes.append(helper.make_node("Split", [h, _ints(n, 2, 2, per - 4)], [xy, wh, rest],
                                        name=xy, axis=3))
        xy = n.node("Mul", [n.node("Sigmoid", [xy]), n.const("stride", np.float32(stride))])
        anchor = n.const("anchor", n.rng.uniform(10, 60, (1, anchors, 1, 2)).astype(np.float32))
        wh = n.node("Mul", [n.node("Exp", [wh]), anchor])
        out = n.node("Concat", [xy, wh, n.node("Sigmoid", [rest])], axis=3)
        boxes.append(n.node("Reshape", [out, _ints(n, 0, -1, per)]))
    total = anchors * ((size // 16) ** 2 + (size // 32) ** 2)
    y = n.node("Concat", boxes, axis=1)
    return _finish(n, [n.input], [(y, ["N", total, per])]), _image_feed("x", (3, size, size))


# ---------------------------------------------------------------- U-Net / DeepLab-style segmenter


def unet(size: int = 256, classes: int = 21, width: int = 16, levels: int = 4,
         seed: int = 0) -> tuple[bytes, Feed]:
    """A U-Net encoder-decoder (two 3x3 conv-BN-ReLU per level, MaxPool down, ConvTranspose 2x2
    stride 2 up, Concat with the skip) ending in a DeepLab-style head: logits at half resolution,
    bilinear Resize (half_pixel) x2 back to the input size."""
    from onnx import TensorProto, helper

    n = Net("unet", seed, size)
    n.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])
    x = n.conv("x", 3, width, 3, stride=2)  # the stem halves the resolution
    cin, skips = width, []
    for lvl in range(levels):
        ch = width * 2 ** lvl
        x = n.conv(n.conv(x, cin, ch, 3), ch, ch, 3)
        skips.append((x, ch))
        x = n.maxpool(x, 2, 2)
        cin = ch
    ch = width * 2 ** levels
    x = n.conv(n.conv(x, cin, ch, 3), ch, ch, 3)
    for skip, sc in reversed(skips):
        w = n.const("up_w", n.he((ch, sc, 2, 2), ch))
        b = n.const("up_b", n.rng.normal(0, 0.1, sc).astype(np.float32))
        up = n.node("ConvTranspose", [x, w, b], "up", kernel_shape=[2, 2], strides=[2, 2])
        x = n.conv(n.conv(n.concat([up, skip]), 2 * sc, sc, 3), sc, sc, 3)
        ch = sc
    logits = n.conv(x, ch, classes, 1, bn=False, act=None, bias=True)
    y = n.node("Resize", [logits, "", n.const("scales", np.array([1, 1, 2, 2], np.float32))],
               "resize", mode="linear", coordinate_transformation_mode="half_pixel")
    return (_finish(n, [n.input], [(y, ["N", classes, size, size])]),
            _image_feed("x", (3, size, size)))


# ---------------------------------------------------------------- keyword spotting


def kws(mfcc: int = 40, frames: int = 98, classes: int = 12, channels: int = 64,
        hidden: int = 128, seed: int = 0) -> tuple[bytes, Feed]:
    """A keyword-spotting CRNN on [N, mfcc, frames] MFCC-like features: two Conv1D-BN-ReLU layers
    (the second with stride 2), a GRU over time (sequence-first, as PyTorch exports it,
    linear_before_reset 1), its last hidden state to a Gemm over the keyword classes."""
    from onnx import TensorProto, helper

    n = Net("kws", seed)
    n.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", mfcc, frames])
    x, cin = "x", mfcc
    for stride in (1, 2):
        w = n.const("w", n.he((channels, cin, 5), cin * 5))
        x = n.node("Conv", [x, w], "conv1d", kernel_shape=[5], strides=[stride], pads=[2, 2])
        x = n.node("Relu", [n.bn(x, channels)])
        cin = channels
    seq = n.node("Transpose", [x], perm=[2, 0, 1])  # [T, N, C]
    scale = 1.0 / math.sqrt(hidden)
    w = n.const("gru_w", n.rng.uniform(-scale, scale, (1, 3 * hidden, channels)).astype(np.float32))
    r = n.const("gru_r", n.rng.uniform(-scale, scale, (1, 3 * hidden, hidden)).astype(np.float32))
    b = n.const("gru_b", n.rng.uniform(-scale, scale, (1, 6 * hidden)).astype(np.float32))
    ys, yh = n.fresh("gru_y"), n.fresh("gru_h")
    n.nodes.append(helper.make_node("GRU", [seq, w, r, b], [ys, yh], name=ys,
                                    hidden_size=hidden, linear_before_reset=1))
    h = n.node("Squeeze", [yh, _ints(n, 0)])
    y = n.fc(h, hidden, classes, flatten=False)
    return _finish(n, [n.input], [(y, ["N", classes])]), _image_feed("x", (mfcc, frames))


# ---------------------------------------------------------------- transformers


def _layer_norm(n: Net, x: str, dim: int) -> str:
    g = n.const("ln_g", n.rng.uniform(0.8, 1.2, dim).astype(np.float32))
    b = n.const("ln_b", n.rng.normal(0, 0.05, dim).astype(np.float32))
    return n.node("LayerNormalization", [x, g, b], "ln", axis=-1, epsilon=1e-5)


def _linear(n: Net, x: str, cin: int, cout: int, gain: float = 1.0) -> str:
    """MatMul by a [cin, cout] weight, then Add a bias (PyTorch's nn.Linear on a 3-D input)."""
    w = n.const("w", n.he((cin, cout), cin) * np.float32(gain))
    b = n.const("b", n.rng.normal(0, 0.02, cout).astype(np.float32))
    return n.node("Add", [n.node("MatMul", [x, w]), b], "linear")


def _gelu(n: Net, x: str) -> str:
    """GELU as PyTorch exports it below opset 20: x * 0.5 * (1 + erf(x / sqrt 2))."""
    e = n.node("Erf", [n.node("Div", [x, n.const("sqrt2", np.float32(math.sqrt(2.0)))])])
    e = n.node("Add", [e, n.const("one", np.float32(1.0))])
    return n.node("Mul", [n.node("Mul", [x, e]), n.const("half", np.float32(0.5))], "gelu")


def _encoder_layer(n: Net, x: str, seq: int, dim: int, heads: int, mlp: int,
                   pre_norm: bool) -> str:
    """One transformer encoder layer: multi-head self-attention (Reshape / Transpose to
    [N, heads, seq, dim / heads], MatMul, scale, Softmax, MatMul) and a GELU MLP, each with a
    residual; LayerNorm before each block (ViT) or after each residual (BERT)."""
    hd = dim // heads
    a = _layer_norm(n, x, dim) if pre_norm else x

    def split_heads(v: str, perm: list[int]) -> str:
        v = n.node("Reshape", [v, _ints(n, 0, seq, heads, hd)])
        return n.node("Transpose", [v], perm=perm)

    q = split_heads(_linear(n, a, dim, dim), [0, 2, 1, 3])
    k = split_heads(_linear(n, a, dim, dim), [0, 2, 3, 1])
    v = split_heads(_linear(n, a, dim, dim), [0, 2, 1, 3])
    s = n.node("Div", [n.node("MatMul", [q, k]), n.const("scale", np.float32(math.sqrt(hd)))])
    p = n.node("Softmax", [s], axis=-1)
    o = n.node("Transpose", [n.node("MatMul", [p, v])], perm=[0, 2, 1, 3])
    o = n.node("Reshape", [o, _ints(n, 0, seq, dim)])
    x = n.node("Add", [x, _linear(n, o, dim, dim, gain=0.5)])
    if not pre_norm:
        x = _layer_norm(n, x, dim)
    m = _layer_norm(n, x, dim) if pre_norm else x
    m = _linear(n, _gelu(n, _linear(n, m, dim, mlp)), mlp, dim, gain=0.5)
    x = n.node("Add", [x, m])
    return x if pre_norm else _layer_norm(n, x, dim)


def bert_tiny(seq: int = 128, vocab: int = 30522, dim: int = 128, depth: int = 2, heads: int = 2,
              mlp: int = 512, seed: int = 0) -> tuple[bytes, Feed]:
    """A BERT-tiny-style encoder (google/bert_uncased_L-2_H-128_A-2's sizes): int64 input_ids
    [N, seq] to word embeddings (Gather) plus position embeddings, LayerNorm, ``depth``
    post-norm encoder layers; the output is the last hidden state [N, seq, dim]."""
    from onnx import TensorProto, helper

    n = Net("bert_tiny", seed)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", seq])
    words = n.const("word_emb", (n.rng.standard_normal((vocab, dim)) * 0.5).astype(np.float32))
    pos = n.const("pos_emb", (n.rng.standard_normal((1, seq, dim)) * 0.5).astype(np.float32))
    x = n.node("Add", [n.node("Gather", [words, "input_ids"], "embed", axis=0), pos])
    x = _layer_norm(n, x, dim)
    for _ in range(depth):
        x = _encoder_layer(n, x, seq, dim, heads, mlp, pre_norm=False)

    def feed(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {"input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64)}
    return _finish(n, [ids], [(x, ["N", seq, dim])]), feed


def vit_tiny(size: int = 224, patch: int = 16, dim: int = 192, depth: int = 12, heads: int = 3,
             mlp: int = 768, classes: int = 1000, seed: int = 0) -> tuple[bytes, Feed]:
    """A ViT-tiny-style classifier (ViT-Ti/16's sizes): a patch-embedding Conv (``patch`` x
    ``patch``, stride ``patch``), position embeddings, ``depth`` pre-norm encoder layers, a final
    LayerNorm, mean pooling over the patches and a Gemm head."""
    from onnx import TensorProto, helper

    n = Net("vit_tiny", seed, size)
    n.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])
    tokens = (size // patch) ** 2
    w = n.const("patch_w", n.he((dim, 3, patch, patch), 3 * patch * patch))
    b = n.const("patch_b", n.rng.normal(0, 0.02, dim).astype(np.float32))
    x = n.node("Conv", ["x", w, b], "patch", kernel_shape=[patch, patch],
               strides=[patch, patch])
    x = n.node("Transpose", [n.node("Reshape", [x, _ints(n, 0, dim, tokens)])], perm=[0, 2, 1])
    pos = n.const("pos_emb", (n.rng.standard_normal((1, tokens, dim)) * 0.5).astype(np.float32))
    x = n.node("Add", [x, pos])
    for _ in range(depth):
        x = _encoder_layer(n, x, tokens, dim, heads, mlp, pre_norm=True)
    x = n.node("ReduceMean", [_layer_norm(n, x, dim)], "pool", axes=[1], keepdims=0)
    y = n.fc(x, dim, classes, flatten=False)
    return _finish(n, [n.input], [(y, ["N", classes])]), _image_feed("x", (3, size, size))


#: The bench's families at their default (bench) sizes: name -> builder(**overrides).
FAMILIES: dict[str, Callable[..., tuple[bytes, Feed]]] = {
    "yolo": yolo,
    "unet": unet,
    "kws": kws,
    "bert_tiny": bert_tiny,
    "vit_tiny": vit_tiny,
}

#: Small versions for the tests (seconds to convert and run).
SMALL: dict[str, dict[str, int]] = {
    "yolo": {"size": 64, "classes": 3, "width": 8},
    "unet": {"size": 32, "classes": 5, "width": 4, "levels": 2},
    "kws": {"mfcc": 10, "frames": 13, "classes": 5, "channels": 6, "hidden": 7},
    "bert_tiny": {"seq": 9, "vocab": 50, "dim": 16, "depth": 2, "heads": 2, "mlp": 24},
    "vit_tiny": {"size": 32, "patch": 8, "dim": 24, "depth": 2, "heads": 3, "mlp": 40,
                 "classes": 10},
}
