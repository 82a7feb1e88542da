// SPDX-License-Identifier: Apache-2.0
// Convolution and pooling attributes and output geometry, shared by Conv2D, the pools and the
// quantized convolution.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "graph/op.h"
#include "kernels/conv2d.h"

namespace pyengine {

enum class PadMode2D { Explicit, SameUpper, SameLower, Valid };

// The "padding" attribute.
PadMode2D get_pad_mode(const Attrs& a);
// Resolves SAME/VALID padding for one spatial dimension; returns {before, after}.
std::pair<int64_t, int64_t> resolve_pad(PadMode2D mode, int64_t in, int64_t k_eff, int64_t stride,
                                        int64_t before, int64_t after);

// Conv2D's attributes (layout, strides, dilations, pads, padding, groups) and its geometry.
struct ConvAttrs {
    explicit ConvAttrs(const Attrs& a);
    // Input x and OIHW weight shapes to the resolved parameters (epilogue unset); throws
    // InvalidArgument naming `op` when they do not fit.
    Conv2DParams geometry(const Shape& x, const Shape& w, const char* op) const;

    Layout layout;
    std::vector<int64_t> strides, dilations, pads;
    PadMode2D mode;
    int64_t groups;
};

}  // namespace pyengine
