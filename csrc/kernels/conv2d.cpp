// SPDX-License-Identifier: Apache-2.0
#include "kernels/conv2d.h"

#include "runtime/dispatch.h"

namespace pyengine {

void conv2d_generic(const Conv2DParams& p, const float* x, const float* w, float* y) {
    const int64_t cg = p.C / p.groups;  // input channels per group
    const int64_t og = p.O / p.groups;  // output channels per group
    const bool nhwc = p.layout == Layout::NHWC;
    // Element (n, c, h, w) of the input and (n, o, oh, ow) of the output in either layout.
    auto xi = [&](int64_t n, int64_t c, int64_t h, int64_t ww) {
        return nhwc ? ((n * p.H + h) * p.W + ww) * p.C + c : ((n * p.C + c) * p.H + h) * p.W + ww;
    };
    auto yi = [&](int64_t n, int64_t o, int64_t h, int64_t ww) {
        return nhwc ? ((n * p.OH + h) * p.OW + ww) * p.O + o : ((n * p.O + o) * p.OH + h) * p.OW + ww;
    };
    for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t o = 0; o < p.O; ++o) {
            const int64_t g = o / og;
            const float* wo = w + o * cg * p.KH * p.KW;
            const float bias = p.ep.bias ? p.ep.bias[o] : 0.0f;
            for (int64_t oh = 0; oh < p.OH; ++oh) {
                for (int64_t ow = 0; ow < p.OW; ++ow) {
                    float s = 0.0f;
                    for (int64_t ci = 0; ci < cg; ++ci) {
                        const int64_t c = g * cg + ci;
                        for (int64_t kh = 0; kh < p.KH; ++kh) {
                            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                            if (ih < 0 || ih >= p.H) continue;
                            for (int64_t kw = 0; kw < p.KW; ++kw) {
                                const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
                                if (iw < 0 || iw >= p.W) continue;
                                s += x[xi(n, c, ih, iw)] * wo[(ci * p.KH + kh) * p.KW + kw];
                            }
                        }
                    }
                    y[yi(n, o, oh, ow)] = activate(s + bias, p.ep);
                }
            }
        }
    }
}

void conv2d(const Conv2DParams& p, const float* x, const float* w, float* y) {
    kernels().conv2d(p, x, w, y);
}

}  // namespace pyengine
