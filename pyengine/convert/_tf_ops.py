"""TensorFlow ops of issue 25's model families (segmentation decoders, detector necks): image
resizes and the transposed convolution (Conv2DBackpropInput). Registered by tensorflow.py.

Every spatial op keeps TensorFlow's layout: NHWC resizes work on axes 1 and 2; the transposed
convolution, which the engine runs in NCHW, is wrapped in two Transposes for NHWC data.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from pyengine.convert._tf_attrs import _attr, _layout, _spatial


def resize(imp: Any, n: Any) -> str | None:
    """ResizeBilinear / ResizeNearestNeighbor (NHWC) with a constant size, as the native Resize
    with TensorFlow's coordinate rules: half_pixel_centers, align_corners or neither."""
    size = imp.const(n, 1)
    shape = imp.static_shape(n.input[0])
    if size is None or shape is None or len(shape) != 4 or any(d < 0 for d in shape[1:3]):
        return None
    align = bool(_attr(n, "align_corners", False))
    half = bool(_attr(n, "half_pixel_centers", False))
    if align and half:
        return imp.g.unsupported_op(n.name, f"{n.op} with align_corners and half_pixel_centers")
    oh, ow = (int(v) for v in np.ravel(size))
    if n.op == "ResizeBilinear":
        mode, nearest = "linear", "floor"
        coord = "align_corners" if align else ("half_pixel" if half else "asymmetric")
    else:
        # TensorFlow's nearest: floor((x + 0.5) · in / out) with half-pixel centres, which is
        # round-half-up of the half_pixel coordinate; round(x · (in - 1) / (out - 1)) aligned.
        mode = "nearest"
        coord = "align_corners" if align else ("half_pixel" if half else "asymmetric")
        nearest = "round_prefer_ceil" if (align or half) else "floor"
    h, w = shape[1], shape[2]
    return imp.g.op("Resize", [imp.ref(n.input[0])], n.name, sizes=[0, oh, ow, 0],
                    scales=[1.0, oh / h, ow / w, 1.0], mode=mode,
                    coordinate_transformation_mode=coord, nearest_mode=nearest)


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
    kernel = list(w.shape[:2])
    pad = _attr(n, "padding", "VALID")
    pads, out_pad = [0, 0, 0, 0], [0, 0]
    for i in range(2):
        natural = (in_hw[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        if pad == "EXPLICIT":
            e = _attr(n, "explicit_paddings")
            lo, hi = (e[4 + 2 * i], e[5 + 2 * i]) if nchw else (e[2 + 2 * i], e[3 + 2 * i])
        else:
            total = natural - out_hw[i]
            lo = max(total, 0) // 2 if pad == "SAME" else 0
            hi = total - lo
        if hi < 0:  # the requested size is past the natural one: the extra rows are output padding
            out_pad[i], hi = -hi, 0
        pads[i], pads[2 + i] = lo, hi
        if natural - lo - hi + out_pad[i] != out_hw[i] or out_pad[i] >= max(strides[i], dilations[i]):
            return imp.g.unsupported_op(
                n.name, f"Conv2DBackpropInput to size {out_hw} from {in_hw} with padding {pad}")
    x = imp.ref(n.input[2])
    if not nchw:
        x = imp.g.op("Transpose", [x], n.name + "/nchw", perm=[0, 3, 1, 2])
    wt = np.ascontiguousarray(w.transpose(3, 2, 0, 1))  # [in, out, kh, kw]: ONNX's layout
    y = imp.g.op("ConvTranspose2D", [x, imp.g.const(wt, n.name + "/w")],
                 n.name if nchw else n.name + "/convt", strides=strides, dilations=dilations,
                 pads=pads, output_padding=out_pad, groups=1)
    return y if nchw else imp.g.op("Transpose", [y], n.name, perm=[0, 2, 3, 1])


HANDLERS: dict[str, Callable[[Any, Any], str | None]] = {
    "ResizeBilinear": resize,
    "ResizeNearestNeighbor": resize,
    "Conv2DBackpropInput": conv2d_backprop_input,
}
