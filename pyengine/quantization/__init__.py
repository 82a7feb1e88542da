"""Post-training static quantization of a float .pyem model to int8 (docs/quantize.md).

Conv2D and Dense/MatMul nodes become QLinearConv2D / QLinearDense with per-channel symmetric
int8 weights and uint8 activations whose ranges come from calibration data; every other node
keeps running in float on the int8 grid values (docs/format.md "Quantized ops").
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from pyengine import _core, loader
from pyengine.quantization.calibrate import METHODS, RangeCollector, load_calibration, uint8_params
from pyengine.quantization.pyem_read import read_pyem

__all__ = ["quantize", "QuantizeReport", "METHODS"]

_QUANT_ACTS = {"none", "relu", "relu6", "clip"}
_CONV_KEYS = {"layout", "strides", "dilations", "pads", "padding", "groups", "activation", "min", "max"}


@dataclass
class QuantizeReport:
    """What :func:`quantize` did and how close the int8 model stays to the float one."""

    output: str
    method: str
    samples: int
    layers: list[dict[str, Any]] = field(default_factory=list)   # name, op, sqnr_db
    kept_float: list[dict[str, str]] = field(default_factory=list)  # name, op, reason
    outputs: list[dict[str, Any]] = field(default_factory=list)  # name, sqnr_db, max_abs_err, top1_agreement
    float_bytes: int = 0
    int8_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text(self) -> str:
        """The short report `pyengine quantize` prints."""
        lines = [f"quantized {len(self.layers)} layers ({self.method} calibration, {self.samples} samples) "
                 f"-> {self.output}",
                 f"file: {self.int8_bytes:,} bytes, {self.int8_bytes / max(self.float_bytes, 1):.2f}x the float "
                 f"{self.float_bytes:,}"]
        lines.append(f"{'layer':<32} {'op':<14} {'SQNR dB':>8}")
        for layer in self.layers:
            lines.append(f"{layer['name'][:32]:<32} {layer['op']:<14} {layer['sqnr_db']:>8.1f}")
        for k in self.kept_float:
            lines.append(f"{k['name'][:32]:<32} {k['op']:<14} {'float':>8}  ({k['reason']})")
        for o in self.outputs:
            agree = "" if o["top1_agreement"] is None else f", top-1 agreement {100 * o['top1_agreement']:.2f}%"
            lines.append(f"output {o['name']}: SQNR {o['sqnr_db']:.1f} dB, max |float - int8| "
                         f"{o['max_abs_err']:.4g}{agree}")
        return "\n".join(lines)


def quantize(
    model: str | os.PathLike[str],
    calibration: Any,
    output: str | os.PathLike[str],
    *,
    method: str = "minmax",
    percentile: float = 99.99,
    exclude: Iterable[str] = (),
    per_channel: bool = True,
    batch_size: int = 16,
) -> QuantizeReport:
    """Quantize a float ``.pyem`` model to int8 with calibration data.

    Parameters
    ----------
    model
        A float ``.pyem`` file (convert other formats with :func:`pyengine.convert` first).
    calibration
        Samples of the model's (single) input: an array ``[N, ...]``, a ``.npy`` file, or a
        directory of ``.npy`` files.
    output
        The int8 ``.pyem`` to write.
    method
        Activation ranges: ``minmax``, ``percentile`` (``percentile`` of each tail) or
        ``entropy`` (KL-divergence threshold); the graph's input always keeps its min/max.
    exclude
        Node names to keep in float.
    per_channel
        Per-output-channel weight scales (else one per tensor).

    Returns
    -------
    QuantizeReport
        Per-layer SQNR and the float vs int8 outputs on the calibration data.

    Raises
    ------
    ValueError
        An unknown method, a name in ``exclude`` that is no node, or calibration data that is
        empty or of the wrong shape or dtype (the message names expected and got).
    """
    if method not in METHODS:
        raise ValueError(f"method '{method}' is not one of {', '.join(METHODS)}")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile {percentile} must be in (50, 100]")
    graph, tensors = read_pyem(model)
    nodes = graph["nodes"]
    names = {n["name"] for n in nodes}
    excluded = set(exclude)
    unknown = sorted(excluded - names)
    if unknown:
        raise ValueError(f"--exclude names {unknown}, which are not nodes of '{os.fspath(model)}'")
    if len(graph["inputs"]) != 1:
        raise ValueError(f"the model has {len(graph['inputs'])} inputs; quantize calibrates single-input models")
    spec = graph["inputs"][0]
    data = load_calibration(calibration, spec["name"], spec["shape"])

    candidates, kept = _candidates(nodes, tensors, excluded)
    watch = sorted({v for n in candidates for v in (n["inputs"][0], n["outputs"][0])})
    float_vals = _run_probe(graph, tensors, watch, data, batch_size)
    stats: dict[str, RangeCollector] = {}
    for v in watch:
        stats[v] = RangeCollector()
        for chunk in float_vals[v]:
            stats[v].add(chunk)
    # The graph input keeps its full range under percentile/entropy: clipping the data itself
    # (images in [0, 1]) costs more than the finer grid gains.
    inputs = {i["name"] for i in graph["inputs"]}
    ranges = {v: uint8_params(*stats[v].range("minmax" if v in inputs else method, percentile)) for v in watch}

    graph_outputs = {o["name"] for o in graph["outputs"]}
    new_tensors = dict(tensors)
    for node in candidates:
        _rewrite(node, new_tensors, ranges, per_channel, node["outputs"][0] not in graph_outputs)
    used = {i for n in nodes for i in n["inputs"]} | graph_outputs
    for b in (n.get("blocked_weights") for n in nodes):
        for entry in b or []:
            used.add(entry["tensor"])
    new_tensors = {k: v for k, v in new_tensors.items() if k in used}
    output = os.fspath(output)
    _write(output, graph, new_tensors)

    report = QuantizeReport(output=output, method=method, samples=int(data.shape[0]), kept_float=kept,
                            float_bytes=os.path.getsize(model), int8_bytes=os.path.getsize(output))
    sample = data[: min(len(data), 64)]
    layer_outs = [n["outputs"][0] for n in candidates]
    out_names = [o["name"] for o in graph["outputs"]]
    q_vals = _run_probe(graph, new_tensors, layer_outs + out_names, sample, batch_size)
    f_vals = _run_probe(*read_pyem(model), layer_outs + out_names, sample, batch_size)
    for n in candidates:
        v = n["outputs"][0]
        report.layers.append({"name": n["name"], "op": n["op"],
                              "sqnr_db": _sqnr(np.concatenate(f_vals[v]), np.concatenate(q_vals[v]))})
    for name in out_names:
        f, q = np.concatenate(f_vals[name]), np.concatenate(q_vals[name])
        agree = float(np.mean(f.argmax(-1) == q.argmax(-1))) if f.ndim == 2 and f.shape[1] > 1 else None
        report.outputs.append({"name": name, "sqnr_db": _sqnr(f, q), "max_abs_err": float(np.max(np.abs(f - q))),
                               "top1_agreement": agree})
    return report


def _candidates(nodes: list[dict[str, Any]], tensors: dict[str, np.ndarray],
                excluded: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Nodes that become int8, and those kept in float with the reason."""
    out, kept = [], []
    for n in nodes:
        op, attrs = n["op"], n.get("attrs", {})
        if op not in ("Conv2D", "Dense", "MatMul"):
            continue
        reason = ""
        w = tensors.get(n["inputs"][1]) if len(n["inputs"]) > 1 else None
        b = n["inputs"][2] if len(n["inputs"]) > 2 else None
        if n["name"] in excluded:
            reason = "excluded"
        elif w is None or w.dtype != np.float32 or w.ndim != (4 if op == "Conv2D" else 2):
            reason = "weight is not a constant float tensor of the expected rank"
        elif b is not None and b not in tensors:
            reason = "bias is not a constant"
        elif n["inputs"][0] in tensors:
            reason = "input is a constant"
        elif attrs.get("activation", "none") not in _QUANT_ACTS:
            reason = f"activation '{attrs.get('activation')}' has no int8 epilogue"
        elif op == "Conv2D" and set(attrs) - _CONV_KEYS:
            reason = f"attributes {sorted(set(attrs) - _CONV_KEYS)}"
        if reason:
            kept.append({"name": n["name"], "op": op, "reason": reason})
        else:
            out.append(n)
    return out, kept


def _rewrite(node: dict[str, Any], tensors: dict[str, np.ndarray], ranges: dict[str, tuple[float, int]],
             per_channel: bool, requantize: bool) -> None:
    """Turns a float Conv2D/Dense node into its quantized form in place (tensors added)."""
    conv = node["op"] == "Conv2D"
    attrs = dict(node.get("attrs", {}))
    trans = bool(attrs.get("transpose_b", False))
    w = tensors[node["inputs"][1]]
    axis = 0 if conv or trans else 1  # the output-channel axis
    other = tuple(d for d in range(w.ndim) if d != axis)
    amax = np.max(np.abs(w), axis=other) if per_channel else np.full(w.shape[axis], np.max(np.abs(w)))
    w_scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    wq = np.clip(np.rint(w / w_scale.reshape(shape)), -127, 127).astype(np.int8)
    x_scale, x_zp = ranges[node["inputs"][0]]
    wname = node["inputs"][1] + "@int8"
    tensors[wname] = wq
    inputs = [node["inputs"][0], wname]
    if len(node["inputs"]) > 2:
        b = tensors[node["inputs"][2]].astype(np.float64)
        bq = np.clip(np.rint(b / (np.float64(np.float32(x_scale)) * w_scale)), -2**31 + 1, 2**31 - 1)
        bname = node["inputs"][2] + "@int32"
        tensors[bname] = bq.astype(np.int32)
        inputs.append(bname)
    new_attrs = {k: v for k, v in attrs.items() if k != "transpose_b" or not conv}
    new_attrs.update(x_scale=x_scale, x_zero_point=x_zp)
    if requantize:
        y_scale, y_zp = ranges[node["outputs"][0]]
        new_attrs.update(y_scale=y_scale, y_zero_point=y_zp)
    node["op"] = "QLinearConv2D" if conv else "QLinearDense"
    node["inputs"] = inputs
    node["attrs"] = new_attrs
    node.pop("blocked_weights", None)
    node["_quant"] = {"name": wname, "scale": w_scale.tolist(), "axis": axis}


def _write(path: str, graph: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    quant = dict(graph.get("quantization", {}))
    for n in graph["nodes"]:
        q = n.pop("_quant", None)
        if q is not None:
            quant[q["name"]] = {"scale": q["scale"], "zero_point": [0] * len(q["scale"]), "axis": q["axis"]}
    if quant:
        graph["quantization"] = {k: v for k, v in quant.items() if k in tensors}
    graph["producer"] = "pyengine.quantize"
    _core.write_pyem(path, json.dumps(graph), list(tensors.items()))


def _run_probe(graph: dict[str, Any], tensors: dict[str, np.ndarray], values: Sequence[str],
               data: np.ndarray, batch_size: int) -> dict[str, list[np.ndarray]]:
    """Runs the graph natively with `values` as extra outputs; their arrays per batch."""
    probe = json.loads(json.dumps(graph))
    names = list(dict.fromkeys(values))
    # Graph inputs are taken from `data`, not listed as outputs: an input listed as an output
    # spoils the other outputs of the native executor (seen on main at 2d7a25e).
    inputs = {i["name"] for i in graph["inputs"]}
    listed = [v for v in names if v not in inputs] or [graph["outputs"][0]["name"]]
    probe["outputs"] = [{"name": v} for v in listed]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.pyem")
        _core.write_pyem(path, json.dumps(probe), list(tensors.items()))
        model = loader.load(path, backend="native")
        got: dict[str, list[np.ndarray]] = {v: [] for v in names}
        for start in range(0, len(data), batch_size):
            batch = data[start:start + batch_size]
            out = model.predict(batch)
            if len(listed) == 1:
                out = {listed[0]: out}
            for v in names:
                got[v].append(np.array(batch if v in inputs else out[v], copy=True))
    return got


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-30) / noise)
