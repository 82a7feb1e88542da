"""`pyengine convert SRC -o DST.pyem`: a framework model -> native file."""

from __future__ import annotations

import argparse
from typing import Any

import pyengine
from pyengine.cli.output import add_json_flag, print_json
from pyengine.frameworks import FRAMEWORKS


def _shape(text: str) -> tuple[str, list[int]]:
    name, sep, dims = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(
            f"--input-shape {text!r}: expected NAME=D1,D2,... (-1 = free)"
        )
    try:
        return name, [int(d) for d in dims.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--input-shape {text!r}: dimensions must be integers"
        ) from None


def spec_json(spec: Any) -> dict[str, Any]:
    """A model input or output (:class:`pyengine.TensorSpec`) as ``--json`` prints it."""
    return {"name": spec.name, "shape": list(spec.shape), "dtype": str(spec.dtype)}


def convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "src", help="model file or directory (TensorFlow, MXNet, Chainer with manifest, ONNX)"
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="DST.pyem", help="native model to write"
    )
    p.add_argument(
        "--framework",
        choices=list(FRAMEWORKS),
        help="only consider this framework's model in SRC",
    )
    p.add_argument(
        "--input",
        action="append",
        dest="inputs",
        metavar="NAME",
        help="TensorFlow: an input node (default: the Placeholders)",
    )
    p.add_argument(
        "--output-node",
        action="append",
        dest="outputs",
        metavar="NAME",
        help="TensorFlow: an output node (default: nodes nothing consumes); ONNX: a value to end "
        "the graph at, leaving out what follows (detection post-processing: see pyengine.detection)",
    )
    p.add_argument("--epoch", type=int, help="MXNet: checkpoint epoch (default: the highest)")
    p.add_argument(
        "--input-shape",
        action="append",
        type=_shape,
        dest="input_shapes",
        metavar="NAME=D1,D2,...",
        help="an input's shape, -1 for a free dimension",
    )
    p.add_argument(
        "--weight-layout",
        default="plain",
        metavar="LAYOUT",
        help="convolution weights to store: plain (default: OIHW, repacked once at load on any "
        "CPU), nchwc16 (AVX-512), nchwc8 (AVX2), nchwc4 (NEON) or auto (this machine's kernels), "
        "several joined with commas; a blocked form is stored beside the plain one and read in "
        "place, without a copy, where the kernels use that block",
    )
    add_json_flag(p, "the written model's path, inputs and outputs")


def convert_run(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    if args.inputs:
        options["inputs"] = args.inputs
    if args.outputs:
        options["outputs"] = args.outputs
    if args.epoch is not None:
        options["epoch"] = args.epoch
    if args.input_shapes:
        options["input_shapes"] = dict(args.input_shapes)
    path = pyengine.convert(args.src, args.output, framework=args.framework,
                            weight_layout=args.weight_layout, **options)
    model = pyengine.load(path)
    if args.json:
        print_json({"path": path, "backend": model.backend,
                    "inputs": [spec_json(s) for s in model.inputs],
                    "outputs": [spec_json(s) for s in model.outputs]})
        return 0
    ins = ", ".join(f"{s.name}{list(s.shape)}" for s in model.inputs)
    outs = ", ".join(f"{s.name}{list(s.shape)}" for s in model.outputs)
    print(f"wrote {path}: inputs {ins}; outputs {outs}")
    return 0
