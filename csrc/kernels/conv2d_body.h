// SPDX-License-Identifier: Apache-2.0
// Direct depthwise convolution, written as plain loops the compiler vectorizes. Included by
// kernels/conv2d.cpp (baseline ISA) and kernels/x86/conv2d_x86_avx2.cpp (-mavx2 -mfma): each
// includer gets its own copy (internal linkage), built for its own instruction set.
// The includer defines `act_row(float* row, int64_t n, const Epilogue&)` before including.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/conv2d.h"

namespace pyengine {
namespace {

// [lo, hi): output columns ow whose input column ow * stride + offset lies inside [0, W).
inline void valid_range(int64_t OW, int64_t W, int64_t stride, int64_t offset, int64_t* lo, int64_t* hi) {
    int64_t l = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    int64_t h = W - 1 - offset < 0 ? 0 : (W - 1 - offset) / stride + 1;
    if (h > OW) h = OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

// Depthwise (groups == C == O) convolution of image n, channels [c0, c1).
void depthwise_body(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                    int64_t c0, int64_t c1) {
    const int64_t KK = p.KH * p.KW;
    if (p.layout == Layout::NCHW) {
        for (int64_t c = c0; c < c1; ++c) {
            const float* xp = x + (n * p.C + c) * p.H * p.W;
            float* yp = y + (n * p.C + c) * p.OH * p.OW;
            const float* wp = w + c * KK;
            const float b = p.ep.bias ? p.ep.bias[c] : 0.0f;
            for (int64_t oh = 0; oh < p.OH; ++oh) {
                float* row = yp + oh * p.OW;
                for (int64_t ow = 0; ow < p.OW; ++ow) row[ow] = b;
                for (int64_t kh = 0; kh < p.KH; ++kh) {
                    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                    if (ih < 0 || ih >= p.H) continue;
                    const float* xr = xp + ih * p.W;
                    for (int64_t kw = 0; kw < p.KW; ++kw) {
                        const float wv = wp[kh * p.KW + kw];
                        const int64_t off = kw * p.dilation_w - p.pad_left;
                        int64_t lo = 0, hi = 0;
                        valid_range(p.OW, p.W, p.stride_w, off, &lo, &hi);
                        if (p.stride_w == 1) {
                            const float* xs = xr + off;
                            for (int64_t ow = lo; ow < hi; ++ow) row[ow] += wv * xs[ow];
                        } else if (p.stride_w == 2) {
                            const float* xs = xr + off;
                            for (int64_t ow = lo; ow < hi; ++ow) row[ow] += wv * xs[2 * ow];
                        } else {
                            for (int64_t ow = lo; ow < hi; ++ow) row[ow] += wv * xr[ow * p.stride_w + off];
                        }
                    }
                }
                act_row(row, p.OW, p.ep);
            }
        }
        return;
    }
    // NHWC: vectorize over channels; weights regrouped as [KH*KW][channels].
    const int64_t nc = c1 - c0;
    thread_local std::vector<float> wt;
    wt.resize(static_cast<size_t>(KK * nc));
    for (int64_t c = 0; c < nc; ++c) {
        for (int64_t k = 0; k < KK; ++k) wt[static_cast<size_t>(k * nc + c)] = w[(c0 + c) * KK + k];
    }
    for (int64_t oh = 0; oh < p.OH; ++oh) {
        for (int64_t ow = 0; ow < p.OW; ++ow) {
            float* yp = y + ((n * p.OH + oh) * p.OW + ow) * p.C + c0;
            if (p.ep.bias) {
                for (int64_t c = 0; c < nc; ++c) yp[c] = p.ep.bias[c0 + c];
            } else {
                for (int64_t c = 0; c < nc; ++c) yp[c] = 0.0f;
            }
            for (int64_t kh = 0; kh < p.KH; ++kh) {
                const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                if (ih < 0 || ih >= p.H) continue;
                for (int64_t kw = 0; kw < p.KW; ++kw) {
                    const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
                    if (iw < 0 || iw >= p.W) continue;
                    const float* xp = x + ((n * p.H + ih) * p.W + iw) * p.C + c0;
                    const float* wk = wt.data() + (kh * p.KW + kw) * nc;
                    for (int64_t c = 0; c < nc; ++c) yp[c] += xp[c] * wk[c];
                }
            }
            act_row(yp, nc, p.ep);
        }
    }
}

}  // namespace
}  // namespace pyengine
