"""`pyengine quantize MODEL -o OUT.pyem --calibrate DATA`: post-training int8 quantization."""

from __future__ import annotations

import argparse

from pyengine.cli.output import add_json_flag, print_json
from pyengine.errors import ModelFormatError

#: Reported as plain errors (exit code 1) with their message.
ERRORS = (ValueError, ModelFormatError, FileNotFoundError)


def quantize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="float .pyem model")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pyem", help="int8 model to write")
    p.add_argument("--calibrate", required=True, metavar="DATA.npy|DIR",
                   help="calibration samples of the model's input: one .npy [N, ...] or a directory of .npy")
    p.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax",
                   help="activation ranges from the calibration data (default minmax)")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="percentile method: the percentile of each tail kept (default 99.99)")
    p.add_argument("--exclude", action="append", default=[], metavar="NODE",
                   help="keep this node in float (repeat, or commas)")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per channel")
    add_json_flag(p, "the quantization report")


def quantize_run(args: argparse.Namespace) -> int:
    from pyengine.quantization import quantize

    exclude = [name for item in args.exclude for name in item.split(",") if name]
    report = quantize(args.model, args.calibrate, args.output, method=args.method, percentile=args.percentile,
                      exclude=exclude, per_channel=not args.per_tensor)
    if args.json:
        print_json(report.as_dict())
    else:
        print(report.text())
    return 0
