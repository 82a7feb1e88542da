"""ONNX convolution, pooling, dense/matmul and resize ops -> native ops."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyengine.convert.onnx._importer import Handler, Importer, attr_str


def _pads2d(attrs: dict[str, Any], spatial: int) -> dict[str, Any]:
    auto = attr_str(attrs.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return {"padding": "SAME" if auto == "SAME_UPPER" else "SAME_LOWER"}
    if auto == "VALID":
        return {"padding": "VALID"}
    p = list(attrs.get("pads", [0] * 2 * spatial))
    if spatial == 1:
        return {"pads": [0, p[0], 0, p[1]]}
    return {"pads": [p[0], p[1], p[2], p[3]]}


def _two(v: list[int] | None, spatial: int, default: int) -> list[int]:
    v = list(v) if v else [default] * spatial
    return [1, v[0]] if spatial == 1 and len(v) == 1 else v


def _to_4d(imp: Importer, x: str, name: str) -> str:
    return imp.g.op("Reshape", [x], name + "/to4d", shape=[0, 0, 1, -1])


def _from_4d(imp: Importer, y: str, name: str) -> str:
    return imp.g.op("Reshape", [y], name + "/to3d", shape=[0, 0, -1])


def _conv(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    """Conv, 1-D and 2-D (1-D as 2-D with a height of 1), constant weights or run-time ones of
    a known rank (those run unblocked, as the engine repacks weights only once)."""
    w = imp.const_of(ins[1])
    if w is not None:
        if w.ndim not in (3, 4):
            return None
        spatial = w.ndim - 2
        wv = imp.g.const(w if spatial == 2 else w[:, :, None, :], name + "/w")
    else:
        w_shape = imp.shapes.get(node.input[1])
        if w_shape is None or len(w_shape) not in (3, 4):
            return None
        spatial = len(w_shape) - 2
        wv = ins[1] if spatial == 2 else _to_4d(imp, ins[1], name + "/w")
    x = ins[0] if spatial == 2 else _to_4d(imp, ins[0], name)
    y = imp.g.op(
        "Conv2D",
        [x, wv] + ([ins[2]] if len(ins) > 2 and ins[2] else []),
        name,
        strides=_two(attrs.get("strides"), spatial, 1),
        dilations=_two(attrs.get("dilations"), spatial, 1),
        groups=int(attrs.get("group", 1)),
        **_pads2d(attrs, spatial),
    )
    return y if spatial == 2 else _from_4d(imp, y, name)


def _pool(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    kernel = list(attrs.get("kernel_shape", []))
    if len(kernel) not in (1, 2) or any(d != 1 for d in attrs.get("dilations", [])):
        return None
    if len(node.output) > 1 and node.output[1] and imp._used(node.output[1]):
        return None
    spatial = len(kernel)
    x = ins[0] if spatial == 2 else _to_4d(imp, ins[0], name)
    is_max = node.op_type == "MaxPool"
    extra: dict[str, Any] = (
        {} if is_max else {"count_include_pad": bool(attrs.get("count_include_pad", 0))}
    )
    y = imp.g.op(
        "MaxPool" if is_max else "AvgPool",
        [x],
        name,
        kernel=_two(kernel, spatial, 1),
        strides=_two(attrs.get("strides"), spatial, 1),
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
        **_pads2d(attrs, spatial),
        **extra,
    )
    return y if spatial == 2 else _from_4d(imp, y, name)


def _lp_pool(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """(kernel size · AveragePool(|x|^p, padding counted))^(1/p), as onnx's reference computes
    LpPool: the sum of |x|^p over the window, padding adding 0. ceil_mode, whose ragged last
    window the average does not count whole, is refused naming the value."""
    p = int(attrs.get("p", 2))
    if p < 1:
        return imp.g.unsupported_op(name, f"LpPool with p {p}")
    if attrs.get("ceil_mode", 0):
        return imp.g.unsupported_op(name, f"LpPool with ceil_mode {attrs['ceil_mode']}")

    def const(v: float, hint: str) -> str:
        return imp.g.const(np.float32(v), f"{name}/{hint}")

    x = ins[0] if p % 2 == 0 else imp.g.op("Math", ins[:1], name + "/abs", fn="abs")
    powered = (imp.g.op("Mul", [x, x], name + "/pow") if p == 2
               else x if p == 1 else imp.g.op("BinaryMath", [x, const(p, "p")], name + "/pow", fn="pow"))
    avg = _pool(imp, node, name + "/avg", [powered], {**attrs, "count_include_pad": 1})
    if avg is None:
        return None
    total = imp.g.op("Mul", [avg, const(float(np.prod(attrs["kernel_shape"])), "count")], name + "/sum")
    if p == 1:
        return imp.g.op("Identity", [total], name)
    if p == 2:
        return imp.g.op("Math", [total], name, fn="sqrt")
    return imp.g.op("BinaryMath", [total, const(1.0 / p, "root")], name, fn="pow")


def _global_pool(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    if imp.rank(node.input[0]) not in (None, 4):
        return None
    return imp.g.op(
        "GlobalMaxPool" if node.op_type == "GlobalMaxPool" else "GlobalAvgPool", ins[:1], name
    )


def _gemm(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    if attrs.get("transA", 0):  # A is [K, M]
        ins = [imp.g.op("Transpose", ins[:1], name + "/a", perm=[1, 0]), *ins[1:]]
    alpha = float(attrs.get("alpha", 1.0))
    b = imp.const_of(ins[1])
    if b is not None:
        w = alpha * (b.T if attrs.get("transB", 0) else b)
        y = imp.g.op(
            "Dense",
            [ins[0], imp.g.const(np.ascontiguousarray(w, dtype=np.float32), name + "/w")],
            name,
        )
    else:  # a computed B: a plain matrix product, then the alpha scale
        if imp.rank(node.input[1]) not in (None, 2):
            return None
        y = imp.g.op("Dense", ins[:2], name, transpose_b=bool(attrs.get("transB", 0)))
        if alpha != 1.0:
            y = imp.g.op(
                "Mul", [y, imp.g.const(np.float32(alpha), name + "/alpha")], name + "/scaled"
            )
    if len(ins) > 2 and ins[2]:
        beta = float(attrs.get("beta", 1.0))
        c = imp.const_of(ins[2])
        bias = (
            imp.g.const(beta * c, name + "/b")
            if c is not None
            else (
                imp.g.op("Mul", [ins[2], imp.g.const(np.float32(beta))], name + "/beta")
                if beta != 1
                else ins[2]
            )
        )
        y = imp.g.op("Add", [y, bias], name + "/bias")
    return y


def _matmul(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    b = imp.const_of(ins[1])
    if (b is not None and b.ndim != 2) or (b is None and imp.rank(node.input[1]) != 2):
        return _batch_matmul(imp, node, name, ins)
    if imp.rank(node.input[0]) == 1:
        return _batch_matmul(imp, node, name, ins)
    return imp.g.op("Dense", ins[:2], name)


def _batch_matmul(imp: Importer, node: Any, name: str, ins: list[str]) -> str | None:
    """MatMul with numpy semantics: batch dimensions broadcast, 1-D operands promoted."""
    ra, rb = imp.rank(node.input[0]), imp.rank(node.input[1])
    if ra is None or rb is None or ra == 0 or rb == 0:
        return None
    a, b = ins[0], ins[1]
    if ra == 1:
        a = imp.g.op("Reshape", [a], name + "/a2d", shape=[1, -1])
    if rb == 1:
        b = imp.g.op("Reshape", [b], name + "/b2d", shape=[-1, 1])
    rank = max(ra, rb, 2)
    squeeze = ([rank - 2] if ra == 1 else []) + ([rank - 1] if rb == 1 else [])
    y = imp.g.op("BatchMatMul", [a, b], name + "/mm" if squeeze else name)
    return imp.g.op("Squeeze", [y], name, axes=squeeze) if squeeze else y


def _conv_transpose(
    imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]
) -> str | None:
    """ConvTranspose, 1-D and 2-D, constant or run-time weights (of a known shape); pads from
    auto_pad SAME_UPPER / SAME_LOWER or output_shape as onnx's reference computes them."""
    w = imp.const_of(ins[1])
    w_shape = list(w.shape) if w is not None else imp.shapes.get(node.input[1])
    if w_shape is None or min(w_shape, default=0) < 0:
        return None
    if len(w_shape) not in (3, 4):
        return imp.g.unsupported_op(name, f"ConvTranspose {len(w_shape) - 2}-D")
    spatial = len(w_shape) - 2
    auto = attr_str(attrs.get("auto_pad", "NOTSET"))
    if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        return imp.g.unsupported_op(name, f"ConvTranspose with auto_pad '{auto}'")
    kernel = list(w_shape[2:])
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    out_pad = list(attrs.get("output_padding", [0] * spatial))
    pads = [0] * 2 * spatial if auto == "VALID" else list(attrs.get("pads", [0] * 2 * spatial))
    if "output_shape" in attrs or auto.startswith("SAME"):  # pads follow from the output size
        shape = imp.shapes.get(node.input[0])
        if shape is None or any(d < 0 for d in shape[2:]):
            return None
        want = (list(attrs["output_shape"])[-spatial:] if "output_shape" in attrs
                else [shape[2 + i] * strides[i] for i in range(spatial)])
        for i in range(spatial):
            total = (strides[i] * (shape[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1
                     - want[i])
            if total < 0:  # larger than the natural size: ONNX pads the end implicitly
                return imp.g.unsupported_op(
                    name, f"ConvTranspose with output_shape {want} beyond its natural size"
                )
            small, large = total // 2, total - total // 2
            pads[i], pads[spatial + i] = (small, large) if auto == "SAME_UPPER" else (large, small)
    if spatial == 1:
        strides, dilations, out_pad = [1, strides[0]], [1, dilations[0]], [0, out_pad[0]]
        pads = [0, pads[0], 0, pads[1]]
    x = ins[0] if spatial == 2 else _to_4d(imp, ins[0], name)
    if w is not None:
        wv = imp.g.const(w if spatial == 2 else w[:, :, None, :], name + "/w")
    else:
        wv = ins[1] if spatial == 2 else imp.g.op("Reshape", ins[1:2], name + "/w", shape=[0, 0, 1, -1])
    y = imp.g.op(
        "ConvTranspose2D", [x, wv] + ([ins[2]] if len(ins) > 2 and ins[2] else []), name,
        strides=strides, dilations=dilations, pads=[pads[0], pads[1], pads[2], pads[3]],
        output_padding=out_pad, groups=int(attrs.get("group", 1)),
    )
    return y if spatial == 2 else _from_4d(imp, y, name)


def _grid_sample(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """GridSample on 4-D and 5-D inputs, nearest and (bi)linear, any padding mode; cubic is
    refused naming the node and the value."""
    mode = attr_str(attrs.get("mode", "linear" if imp.opset >= 20 else "bilinear"))
    padding = attr_str(attrs.get("padding_mode", "zeros"))
    native = {"bilinear": "linear", "linear": "linear", "nearest": "nearest"}.get(mode)
    if native is None:
        return imp.g.unsupported_op(name, f"GridSample with mode '{mode}'")
    if padding not in ("zeros", "border", "reflection"):
        return imp.g.unsupported_op(name, f"GridSample with padding_mode '{padding}'")
    if imp.rank(node.input[0]) not in (4, 5):
        return None
    return imp.g.op("GridSample", ins[:2], name, mode=native, padding_mode=padding,
                    align_corners=bool(attrs.get("align_corners", 0)))


_RESIZE_COORDS = (
    "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"
)


_RESIZE_POLICIES = ("stretch", "not_larger", "not_smaller")


_RESIZE_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _resize(imp: Importer, node: Any, name: str, ins: list[str], attrs: dict[str, Any]) -> str | None:
    """Resize (opset 10+) and Upsample: nearest and linear with scales or sizes (constant or
    run-time). An attribute value the kernel lacks is refused naming the node and the value."""
    mode = attr_str(attrs.get("mode", "nearest"))
    coord = attr_str(attrs.get("coordinate_transformation_mode",
                         "asymmetric" if node.op_type == "Upsample" or imp.opset < 11 else "half_pixel"))
    nearest = attr_str(attrs.get("nearest_mode", "round_prefer_floor"))
    if node.op_type == "Upsample" or imp.opset < 11:
        if mode == "bilinear":  # Upsample opset 7's name
            mode = "linear"
        nearest = "floor" if node.op_type == "Upsample" or imp.opset < 11 else nearest
    policy = attr_str(attrs.get("keep_aspect_ratio_policy", "stretch"))
    refusals = [
        (mode not in ("nearest", "linear"), f"mode '{mode}'"),
        (coord not in _RESIZE_COORDS, f"coordinate_transformation_mode '{coord}'"),
        (mode == "nearest" and nearest not in _RESIZE_NEAREST, f"nearest_mode '{nearest}'"),
        (bool(attrs.get("antialias", 0)), "antialias 1"),
        (policy not in _RESIZE_POLICIES, f"keep_aspect_ratio_policy '{policy}'"),
        (bool(attrs.get("exclude_outside", 0)), "exclude_outside 1"),
    ]
    for bad, what in refusals:
        if bad:
            return imp.g.unsupported_op(name, f"Resize with {what}")
    # The scales or sizes go to the native Resize as its input p, read by value when planning
    # (constant or run-time alike): the output sizes are computed in one place, ops_resize.cpp.
    if node.op_type == "Upsample" or imp.opset < 11:
        param = "scales"
        value = (imp.g.const(np.array(attrs["scales"], np.float32), name + "/scales")
                 if "scales" in attrs else ins[1])
    else:
        def given(i: int) -> bool:  # present, and not an empty constant (ONNX's "absent")
            c = imp.const_of(ins[i]) if len(ins) > i and ins[i] else np.zeros(0)
            return c is None or c.size > 0

        present = [(i, p) for i, p in ((3, "sizes"), (2, "scales")) if given(i)]
        if not present:
            return None
        i, param = present[0]
        value = ins[i]
    return imp.g.op("Resize", [ins[0], value], name, param=param,
                    axes=[int(a) for a in attrs.get("axes", [])], mode=mode,
                    coordinate_transformation_mode=coord, nearest_mode=nearest,
                    keep_aspect_ratio_policy=policy if param == "sizes" else "stretch")


HANDLERS: dict[str, Handler] = {
    "Conv": _conv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "LpPool": _lp_pool,
    "GridSample": _grid_sample,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "ConvTranspose": _conv_transpose,
    "Resize": _resize,
    "Upsample": _resize,
}
