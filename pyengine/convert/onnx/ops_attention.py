"""ONNX Attention (opsets 23-25) -> the native Attention op (csrc/graph/ops_attention.cpp).

A native node has one output, so Y and qk_matmul_output are each their own Attention node
(attribute ``output``), and present_key / present_value are the past and the new keys / values
joined by a native Concat (the new ones put in [batch, heads, seq, head_size] first when they are
3-D). What the kernel does not compute (float16 or bfloat16 softmax precision, inputs of other
types) is refused naming the node and the value; so is qk_matmul_output mode 0 with a softcap,
where the spec (the product before the softcap) and the reference implementation (after it)
disagree.
"""

from __future__ import annotations

from typing import Any

from pyengine.convert.onnx._importer import Handler, Importer

# ONNX softmax_precision (a TensorProto element type) -> the native attribute.
_PRECISIONS = {1: "float", 11: "double"}


def _heads_first(imp: Importer, value: str, heads: int, name: str) -> str:
    """A 3-D [batch, seq, heads * size] value as 4-D [batch, heads, seq, size]."""
    split = imp.g.op("Reshape", [value], name + "/split", shape=[0, 0, heads, -1])
    return imp.g.op("Transpose", [split], name, perm=[0, 2, 1, 3])


def _attention(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> list[str] | None:
    ins = ins + [""] * (7 - len(ins))
    q, k, v, mask, past_k, past_v, nonpad = ins[:7]

    def refuse(what: str) -> list[str]:
        return [imp.g.unsupported_op(name, f"Attention with {what}")] * len(node.output)

    for i, value in enumerate(ins):
        if not value:
            continue
        dtype = imp.dtype_of(value)
        takes = ("bool", "float32") if i == 3 else ("int64",) if i == 6 else ("float32",)
        if dtype not in takes:
            return refuse(f"input {i} ('{node.input[i]}') of type {dtype}")
    if bool(past_k) != bool(past_v):
        return refuse("only one of past_key and past_value")
    if past_k and nonpad:
        return refuse("both a past cache and nonpad_kv_seqlen")
    precision = int(attrs.get("softmax_precision", 1))
    if precision not in _PRECISIONS:
        return refuse(f"softmax_precision {precision} (float 1 and double 11 are supported)")
    mode = int(attrs.get("qk_matmul_output_mode", 0))
    softcap = float(attrs.get("softcap", 0.0))
    outputs = list(node.output) + [""] * (4 - len(node.output))
    wants_qk = bool(outputs[3]) and imp._used(outputs[3])
    if wants_qk and mode not in (0, 1, 2, 3):
        return refuse(f"qk_matmul_output_mode {mode}")
    if wants_qk and mode == 0 and softcap > 0:
        return refuse(f"qk_matmul_output_mode 0 and softcap {softcap}")
    rank = imp.rank(node.input[0])
    heads = {"q_num_heads": int(attrs.get("q_num_heads", 0)),
             "kv_num_heads": int(attrs.get("kv_num_heads", 0))}
    if rank == 4 and any(heads.values()):
        return refuse(f"4-D inputs and head counts {heads}")
    if rank not in (3, 4) or imp.rank(node.input[1]) != rank or imp.rank(node.input[2]) != rank:
        return None  # the native op names the ranks it takes; unknown ranks are not converted
    if rank == 3 and not all(h > 0 for h in heads.values()):
        return refuse(f"3-D inputs and head counts {heads}")
    if softcap < 0:
        softcap = 0.0  # ONNX caps only when softcap > 0

    inputs = [q, k, v]
    flags: dict[str, Any] = {}
    for key, present in (("mask", [mask]), ("past", [past_k, past_v]), ("nonpad", [nonpad])):
        if present[0]:
            inputs += present
            flags[key] = True
    base: dict[str, Any] = dict(flags)  # the native defaults are ONNX's: only the others
    if attrs.get("is_causal", 0):
        base["is_causal"] = True
    if softcap > 0:
        base["softcap"] = softcap
    if precision != 1:
        base["softmax_precision"] = _PRECISIONS[precision]
    if rank == 3:
        base.update(heads)
    if "scale" in attrs:
        base["scale"] = float(attrs["scale"])
    for key in ("left_window_size", "right_window_size"):
        if int(attrs.get(key, -1)) != -1:
            base[key] = int(attrs[key])

    outs: list[str] = []
    for i, output in enumerate(outputs):
        if not (output and imp._used(output)):
            outs.append(imp.g.fresh(f"unused:{name}/{i}"))
        elif i == 0:
            outs.append(imp.g.op("Attention", inputs, name, **base))
        elif i == 3:
            outs.append(imp.g.op("Attention", inputs, name + "/qk", output="qk", qk_mode=mode, **base))
        else:  # present_key / present_value: the past then the new ones, heads first
            new = ins[i]
            if rank == 3:
                new = _heads_first(imp, new, heads["kv_num_heads"], f"{name}/present{i}_new")
            past = ins[3 + i]
            outs.append(imp.g.op("Concat", [past, new], f"{name}/present{i}", axis=2) if past
                        else imp.g.op("Identity", [new], f"{name}/present{i}"))
    return outs


HANDLERS: dict[str, Handler] = {"Attention": _attention}
