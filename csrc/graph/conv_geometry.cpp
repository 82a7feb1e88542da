// SPDX-License-Identifier: Apache-2.0
#include "graph/conv_geometry.h"

#include <algorithm>

#include "common.h"

namespace pyengine {

PadMode2D get_pad_mode(const Attrs& a) {
    const std::string m = a.get_string("padding", "EXPLICIT", {"EXPLICIT", "SAME", "SAME_LOWER", "VALID"});
    if (m == "SAME") return PadMode2D::SameUpper;
    if (m == "SAME_LOWER") return PadMode2D::SameLower;
    if (m == "VALID") return PadMode2D::Valid;
    return PadMode2D::Explicit;
}

std::pair<int64_t, int64_t> resolve_pad(PadMode2D mode, int64_t in, int64_t k_eff, int64_t stride,
                                        int64_t before, int64_t after) {
    if (mode == PadMode2D::Explicit) return {before, after};
    if (mode == PadMode2D::Valid) return {0, 0};
    const int64_t out = (in + stride - 1) / stride;
    const int64_t total = std::max<int64_t>((out - 1) * stride + k_eff - in, 0);
    const int64_t small = total / 2;
    return mode == PadMode2D::SameUpper ? std::make_pair(small, total - small)
                                        : std::make_pair(total - small, small);
}

ConvAttrs::ConvAttrs(const Attrs& a)
    : layout(a.get_layout()),
      strides(a.get_ints("strides", 2, {1, 1}, 1)),
      dilations(a.get_ints("dilations", 2, {1, 1}, 1)),
      pads(a.get_ints("pads", 4, {0, 0, 0, 0}, 0)),
      mode(get_pad_mode(a)),
      groups(a.get_int("groups", 1)) {
    if (groups < 1) a.fail(str("attribute 'groups' must be >= 1, got ", groups));
}

Conv2DParams ConvAttrs::geometry(const Shape& x, const Shape& w, const char* op) const {
    if (x.size() != 4) shape_error(str(op, " input must be 4-D, got ", shape_str(x)));
    if (w.size() != 4) shape_error(str(op, " weight must be 4-D OIHW, got ", shape_str(w)));
    Conv2DParams p;
    p.layout = layout;
    p.N = x[0];
    p.C = layout == Layout::NHWC ? x[3] : x[1];
    p.H = layout == Layout::NHWC ? x[1] : x[2];
    p.W = layout == Layout::NHWC ? x[2] : x[3];
    p.O = w[0];
    p.KH = w[2];
    p.KW = w[3];
    p.groups = groups;
    if (w[1] * groups != p.C) {
        shape_error(str(op, " weight ", shape_str(w), " with groups=", groups, " expects ",
                        w[1] * groups, " input channels, got ", p.C));
    }
    if (p.O % groups != 0) shape_error(str(op, " output channels ", p.O, " not divisible by groups ", groups));
    p.stride_h = strides[0];
    p.stride_w = strides[1];
    p.dilation_h = dilations[0];
    p.dilation_w = dilations[1];
    const int64_t kh = (p.KH - 1) * p.dilation_h + 1, kw = (p.KW - 1) * p.dilation_w + 1;
    auto ph = resolve_pad(mode, p.H, kh, p.stride_h, pads[0], pads[2]);
    auto pw = resolve_pad(mode, p.W, kw, p.stride_w, pads[1], pads[3]);
    p.pad_top = ph.first;
    p.pad_left = pw.first;
    const int64_t hp = p.H + ph.first + ph.second, wp = p.W + pw.first + pw.second;
    if (hp < kh || wp < kw || p.KH < 1 || p.KW < 1) {
        shape_error(str(op, " kernel ", kh, "x", kw, " (dilated) is larger than the padded input ", hp, "x", wp));
    }
    p.OH = (hp - kh) / p.stride_h + 1;
    p.OW = (wp - kw) / p.stride_w + 1;
    return p;
}

}  // namespace pyengine
