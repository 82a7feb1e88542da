"""Model commands: info, run."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

import pyengine
from pyengine.cli.output import add_json_flag, print_json
from pyengine.errors import DeviceUnavailableError
from pyengine.frameworks import BACKENDS

#: Errors that mean something needed is missing (exit code 3; docs/cli.md).
UNAVAILABLE = (DeviceUnavailableError,)


def info_args(p: argparse.ArgumentParser) -> None:
    add_json_flag(p, "the engine's description")


def info_run(args: argparse.Namespace) -> int:
    data = pyengine.info()
    if args.json:
        print_json(data)
        return 0
    cpu = data["cpu"]
    flags = [k for k in ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "neon", "asimddp") if cpu.get(k)]
    print(f"pyengine {data['version']}")
    features = " ".join(flags) or "baseline"
    print(f"cpu:      {cpu['model'] or cpu['arch']} ({cpu['arch']}, {cpu['cores']} cores; {features})")
    print(f"kernels:  {data['kernel_variant']} (available: {', '.join(data['kernels_available'])})")
    print(f"int8:     {data['int8_kernel']}")
    print(f"threads:  {data['threads']}")
    gpus = data["gpus"]
    if gpus:
        for g in gpus:
            print(f"gpu:      cuda:{g['index']} {g['name']} (compute {g['compute_capability']}, "
                  f"{g['memory_bytes'] / 2**30:.1f} GiB, {g['path']})")
    else:
        print(f"gpus:     none ({data['cuda']['error'] or 'no CUDA GPU'})")
    print(f"backends: {', '.join(data['backends'])}")
    return 0


def run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file or directory")
    p.add_argument("--input", "-i", action="append", required=True, metavar="[NAME=]FILE.npy",
                   help="input array; NAME= picks the input when the model has several")
    p.add_argument("--output", "-o", help="write the output to this .npy (.npz for several outputs)")
    p.add_argument("--backend", default="auto",
                   choices=BACKENDS,
                   help="auto (default): the native engine, or the model's framework when it "
                   "does not convert; native: refuse what does not convert; a framework: run on "
                   "it")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--profile", action="store_true",
                   help="time each op of the native model and print a table (type, shapes, layout, "
                        "kernel, time, share)")
    p.add_argument("--profile-json", metavar="FILE",
                   help="write the profiled runs as a Chrome trace JSON (implies --profile)")
    p.add_argument("--runs", type=int, default=10, help="calls timed by --profile (default 10)")
    p.add_argument("--top", type=int, default=None, help="--profile prints only the N slowest ops")
    add_json_flag(p, "the outputs (or with --output, their shapes and file)")


def tensor_json(arr: np.ndarray, values: bool = True) -> dict[str, Any]:
    """An output array as ``--json`` prints it: shape, dtype and (``values``) nested lists."""
    out: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if values:
        out["values"] = arr.tolist()
    return out


def run_run(args: argparse.Namespace) -> int:
    profiling = args.profile or args.profile_json is not None
    model = pyengine.load(args.model, backend=args.backend,
                          device="cpu" if profiling and args.device == "auto" else args.device)
    if profiling and not hasattr(model, "profile"):
        raise ValueError(f"--profile times the native engine's ops; '{args.model}' runs on the "
                         f"{model.backend} backend (load it with --backend native to see why it "
                         "does not convert)")
    named = {}
    for item in args.input:
        name, sep, path = item.rpartition("=")
        named[name if sep else ""] = np.load(path, allow_pickle=False)
    x = named[""] if list(named) == [""] else named
    if profiling and args.json:
        raise ValueError("--json prints the outputs; with --profile use --profile-json FILE for "
                         "the timings")
    if profiling:
        report = model.profile(x, runs=args.runs, trace_path=args.profile_json)  # type: ignore[attr-defined]
        print(report.table(top=args.top))
        if args.profile_json:
            print(f"Chrome trace: {args.profile_json}")
        if not args.output:
            return 0
    y = model.predict(x)
    outputs = y if isinstance(y, dict) else {model.outputs[0].name: y}
    if args.json:
        print_json({"model": args.model, "backend": model.backend,
                    "outputs": {name: tensor_json(arr, values=not args.output)
                                for name, arr in outputs.items()},
                    "output_file": args.output})
    if args.output:
        if isinstance(y, dict):
            np.savez(args.output, **y)
        else:
            np.save(args.output, y)
    elif not args.json:
        for name, arr in outputs.items():
            print(f"{name}: shape={list(arr.shape)} dtype={arr.dtype}")
            print(np.array2string(arr, threshold=50, precision=5))
    return 0
