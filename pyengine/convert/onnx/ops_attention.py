"""ONNX Attention (opsets 23-25) -> the native Attention op (csrc/graph/ops_attention.cpp), and
RotaryEmbedding -> native Gather, Slice, Mul, Add/Sub and Concat.

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


def _rotary(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """RotaryEmbedding (opset 23), as onnx's reference: the first ``rotary_embedding_dim`` of each
    head (all by default) rotated by the cos / sin of each position (the caches indexed by
    position_ids, or given per batch and position), in halves or interleaved pairs; the rest kept."""
    for i, value in enumerate(ins):
        if value and imp.dtype_of(value) != ("int64" if i == 3 else "float32"):
            return imp.g.unsupported_op(name, f"RotaryEmbedding of input {i} of type {imp.dtype_of(value)}")
    shape = imp.shapes.get(node.input[0])
    if shape is None or len(shape) not in (3, 4) or min(shape[1:]) < 1:
        return None
    heads = int(attrs.get("num_heads", 0))
    if len(shape) == 3 and (heads < 1 or shape[2] % heads):
        return imp.g.unsupported_op(name, f"RotaryEmbedding with num_heads {heads} for hidden size {shape[2]}")
    size = shape[3] if len(shape) == 4 else shape[2] // heads
    dim = int(attrs.get("rotary_embedding_dim", 0)) or size
    if dim % 2 or dim > size:
        return imp.g.unsupported_op(name, f"RotaryEmbedding with rotary_embedding_dim {dim} for head size {size}")
    half, g = dim // 2, imp.g

    def op(kind: str, inputs: list[str], hint: str, **kw: Any) -> str:
        return g.op(kind, inputs, f"{name}/{hint}", **kw)

    # x as [batch, heads, seq, size] (4-D) or [batch, seq, heads, size] (3-D, split): cos and sin
    # [batch, seq, half] gain a 1 on the heads axis (and on a trailing pair axis, interleaved).
    x = ins[0] if len(shape) == 4 else op("Reshape", ins[:1], "split", shape=[0, 0, heads, size])
    interleaved = bool(attrs.get("interleaved", 0))
    trig = []
    for k, cache in ((1, ins[1]), (2, ins[2])):
        per_pos = op("Gather", [cache, ins[3]], f"gather{k}", axis=0) if len(ins) > 3 and ins[3] else cache
        head_axis = [0, 1, -1, half] if len(shape) == 4 else [0, 0, 1, half]
        trig.append(op("Reshape", [per_pos], f"trig{k}", shape=head_axis + ([1] if interleaved else [])))
    cos, sin = trig
    rot = x if dim == size else op("Slice", [x], "rot", axis=-1, start=0, end=dim)
    if interleaved:  # pairs (x[2i], x[2i+1]) on a trailing axis of 2
        rot = op("Reshape", [rot], "pairs", shape=[0, 0, 0, half, 2])
        x1, x2 = (op("Slice", [rot], f"x{k + 1}", axis=-1, start=k, end=k + 1) for k in (0, 1))
    else:
        x1, x2 = (op("Slice", [rot], f"x{k + 1}", axis=-1, start=k * half, end=(k + 1) * half) for k in (0, 1))
    real = op("Sub", [op("Mul", [cos, x1], "cos_x1"), op("Mul", [sin, x2], "sin_x2")], "real")
    imag = op("Add", [op("Mul", [sin, x1], "sin_x1"), op("Mul", [cos, x2], "cos_x2")], "imag")
    rotated = op("Concat", [real, imag], "rotated", axis=-1)
    if interleaved:
        rotated = op("Reshape", [rotated], "merged", shape=[0, 0, 0, dim])
    if dim < size:
        rotated = op("Concat", [rotated, op("Slice", [x], "pass", axis=-1, start=dim, end=size)], "joined", axis=-1)
    if len(shape) == 3:
        return g.op("Reshape", [rotated], name, shape=[0, 0, shape[2]])
    return g.op("Identity", [rotated], name)


HANDLERS: dict[str, Handler] = {"Attention": _attention, "RotaryEmbedding": _rotary}
