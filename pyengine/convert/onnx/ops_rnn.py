"""ONNX RNN, GRU and LSTM -> the native RNN / GRU / LSTM ops (csrc/graph/ops_rnn.cpp).

A native node has one output, so each ONNX output the graph reads (Y, Y_h, Y_c) becomes its own
native node (attribute ``output``). What the kernel does not compute (other activations, clip,
input_forget, sequence lengths shorter than the sequence) is refused naming the node and value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: ONNX's default activations per direction.
_DEFAULTS = {"RNN": ["tanh"], "GRU": ["sigmoid", "tanh"], "LSTM": ["sigmoid", "tanh", "tanh"]}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def rnn(imp: Any, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> list[str] | str | None:
    """Convert one RNN, GRU or LSTM node (opset 7-22 forms)."""
    op = node.op_type
    lstm = op == "LSTM"
    ins = ins + [""] * (8 - len(ins))
    direction = _text(attrs.get("direction", "forward"))
    dirs = 2 if direction == "bidirectional" else 1
    acts = [_text(a).lower() for a in attrs.get("activations", [])]
    refusals = [
        (direction not in ("forward", "reverse", "bidirectional"), f"direction '{direction}'"),
        (bool(acts) and acts != _DEFAULTS[op] * dirs, f"activations {acts}"),
        ("clip" in attrs, f"clip {attrs.get('clip')}"),
        (bool(attrs.get("input_forget", 0)), f"input_forget {attrs.get('input_forget')}"),
        (int(attrs.get("layout", 0)) not in (0, 1), f"layout {attrs.get('layout')}"),
    ]
    for bad, what in refusals:
        if bad:
            return [imp.g.unsupported_op(name, f"{op} with {what}")] * len(node.output)
    w, r = imp.const_of(ins[1]), imp.const_of(ins[2])
    if r is None and imp.rank(node.input[2]) is None:
        return None
    hidden = int(attrs["hidden_size"]) if "hidden_size" in attrs else (
        int(r.shape[2]) if r is not None else -1)
    if hidden < 1:
        return None
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    layout = int(attrs.get("layout", 0))
    shape = imp.shapes.get(node.input[0])
    if ins[4]:  # sequence_lens: only "every sequence is whole" has a native form
        lens = imp.const_of(ins[4])
        steps = None if shape is None or len(shape) != 3 else shape[1 if layout else 0]
        if lens is None or steps is None or steps < 0 or np.any(np.ravel(lens) != steps):
            return [imp.g.unsupported_op(name, f"{op} with sequence_lens shorter than the sequence")
                    ] * len(node.output)
    bias = ins[3] or imp.g.const(np.zeros((dirs, 2 * gates * hidden), np.float32), name + "/b")
    inputs = [ins[0], ins[1] if w is None else imp.g.const(w.astype(np.float32), name + "/w"),
              ins[2] if r is None else imp.g.const(r.astype(np.float32), name + "/r"), bias]
    flags: dict[str, Any] = {}
    optional = [("initial_h", ins[5])] + ([("initial_c", ins[6]), ("peepholes", ins[7])] if lstm else [])
    for key, value in optional:
        if value:
            inputs.append(value)
            flags[key] = True
    base = dict(hidden_size=hidden, direction=direction, layout=layout, **flags)
    if op == "GRU":
        base["linear_before_reset"] = bool(attrs.get("linear_before_reset", 0))
    outs: list[str] = []
    for i, kind in enumerate(["y", "h", "c"][: len(node.output)]):
        value = node.output[i]
        if value and imp._used(value):
            outs.append(imp.g.op(op, inputs, f"{name}/{kind}" if i else name, output=kind, **base))
        else:
            outs.append(imp.g.fresh(f"unused:{name}/{kind}"))
    return outs


HANDLERS = {"RNN": rnn, "GRU": rnn, "LSTM": rnn}
