"""Standard ImageNet CNNs as ONNX graphs built with ``onnx.helper``: layer counts, channels,
strides and activations follow the original architectures (torchvision's definitions), with
He-scaled random weights and random BatchNorm statistics so that every output varies.

bench/bench_cnn.py times them; tests build small versions (``image=32``) of the same graphs.
Every builder returns a serialized ``onnx.ModelProto`` with one input ``x`` [N, 3, image, image]
(N free) and one output ``logits`` [N, classes].
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

#: Scale of a residual branch's last BatchNorm relative to the others.
RESIDUAL_GAIN = 0.3


def make_divisible(v: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: the nearest multiple of ``divisor``, never 10% below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Net:
    """An ONNX graph under construction; each method adds nodes and returns the output name.

    Parameters
    ----------
    name
        The graph's name.
    seed
        Seed of the random weights.
    image
        Height and width of the input.
    """

    def __init__(self, name: str, seed: int = 0, image: int = 224) -> None:
        from onnx import TensorProto, helper

        self.helper = helper
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: dict[str, np.ndarray] = {}
        self.count = 0
        self.input = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, image, image])

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        self.inits[name] = value
        return name

    def node(self, op: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        out = self.fresh(hint or op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def he(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        """Normal weights with He's scale, sqrt(2 / fan_in)."""
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    # ---- layers ----
    def bn(self, x: str, c: int, hint: str = "bn", gain: float = 1.0) -> str:
        """Inference BatchNormalization with random (but plausible) statistics; ``gain`` scales
        its scale (a residual branch's last BatchNorm uses < 1, as trained networks' do, so that
        activations do not double at every residual add)."""
        rng = self.rng
        params = [
            rng.uniform(0.5, 1.5, c) * gain,  # scale
            rng.normal(0.0, 0.1, c),  # bias
            rng.normal(0.0, 0.1, c),  # mean
            rng.uniform(0.5, 1.5, c),  # variance
        ]
        names = [self.const(f"{hint}_{k}", p.astype(np.float32))
                 for k, p in zip(("scale", "bias", "mean", "var"), params)]
        return self.node("BatchNormalization", [x, *names], hint, epsilon=1e-5)

    def act(self, x: str, kind: str | None) -> str:
        """``kind``: None, relu, relu6, sigmoid, hardswish, hardsigmoid or silu (x·sigmoid(x))."""
        if kind is None:
            return x
        if kind == "relu":
            return self.node("Relu", [x])
        if kind == "relu6":
            lo = self.const("zero", np.array(0, np.float32))
            hi = self.const("six", np.array(6, np.float32))
            return self.node("Clip", [x, lo, hi], "relu6")
        if kind == "sigmoid":
            return self.node("Sigmoid", [x])
        if kind == "hardswish":
            return self.node("HardSwish", [x])
        if kind == "hardsigmoid":  # PyTorch's: relu6(x + 3) / 6
            return self.node("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)
        if kind == "silu":  # as PyTorch exports nn.SiLU
            return self.node("Mul", [x, self.node("Sigmoid", [x])], "silu")
        raise ValueError(f"activation {kind!r}")

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int | None = None,
             groups: int = 1, bn: bool = True, act: str | None = "relu", bias: bool = False,
             gain: float = 1.0) -> str:
        """Conv (k x k, ``pad`` default k // 2), then BatchNorm (scale times ``gain``) when
        ``bn``, then ``act``."""
        pad = k // 2 if pad is None else pad
        w = self.const("w", self.he((cout, cin // groups, k, k), cin // groups * k * k))
        ins = [x, w]
        if bias:
            ins.append(self.const("b", self.rng.normal(0.0, 0.1, cout).astype(np.float32)))
        y = self.node("Conv", ins, "conv", kernel_shape=[k, k], strides=[stride, stride],
                      pads=[pad] * 4, group=groups)
        if bn:
            y = self.bn(y, cout, gain=gain)
        return self.act(y, act)

    def maxpool(self, x: str, k: int, stride: int, pad: int = 0, ceil: bool = False) -> str:
        return self.node("MaxPool", [x], "maxpool", kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad] * 4, ceil_mode=int(ceil))

    def avgpool(self, x: str, k: int, stride: int, pad: int = 0) -> str:
        return self.node("AveragePool", [x], "avgpool", kernel_shape=[k, k],
                         strides=[stride, stride], pads=[pad] * 4)

    def lrn(self, x: str, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
            bias: float = 1.0) -> str:
        return self.node("LRN", [x], "lrn", size=size, alpha=alpha, beta=beta, bias=bias)

    def gap(self, x: str) -> str:
        return self.node("GlobalAveragePool", [x], "gap")

    def fc(self, x: str, cin: int, cout: int, flatten: bool = True, act: str | None = None) -> str:
        """Flatten (when ``flatten``), then Gemm with a [cout, cin] weight (transB, as PyTorch)."""
        if flatten:
            x = self.node("Flatten", [x], axis=1)
        w = self.const("fc_w", self.he((cout, cin), cin))
        b = self.const("fc_b", self.rng.normal(0.0, 0.1, cout).astype(np.float32))
        return self.act(self.node("Gemm", [x, w, b], "fc", transB=1), act)

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b])

    def concat(self, xs: list[str]) -> str:
        return self.node("Concat", xs, axis=1)

    def squeeze_excite(self, x: str, c: int, squeeze: int, act: str, gate: str) -> str:
        """x * gate(fc2(act(fc1(mean over H, W)))), the fc layers as 1x1 convs with bias."""
        s = self.gap(x)
        s = self.conv(s, c, squeeze, 1, bn=False, act=act, bias=True)
        s = self.conv(s, squeeze, c, 1, bn=False, act=gate, bias=True)
        return self.node("Mul", [x, s], "se")

    def channel_shuffle(self, x: str, c: int, h: int, groups: int = 2) -> str:
        """ShuffleNet's Reshape-Transpose-Reshape over the channels."""
        s1 = self.const("shape", np.array([0, groups, c // groups, h, h], np.int64))
        s2 = self.const("shape", np.array([0, c, h, h], np.int64))
        y = self.node("Reshape", [x, s1])
        y = self.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
        return self.node("Reshape", [y, s2], "shuffle")

    def split2(self, x: str, c: int) -> tuple[str, str]:
        """Two halves of the channels (torch.chunk(x, 2, dim=1) as exported)."""
        halves = self.const("split", np.array([c // 2, c // 2], np.int64))
        a, b = self.fresh("split_a"), self.fresh("split_b")
        self.nodes.append(self.helper.make_node("Split", [x, halves], [a, b], name=a, axis=1))
        return a, b

    def model(self, y: str, classes: int) -> bytes:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        self.nodes.append(helper.make_node("Identity", [y], ["logits"], name="logits"))
        graph = helper.make_graph(
            self.nodes, self.name, [self.input],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
            initializer=[numpy_helper.from_array(v, name=k) for k, v in self.inits.items()],
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m.SerializeToString()


def _spatial(image: int, stride: int) -> int:
    return -(-image // stride)


# ---------------------------------------------------------------- ResNet


def resnet(depth: int, image: int = 224, classes: int = 1000, seed: int = 0) -> bytes:
    """ResNet-18/34 (basic blocks) or -50/101/152 (bottlenecks, stride on the 3x3: v1.5)."""
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
              152: [3, 8, 36, 3]}[depth]
    bottleneck = depth >= 50
    expansion = 4 if bottleneck else 1
    n = Net(f"resnet{depth}", seed, image)
    x = n.conv("x", 3, 64, 7, stride=2, pad=3)
    x = n.maxpool(x, 3, 2, 1)
    cin = 64
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            cout = width * expansion
            if bottleneck:
                y = n.conv(x, cin, width, 1)
                y = n.conv(y, width, width, 3, stride=stride)
                y = n.conv(y, width, cout, 1, act=None, gain=RESIDUAL_GAIN)
            else:
                y = n.conv(x, cin, width, 3, stride=stride)
                y = n.conv(y, width, cout, 3, act=None, gain=RESIDUAL_GAIN)
            short = x if stride == 1 and cin == cout else n.conv(x, cin, cout, 1, stride, act=None)
            x = n.act(n.add(y, short), "relu")
            cin = cout
    return n.model(n.fc(n.gap(x), cin, classes), classes)


# ---------------------------------------------------------------- MobileNets


def mobilenet_v2(image: int = 224, classes: int = 1000, seed: int = 0) -> bytes:
    """MobileNetV2 1.0: inverted residuals with linear bottlenecks, ReLU6."""
    n = Net("mobilenet_v2", seed, image)
    x = n.conv("x", 3, 32, 3, stride=2, act="relu6")
    cin = 32
    for t, c, count, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(count):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x if t == 1 else n.conv(x, cin, hidden, 1, act="relu6")
            y = n.conv(y, hidden, hidden, 3, stride=stride, groups=hidden, act="relu6")
            res = stride == 1 and cin == c
            y = n.conv(y, hidden, c, 1, act=None, gain=RESIDUAL_GAIN if res else 1.0)
            x = n.add(x, y) if stride == 1 and cin == c else y
            cin = c
    x = n.conv(x, cin, 1280, 1, act="relu6")
    return n.model(n.fc(n.gap(x), 1280, classes), classes)


def mobilenet_v3_small(image: int = 224, classes: int = 1000, seed: int = 0) -> bytes:
    """MobileNetV3-Small: squeeze-excite with a hard-sigmoid gate, HardSwish in the later blocks."""
    n = Net("mobilenet_v3_small", seed, image)
    x = n.conv("x", 3, 16, 3, stride=2, act="hardswish")
    # (input, kernel, expanded, output, squeeze-excite, activation, stride)
    for cin, k, exp, cout, se, act, s in (
        (16, 3, 16, 16, True, "relu", 2),
        (16, 3, 72, 24, False, "relu", 2),
        (24, 3, 88, 24, False, "relu", 1),
        (24, 5, 96, 40, True, "hardswish", 2),
        (40, 5, 240, 40, True, "hardswish", 1),
        (40, 5, 240, 40, True, "hardswish", 1),
        (40, 5, 120, 48, True, "hardswish", 1),
        (48, 5, 144, 48, True, "hardswish", 1),
        (48, 5, 288, 96, True, "hardswish", 2),
        (96, 5, 576, 96, True, "hardswish", 1),
        (96, 5, 576, 96, True, "hardswish", 1),
    ):
        y = x if exp == cin else n.conv(x, cin, exp, 1, act=act)
        y = n.conv(y, exp, exp, k, stride=s, groups=exp, act=act)
        if se:
            y = n.squeeze_excite(y, exp, make_divisible(exp // 4), "relu", "hardsigmoid")
        res = s == 1 and cin == cout
        y = n.conv(y, exp, cout, 1, act=None, gain=RESIDUAL_GAIN if res else 1.0)
        x = n.add(x, y) if s == 1 and cin == cout else y
    x = n.conv(x, 96, 576, 1, act="hardswish")
    x = n.fc(n.gap(x), 576, 1024, act="hardswish")
    return n.model(n.fc(x, 1024, classes, flatten=False), classes)


def efficientnet_b0(image: int = 224, classes: int = 1000, seed: int = 0) -> bytes:
    """EfficientNet-B0: MBConv blocks with squeeze-excite, SiLU as x·sigmoid(x)."""
    n = Net("efficientnet_b0", seed, image)
    x = n.conv("x", 3, 32, 3, stride=2, act="silu")
    cin = 32
    # (expand ratio, kernel, stride, output, layers)
    for t, k, s, c, count in ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2),
                              (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
                              (6, 3, 1, 320, 1)):
        for i in range(count):
            stride = s if i == 0 else 1
            exp = cin * t
            y = x if exp == cin else n.conv(x, cin, exp, 1, act="silu")
            y = n.conv(y, exp, exp, k, stride=stride, groups=exp, act="silu")
            y = n.squeeze_excite(y, exp, max(1, cin // 4), "silu", "sigmoid")
            res = stride == 1 and cin == c
            y = n.conv(y, exp, c, 1, act=None, gain=RESIDUAL_GAIN if res else 1.0)
            x = n.add(x, y) if stride == 1 and cin == c else y
            cin = c
    x = n.conv(x, cin, 1280, 1, act="silu")
    return n.model(n.fc(n.gap(x), 1280, classes), classes)


# ---------------------------------------------------------------- SqueezeNet, ShuffleNet


def squeezenet_1_1(image: int = 224, classes: int = 1000, seed: int = 0) -> bytes:
    """SqueezeNet 1.1: fire modules, biased convs without BatchNorm (as the original)."""
    n = Net("squeezenet1_1", seed, image)

    def fire(x: str, cin: int, squeeze: int, e1: int, e3: int) -> str:
        s = n.conv(x, cin, squeeze, 1, bn=False, bias=True)
        return n.concat([n.conv(s, squeeze, e1, 1, bn=False, bias=True),
                         n.conv(s, squeeze, e3, 3, bn=False, bias=True)])

    x = n.conv("x", 3, 64, 3, stride=2, pad=0, bn=False, bias=True)
    x = n.maxpool(x, 3, 2, ceil=True)
    x = fire(x, 64, 16, 64, 64)
    x = fire(x, 128, 16, 64, 64)
    x = n.maxpool(x, 3, 2, ceil=True)
    x = fire(x, 128, 32, 128, 128)
    x = fire(x, 256, 32, 128, 128)
    x = n.maxpool(x, 3, 2, ceil=True)
    x = fire(x, 256, 48, 192, 192)
    x = fire(x, 384, 48, 192, 192)
    x = fire(x, 384, 64, 256, 256)
    x = fire(x, 512, 64, 256, 256)
    x = n.conv(x, 512, classes, 1, bn=False, bias=True)
    return n.model(n.node("Flatten", [n.gap(x)], axis=1), classes)


def shufflenet_v2(image: int = 224, classes: int = 1000, seed: int = 0) -> bytes:
    """ShuffleNetV2 1.0: channel split, two branches, concat and channel shuffle."""
    n = Net("shufflenet_v2_x1_0", seed, image)
    x = n.conv("x", 3, 24, 3, stride=2)
    x = n.maxpool(x, 3, 2, 1)
    size = _spatial(_spatial(image, 2), 2)
    cin = 24
    for cout, repeats in ((116, 4), (232, 8), (464, 4)):
        for i in range(repeats):
            half = cout // 2
            if i == 0:
                size = _spatial(size, 2)
                b1 = n.conv(x, cin, cin, 3, stride=2, groups=cin, act=None)
                b1 = n.conv(b1, cin, half, 1)
                b2 = n.conv(x, cin, half, 1)
                b2 = n.conv(b2, half, half, 3, stride=2, groups=half, act=None)
                b2 = n.conv(b2, half, half, 1)
            else:
                b1, b2 = n.split2(x, cout)
                b2 = n.conv(b2, half, half, 1)
                b2 = n.conv(b2, half, half, 3, groups=half, act=None)
                b2 = n.conv(b2, half, half, 1)
            x = n.channel_shuffle(n.concat([b1, b2]), cout, size)
            cin = cout
    x = n.conv(x, cin, 1024, 1)
    x = n.node("ReduceMean", [x], "mean", axes=[2, 3], keepdims=0)
    return n.model(n.fc(x, 1024, classes, flatten=False), classes)


# ---------------------------------------------------------------- VGG, DenseNet


def vgg16(image: int = 224, classes: int = 1000, seed: int = 0) -> bytes:
    """VGG-16 (configuration D): thirteen biased 3x3 convs with ReLU, five max pools, three FC."""
    n = Net("vgg16", seed, image)
    x, cin = "x", 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"):
        if v == "M":
            x = n.maxpool(x, 2, 2)
        else:
            assert isinstance(v, int)
            x = n.conv(x, cin, v, 3, bn=False, bias=True)
            cin = v
    flat = 512 * (image // 32) ** 2
    x = n.fc(x, flat, 4096, act="relu")
    x = n.fc(x, 4096, 4096, flatten=False, act="relu")
    return n.model(n.fc(x, 4096, classes, flatten=False), classes)


def densenet121(image: int = 224, classes: int = 1000, seed: int = 0) -> bytes:
    """DenseNet-121: four dense blocks (6, 12, 24, 16 layers, growth 32) with pre-activation
    BatchNorm-ReLU-conv layers and transitions that halve the channels."""
    n = Net("densenet121", seed, image)
    growth, bn_size = 32, 4
    x = n.conv("x", 3, 64, 7, stride=2, pad=3)
    x = n.maxpool(x, 3, 2, 1)
    c = 64
    for b, layers in enumerate((6, 12, 24, 16)):
        features = [x]
        for _ in range(layers):
            h = features[0] if len(features) == 1 else n.concat(features)
            h = n.act(n.bn(h, c), "relu")
            h = n.conv(h, c, bn_size * growth, 1)
            h = n.conv(h, bn_size * growth, growth, 3, bn=False, act=None)
            features.append(h)
            c += growth
        x = n.concat(features)
        if b < 3:
            x = n.act(n.bn(x, c), "relu")
            x = n.conv(x, c, c // 2, 1, bn=False, act=None)
            x = n.avgpool(x, 2, 2)
            c //= 2
    x = n.act(n.bn(x, c), "relu")
    return n.model(n.fc(n.gap(x), c, classes), classes)


# ---------------------------------------------------------------- LRN networks


def alexnet(image: int = 224, classes: int = 1000, seed: int = 0, width: int = 1) -> bytes:
    """AlexNet as in the paper (Caffe's bvlc_alexnet): LRN after conv1 and conv2, two-group
    conv2/4/5. ``width`` divides every layer's channels (small test versions)."""
    n = Net("alexnet", seed, image)
    c = [96 // width, 256 // width, 384 // width, 4096 // width]
    x = n.conv("x", 3, c[0], 11, stride=4, pad=0, bn=False, bias=True)
    x = n.maxpool(n.lrn(x, 5, 1e-4, 0.75, 1.0), 3, 2, ceil=True)
    x = n.conv(x, c[0], c[1], 5, groups=2, bn=False, bias=True)
    x = n.maxpool(n.lrn(x, 5, 1e-4, 0.75, 1.0), 3, 2, ceil=True)
    x = n.conv(x, c[1], c[2], 3, bn=False, bias=True)
    x = n.conv(x, c[2], c[2], 3, groups=2, bn=False, bias=True)
    x = n.conv(x, c[2], c[1], 3, groups=2, bn=False, bias=True)
    x = n.maxpool(x, 3, 2, ceil=True)
    size = _pool_out(_pool_out(_pool_out((image - 11) // 4 + 1)))
    x = n.fc(x, c[1] * size * size, c[3], act="relu")
    x = n.fc(x, c[3], c[3], flatten=False, act="relu")
    return n.model(n.fc(x, c[3], classes, flatten=False), classes)


def zfnet(image: int = 224, classes: int = 1000, seed: int = 0, width: int = 1) -> bytes:
    """ZFNet (Zeiler & Fergus): AlexNet with a 7x7 stride-2 first layer and a stride-2 conv2,
    contrast normalization (LRN) after both."""
    n = Net("zfnet", seed, image)
    c = [96 // width, 256 // width, 384 // width, 4096 // width]
    x = n.conv("x", 3, c[0], 7, stride=2, pad=1, bn=False, bias=True)
    x = n.lrn(n.maxpool(x, 3, 2, pad=1), 5, 1e-4, 0.75, 1.0)
    x = n.conv(x, c[0], c[1], 5, stride=2, pad=0, bn=False, bias=True)
    x = n.lrn(n.maxpool(x, 3, 2, pad=1), 5, 1e-4, 0.75, 1.0)
    x = n.conv(x, c[1], c[2], 3, bn=False, bias=True)
    x = n.conv(x, c[2], c[2], 3, bn=False, bias=True)
    x = n.conv(x, c[2], c[1], 3, bn=False, bias=True)
    x = n.maxpool(x, 3, 2)
    size = (image + 2 - 7) // 2 + 1
    size = (size + 2 - 3) // 2 + 1
    size = (size - 5) // 2 + 1
    size = (size + 2 - 3) // 2 + 1
    size = (size - 3) // 2 + 1
    x = n.fc(x, c[1] * size * size, c[3], act="relu")
    x = n.fc(x, c[3], c[3], flatten=False, act="relu")
    return n.model(n.fc(x, c[3], classes, flatten=False), classes)


def googlenet(image: int = 224, classes: int = 1000, seed: int = 0, width: int = 1) -> bytes:
    """GoogLeNet (Inception v1, Caffe's bvlc_googlenet): LRN after the stem's pools, nine
    inception modules, global average pooling."""
    n = Net("googlenet", seed, image)

    def ch(v: int) -> int:
        return max(1, v // width)

    def inception(x: str, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, pp: int) -> tuple[str, int]:
        b1 = n.conv(x, cin, ch(c1), 1, bn=False, bias=True)
        b3 = n.conv(n.conv(x, cin, ch(r3), 1, bn=False, bias=True), ch(r3), ch(c3), 3, bn=False, bias=True)
        b5 = n.conv(n.conv(x, cin, ch(r5), 1, bn=False, bias=True), ch(r5), ch(c5), 5, bn=False, bias=True)
        bp = n.conv(n.maxpool(x, 3, 1, 1), cin, ch(pp), 1, bn=False, bias=True)
        return n.concat([b1, b3, b5, bp]), ch(c1) + ch(c3) + ch(c5) + ch(pp)

    x = n.conv("x", 3, ch(64), 7, stride=2, pad=3, bn=False, bias=True)
    x = n.lrn(n.maxpool(x, 3, 2, ceil=True))
    x = n.conv(x, ch(64), ch(64), 1, bn=False, bias=True)
    x = n.conv(x, ch(64), ch(192), 3, bn=False, bias=True)
    x = n.maxpool(n.lrn(x), 3, 2, ceil=True)
    c = ch(192)
    for cfg in ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), None,
                (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
                (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
                (256, 160, 320, 32, 128, 128), None,
                (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)):
        if cfg is None:
            x = n.maxpool(x, 3, 2, ceil=True)
        else:
            x, c = inception(x, c, *cfg)
    return n.model(n.fc(n.gap(x), c, classes), classes)


def _pool_out(size: int, k: int = 3, s: int = 2) -> int:
    """A ceil-mode pooling's output size."""
    return -(-(size - k) // s) + 1


#: The bench's model set: name -> builder(image, classes, seed).
MODELS: dict[str, Callable[..., bytes]] = {
    "resnet18": lambda image=224, classes=1000, seed=0: resnet(18, image, classes, seed),
    "resnet50": lambda image=224, classes=1000, seed=0: resnet(50, image, classes, seed),
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_small": mobilenet_v3_small,
    "squeezenet1_1": squeezenet_1_1,
    "shufflenet_v2": shufflenet_v2,
    "vgg16": vgg16,
    "densenet121": densenet121,
    "efficientnet_b0": efficientnet_b0,
}
