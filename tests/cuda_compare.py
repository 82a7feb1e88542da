"""CUDA vs CPU: every native op and the test models, run on both devices and compared.

Imported by tests/test_cuda.py for the case list, and run as a script inside a CUDA-enabled
build of pyengine (``python cuda_compare.py OUT.json``): it writes how each case lowers for a
device and, where a GPU is present, the largest difference between the GPU's and the CPU's
outputs per case.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import pyengine
from pyengine import _core, devices

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

#: GPU and CPU outputs must agree to this (absolute and relative).
TOLERANCE = 1e-4


@dataclass
class Case:
    """A one-node graph: runtime inputs, constant tensors and attributes."""

    name: str
    op: str
    inputs: list[np.ndarray]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


def _r(rng: np.random.Generator, *shape: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


def op_cases() -> list[Case]:
    """At least one case per op in the engine, with odd sizes and each layout/path."""
    rng = np.random.default_rng(7)
    r = lambda *s, **k: _r(rng, *s, **k)  # noqa: E731
    cases = [
        Case(
            "dense_relu", "Dense", [r(5, 37)], {"w": r(37, 19), "b": r(19)}, {"activation": "relu"}
        ),
        Case(
            "dense_transb_sigmoid",
            "Dense",
            [r(3, 37)],
            {"w": r(19, 37)},
            {"transpose_b": True, "activation": "sigmoid"},
        ),
        Case("matmul_rank4", "MatMul", [r(2, 3, 5, 7)], {"w": r(7, 4)}),
    ]
    for layout in ("NCHW", "NHWC"):

        def img(n: int, c: int, h: int, w: int, layout: str = layout) -> np.ndarray:
            return r(n, c, h, w) if layout == "NCHW" else r(n, h, w, c)

        cases += [
            Case(
                f"conv3x3_bias_relu6_{layout}",
                "Conv2D",
                [img(2, 5, 9, 11)],
                {"w": r(7, 5, 3, 3), "b": r(7)},
                {"layout": layout, "pads": [1, 1, 1, 1], "activation": "relu6"},
            ),
            Case(
                f"conv_stride2_dil2_same_{layout}",
                "Conv2D",
                [img(3, 4, 13, 10)],
                {"w": r(6, 4, 3, 2)},
                {
                    "layout": layout,
                    "strides": [2, 2],
                    "dilations": [2, 2],
                    "padding": "SAME",
                    "activation": "leaky_relu",
                    "alpha": 0.2,
                },
            ),
            Case(
                f"conv_pointwise_{layout}",
                "Conv2D",
                [img(2, 25, 6, 7)],
                {"w": r(9, 25, 1, 1), "b": r(9)},
                {"layout": layout, "activation": "clip", "min": -0.3, "max": 0.4},
            ),
            Case(
                f"conv_depthwise_{layout}",
                "Conv2D",
                [img(2, 12, 10, 9)],
                {"w": r(12, 1, 3, 3), "b": r(12)},
                {
                    "layout": layout,
                    "groups": 12,
                    "strides": [2, 2],
                    "pads": [1, 1, 1, 1],
                    "activation": "tanh",
                },
            ),
            Case(
                f"conv_grouped_{layout}",
                "Conv2D",
                [img(1, 8, 7, 7)],
                {"w": r(6, 4, 3, 3)},
                {"layout": layout, "groups": 2, "padding": "VALID", "activation": "hard_swish"},
            ),
            Case(
                f"maxpool_{layout}",
                "MaxPool",
                [img(2, 5, 11, 9)],
                {},
                {"layout": layout, "kernel": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
            ),
            Case(
                f"avgpool_ceil_pad_{layout}",
                "AvgPool",
                [img(2, 3, 10, 7)],
                {},
                {
                    "layout": layout,
                    "kernel": [3, 2],
                    "strides": [2, 2],
                    "pads": [1, 0, 1, 1],
                    "ceil_mode": True,
                    "count_include_pad": True,
                },
            ),
            Case(
                f"avgpool_same_{layout}",
                "AvgPool",
                [img(1, 4, 9, 9)],
                {},
                {"layout": layout, "kernel": [2, 2], "strides": [2, 2], "padding": "SAME"},
            ),
            Case(f"globalmax_{layout}", "GlobalMaxPool", [img(2, 6, 5, 7)], {}, {"layout": layout}),
            Case(f"globalavg_{layout}", "GlobalAvgPool", [img(2, 6, 5, 7)], {}, {"layout": layout}),
        ]
    c = 6
    cases += [
        Case(
            "batchnorm_nchw",
            "BatchNorm",
            [r(2, c, 5, 3)],
            {"s": r(c), "b": r(c), "m": r(c), "v": r(c, low=0.5, high=1.5)},
            {"epsilon": 1e-3},
        ),
        Case(
            "batchnorm_nhwc",
            "BatchNorm",
            [r(2, 5, 3, c)],
            {"s": r(c), "b": r(c), "m": r(c), "v": r(c, low=0.5, high=1.5)},
            {"axis": -1},
        ),
        # A pre-activation BatchNorm with its ReLU fused (DenseNet's BN-ReLU before a conv).
        Case(
            "batchnorm_relu",
            "BatchNorm",
            [r(2, c, 5, 3)],
            {"s": r(c), "b": r(c), "m": r(c), "v": r(c, low=0.5, high=1.5)},
            {"activation": "relu"},
        ),
        Case(
            "batchnorm_clip",
            "BatchNorm",
            [r(2, 5, 3, c)],
            {"s": r(c), "b": r(c), "m": r(c), "v": r(c, low=0.5, high=1.5)},
            {"axis": -1, "activation": "clip", "min": -0.2, "max": 0.3},
        ),
        Case("add_broadcast", "Add", [r(2, 3, 4, 5), r(3, 1, 5)]),
        Case("sub_broadcast", "Sub", [r(4, 1), r(1, 6)]),
        Case("mul_constant", "Mul", [r(2, 7, 3)], {"k": r(7, 1)}),
        Case("div", "Div", [r(3, 8), r(3, 8, low=0.5, high=2.0)]),
        Case("relu", "Relu", [r(3, 7, 11)]),
        Case("relu6", "Relu6", [r(3, 7, 11, low=-8, high=8)]),
        Case("clip", "Clip", [r(3, 7, 11)], {}, {"min": -0.5, "max": 0.25}),
        Case("leaky_relu", "LeakyRelu", [r(3, 7, 11)], {}, {"alpha": 0.1}),
        Case("sigmoid", "Sigmoid", [r(3, 7, 11, low=-6, high=6)]),
        Case("tanh", "Tanh", [r(3, 7, 11, low=-3, high=3)]),
        Case("hard_sigmoid", "HardSigmoid", [r(3, 7, 11, low=-5, high=5)], {}, {"alpha": 0.3, "beta": 0.4}),
        Case("hard_swish", "HardSwish", [r(3, 7, 11, low=-5, high=5)]),
        Case("silu", "Silu", [r(3, 7, 11, low=-6, high=6)]),
        Case("lrn_nchw", "LRN", [r(2, 7, 5, 3)], {}, {"size": 5, "alpha": 0.05, "beta": 0.75, "bias": 1.5}),
        Case("lrn_nhwc_even", "LRN", [r(2, 5, 3, 6)], {}, {"size": 4, "alpha": 0.1, "beta": 0.5, "axis": -1}),
        Case("slice_negative", "Slice", [r(2, 9, 4)], {}, {"axis": 1, "start": -7, "end": 6}),
        Case("softmax_last", "Softmax", [r(4, 1000, low=-5, high=5)]),
        Case("softmax_axis1", "Softmax", [r(2, 5, 3, 4)], {}, {"axis": 1}),
        Case("flatten", "Flatten", [r(2, 3, 4, 5)]),
        Case("reshape", "Reshape", [r(2, 3, 4, 5)], {}, {"shape": [0, -1, 5]}),
        Case("transpose", "Transpose", [r(2, 3, 4, 5)], {}, {"perm": [0, 2, 3, 1]}),
        Case("squeeze", "Squeeze", [r(3, 1, 5)], {}, {"axes": [1]}),
        Case("concat", "Concat", [r(2, 3, 4), r(2, 5, 4), r(2, 1, 4)], {}, {"axis": 1}),
        Case("pad_constant", "Pad", [r(2, 3, 4)], {}, {"pads": [0, 1, 2, 1, 0, 3], "value": 0.5}),
        Case(
            "pad_reflect", "Pad", [r(2, 5, 4)], {}, {"pads": [0, 2, 1, 0, 3, 2], "mode": "reflect"}
        ),
        Case("pad_edge", "Pad", [r(1, 3, 3)], {}, {"pads": [0, 2, 2, 0, 1, 4], "mode": "edge"}),
        Case("mean_hw", "Mean", [r(2, 6, 5, 7)], {}, {"axes": [2, 3], "keepdims": False}),
        Case("mean_all", "Mean", [r(3, 4, 5)]),
        Case("identity", "Identity", [r(4, 3)]),
    ]
    return cases


def build_case(case: Case, directory: str) -> str:
    """Write the case's one-node graph to a .pyem file; returns its path."""
    g = pyengine.GraphBuilder()
    names = [g.input(f"x{i}", [-1, *a.shape[1:]]) for i, a in enumerate(case.inputs)]
    consts = [g.constant(k, v) for k, v in case.constants.items()]
    g.output(g.node(case.op, names + consts, name=case.name, **case.attrs))
    return g.save(os.path.join(directory, f"{case.name}.pyem"))


def feed(case_inputs: list[np.ndarray]) -> Any:
    return (
        case_inputs[0] if len(case_inputs) == 1 else {f"x{i}": a for i, a in enumerate(case_inputs)}
    )


def model_cases(directory: str) -> list[tuple[str, str, np.ndarray]]:
    """(name, path, input) for the test models at batch 1 and 3, each layout."""
    rng = np.random.default_rng(3)
    out = []
    mlp = models.mlp(os.path.join(directory, "mlp.pyem"))
    for n in (1, 3):
        out.append((f"mlp_b{n}", mlp, rng.standard_normal((n, 64)).astype(np.float32)))
    for layout in ("NCHW", "NHWC"):
        cnn = models.cnn(os.path.join(directory, f"cnn_{layout}.pyem"), layout)
        mob = models.mobilenet_v2_graph(size=48, width=16, layout=layout).save(
            os.path.join(directory, f"mobilenet_{layout}.pyem")
        )
        for n in (1, 3):
            img = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
            mimg = rng.standard_normal((n, 3, 48, 48)).astype(np.float32)
            if layout == "NHWC":
                img, mimg = img.transpose(0, 2, 3, 1).copy(), mimg.transpose(0, 2, 3, 1).copy()
            out.append((f"cnn_{layout}_b{n}", cnn, img))
            out.append((f"mobilenet_{layout}_b{n}", mob, mimg))
    return out


def lowering(path: str, shapes: list[list[int]]) -> list[tuple[str, str]]:
    """How a device runs the model at ``path``: [(node, step kind)]."""
    return [tuple(s) for s in _core.device_steps(_core.Model(path), shapes)]


def max_error(a: np.ndarray, b: np.ndarray) -> float:
    """The largest |a - b| / (1 + |b|): absolute for small values, relative for large ones."""
    return float(np.max(np.abs(a - b) / (1.0 + np.abs(b)))) if a.size else 0.0


def compare(directory: str) -> dict[str, Any]:
    """Run everything; returns a JSON-able report."""
    report: dict[str, Any] = {
        "gpus": devices.gpus(),
        "cuda": devices.cuda_status(),
        "lowering": {},
        "errors": {},
    }
    gpu = bool(report["gpus"])
    for case in op_cases():
        path = build_case(case, directory)
        report["lowering"][case.name] = lowering(path, [list(a.shape) for a in case.inputs])
        if gpu:
            cpu = pyengine.load(path, device="cpu").predict(feed(case.inputs))
            dev = pyengine.load(path, device="cuda").predict(feed(case.inputs))
            assert isinstance(cpu, np.ndarray) and isinstance(dev, np.ndarray)
            assert cpu.shape == dev.shape, (case.name, cpu.shape, dev.shape)
            report["errors"][case.name] = max_error(dev, cpu)
    for name, path, x in model_cases(directory):
        report["lowering"][name] = lowering(path, [list(x.shape)])
        if gpu:
            cpu = pyengine.load(path, device="cpu").predict(x)
            model = pyengine.load(path, device="cuda")
            assert model.device == "cuda:0"
            report["errors"][name] = max_error(model.predict(x), cpu)
            # Several threads at once: each call takes its own pooled context.
            results: list[float] = []

            def call(
                model: Any = model, x: np.ndarray = x, cpu: np.ndarray = cpu, out: list = results
            ) -> None:
                out.append(max_error(model.predict(x), cpu))

            threads = [threading.Thread(target=call) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            report["errors"][f"{name}_threads"] = (
                max(results) if len(results) == 4 else float("inf")
            )
    if gpu:  # the CPU fallback path on a real GPU: ops forced to the host between device steps
        os.environ["PYENGINE_DEVICE_HOST_OPS"] = "Add,GlobalAvgPool,Flatten,Dense"
        try:
            for name, path, x in model_cases(directory):
                if name.startswith("mobilenet"):
                    cpu = pyengine.load(path, device="cpu").predict(x)
                    dev = pyengine.load(path, device="cuda").predict(x)
                    report["errors"][f"{name}_host_fallback"] = max_error(dev, cpu)
        finally:
            del os.environ["PYENGINE_DEVICE_HOST_OPS"]
    return report


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        report = compare(d)
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
