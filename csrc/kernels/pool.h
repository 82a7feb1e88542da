// SPDX-License-Identifier: Apache-2.0
// Max and average pooling over H and W, NCHW or NHWC (global pooling is a full-size window).
#pragma once

#include <cstdint>

#include "kernels/conv2d.h"

namespace pyengine {

struct Pool2DParams {
    Layout layout = Layout::NCHW;
    bool is_max = true;
    bool count_include_pad = false;  // average: divide by the window including explicit padding
    int64_t N = 0, C = 0, H = 0, W = 0;
    int64_t KH = 1, KW = 1;
    int64_t stride_h = 1, stride_w = 1;
    int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
    int64_t OH = 0, OW = 0;
};

// Dispatches on the ISA in use.
void pool2d(const Pool2DParams& p, const float* x, float* y);
// The portable reference.
void pool2d_generic(const Pool2DParams& p, const float* x, float* y);

}  // namespace pyengine
