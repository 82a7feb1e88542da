"""TensorFlow ops of issue 25's model families (segmentation decoders, detector necks): image
resizes and the transposed convolution (Conv2DBackpropInput). Registered by tensorflow.py.

Every spatial op keeps TensorFlow's layout: NHWC resizes work on axes 1 and 2; the transposed
convolution, which the engine runs in NCHW, is wrapped in two Transposes for NHWC data.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from pyengine.convert._tf_attrs import _attr, _layout, _spatial


def resize_attrs(bilinear: bool, align: bool, half: bool, in_hw: Sequence[int],
                 out_hw: Sequence[int]) -> dict[str, Any] | str:
    """The native Resize attributes (NHWC: axes 1 and 2) of TensorFlow's (and TFLite's)
    ResizeBilinear / ResizeNearestNeighbor with their coordinate rules (half_pixel_centers,
    align_corners or neither); or why there are none."""
    if align and half:
        return "align_corners and half_pixel_centers"
    coord = "align_corners" if align else ("half_pixel" if half else "asymmetric")
    if bilinear:
        mode, nearest = "linear", "floor"
    else:
        # TensorFlow's nearest: floor((x + 0.5) · in / out) with half-pixel centres, which is
        # round-half-up of the half_pixel coordinate; round(x · (in - 1) / (out - 1)) aligned.
        mode, nearest = "nearest", "round_prefer_ceil" if (align or half) else "floor"
    (h, w), (oh, ow) = in_hw, out_hw
    return {"sizes": [0, oh, ow, 0], "scales": [1.0, oh / h, ow / w, 1.0], "mode": mode,
            "coordinate_transformation_mode": coord, "nearest_mode": nearest}


def resize(imp: Any, n: Any) -> str | None:
    """ResizeBilinear / ResizeNearestNeighbor (NHWC) with a constant size (which may come from
    another tensor's shape, as decoders write ``tf.image.resize(x, tf.shape(skip)[1:3])``)."""
    size = imp.const(n, 1)
    shape = imp.static_shape(n.input[0])
    if size is None or shape is None or len(shape) != 4 or any(d < 0 for d in shape[1:3]):
        return None
    out_hw = [int(v) for v in np.ravel(size)]
    if len(out_hw) != 2 or any(d <= 0 for d in out_hw):
        return None
    attrs = resize_attrs(n.op == "ResizeBilinear", bool(_attr(n, "align_corners", False)),
                         bool(_attr(n, "half_pixel_centers", False)), shape[1:3], out_hw)
    if isinstance(attrs, str):
        return imp.g.unsupported_op(n.name, f"{n.op} with {attrs}")
    return imp.g.op("Resize", [imp.ref(n.input[0])], n.name, **attrs)


def transpose_conv_pads(in_hw: Sequence[int], out_hw: Sequence[int], kernel: Sequence[int],
                        strides: Sequence[int], dilations: Sequence[int], padding: str,
                        explicit: Sequence[int] | None = None) -> tuple[list[int], list[int]] | None:
    """(pads [top, left, bottom, right], output_padding) of a transposed convolution from
    ``in_hw`` to the requested ``out_hw`` with TensorFlow's SAME, VALID or EXPLICIT padding
    (``explicit``: [top, bottom, left, right]); None when no native geometry gives that size."""
    pads, out_pad = [0, 0, 0, 0], [0, 0]
    for i in range(2):
        natural = (in_hw[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        if padding == "EXPLICIT" and explicit is not None:
            lo, hi = explicit[2 * i], explicit[2 * i + 1]
        else:
            total = natural - out_hw[i]
            lo = max(total, 0) // 2 if padding == "SAME" else 0
            hi = total - lo
        if hi < 0:  # the requested size is past the natural one: the extra rows are output padding
            out_pad[i], hi = -hi, 0
        pads[i], pads[2 + i] = lo, hi
        if natural - lo - hi + out_pad[i] != out_hw[i] or out_pad[i] >= max(strides[i], dilations[i]):
            return None
    return pads, out_pad


def conv_transpose_nhwc(g: Any, x: str, wt: np.ndarray, bias: str | None, name: str,
                        **attrs: Any) -> str:
    """ConvTranspose2D (which runs NCHW, weights [in, out, kh, kw]) on NHWC ``x``, between two
    Transposes."""
    xt = g.op("Transpose", [x], name + "/nchw", perm=[0, 3, 1, 2])
    ins = [xt, g.const(np.ascontiguousarray(wt), name + "/w")] + ([bias] if bias else [])
    y = g.op("ConvTranspose2D", ins, name + "/convt", **attrs)
    return g.op("Transpose", [y], name, perm=[0, 2, 3, 1])


def conv2d_backprop_input(imp: Any, n: Any) -> str | None:
    """Conv2DBackpropInput (what Conv2DTranspose freezes to): input_sizes (constant; its batch
    may be the run-time one, only its spatial sizes are read), filter [kh, kw, out_channels,
    in_channels], data; SAME, VALID and EXPLICIT padding."""
    sizes, w = imp.const(n, 0), imp.const(n, 1)
    shape = imp.static_shape(n.input[2])
    if sizes is None or w is None or shape is None or len(shape) != 4 or imp.ref(n.input[2]) in imp.symbolic:
        return None
    nchw = _layout(n) == "NCHW"
    out_hw = [int(v) for v in (np.ravel(sizes)[2:4] if nchw else np.ravel(sizes)[1:3])]
    in_hw = shape[2:4] if nchw else shape[1:3]
    if any(d < 0 for d in in_hw):
        return None
    strides = _spatial(n, "strides", [1, 1])
    dilations = _spatial(n, "dilations", [1, 1])
    pad = _attr(n, "padding", "VALID")
    e = _attr(n, "explicit_paddings") or [0] * 8
    geometry = transpose_conv_pads(in_hw, out_hw, list(w.shape[:2]), strides, dilations, pad,
                                   e[4:8] if nchw else e[2:6])
    if geometry is None:
        return imp.g.unsupported_op(
            n.name, f"Conv2DBackpropInput to size {out_hw} from {in_hw} with padding {pad}")
    pads, out_pad = geometry
    wt = w.transpose(3, 2, 0, 1)  # [in, out, kh, kw]: ONNX's layout
    attrs = {"strides": strides, "dilations": dilations, "pads": pads, "output_padding": out_pad,
             "groups": 1}
    x = imp.ref(n.input[2])
    if not nchw:
        return conv_transpose_nhwc(imp.g, x, wt, None, n.name, **attrs)
    return imp.g.op("ConvTranspose2D", [x, imp.g.const(np.ascontiguousarray(wt), n.name + "/w")],
                    n.name, **attrs)


HANDLERS: dict[str, Callable[[Any, Any], str | None]] = {
    "ResizeBilinear": resize,
    "ResizeNearestNeighbor": resize,
    "Conv2DBackpropInput": conv2d_backprop_input,
}
