// SPDX-License-Identifier: Apache-2.0
// Direct depthwise convolution, written as plain loops the compiler vectorizes. Included by
// kernels/conv2d.cpp (baseline ISA) and kernels/x86/conv2d_x86_avx2.cpp (-mavx2 -mfma): each
// includer gets its own copy (internal linkage), built for its own instruction set.
// The includer defines `act_row(float* row, int64_t n, const Epilogue&)` before including.
// No std:: containers here: their out-of-line template code would be emitted by the ISA file
// too, and the linker could keep that copy for baseline callers (conv_scratch is baseline).
#pragma once

#include <cstdint>

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
        // Each plane is copied into a zero-bordered scratch plane, so that the taps need no bounds
        // checks. With stride 1 the output is then a 1-D convolution of the flattened padded
        // plane (rows wrap into the border columns, which are dropped when copying out): long
        // vectorizable loops even for 7x7 planes.
        const int64_t ke_h = (p.KH - 1) * p.dilation_h + 1, ke_w = (p.KW - 1) * p.dilation_w + 1;
        const int64_t Hp = (p.OH - 1) * p.stride_h + ke_h, Wp = (p.OW - 1) * p.stride_w + ke_w;
        const int64_t span = (p.OH - 1) * Wp + p.OW;  // flat outputs computed with stride 1
        float* xp = conv_scratch(0, static_cast<size_t>(Hp * Wp));
        float* ap = conv_scratch(1, static_cast<size_t>(p.stride_h == 1 && p.stride_w == 1 ? span : p.OW));
        // Zero once per call; planes only overwrite the interior.
        for (int64_t i = 0; i < Hp * Wp; ++i) xp[i] = 0.0f;
        const int64_t rows = p.H < Hp - p.pad_top ? p.H : Hp - p.pad_top;
        const int64_t cols = p.W < Wp - p.pad_left ? p.W : Wp - p.pad_left;
        for (int64_t c = c0; c < c1; ++c) {
            const float* xc = x + (n * p.C + c) * p.H * p.W;
            float* yp = y + (n * p.C + c) * p.OH * p.OW;
            const float* wp = w + c * KK;
            const float b = p.ep.bias ? p.ep.bias[c] : 0.0f;
            for (int64_t h = 0; h < rows; ++h) {
                const float* src = xc + h * p.W;
                float* dst = xp + (h + p.pad_top) * Wp + p.pad_left;
                for (int64_t ww = 0; ww < cols; ++ww) dst[ww] = src[ww];
            }
            if (p.stride_h == 1 && p.stride_w == 1 && p.KH == 3 && p.KW == 3) {
                // The common 3x3 case in one pass: nine weights in registers, one store.
                const int64_t dh = p.dilation_h * Wp, dw = p.dilation_w;
                const float w0 = wp[0], w1 = wp[1], w2 = wp[2], w3 = wp[3], w4 = wp[4], w5 = wp[5],
                            w6 = wp[6], w7 = wp[7], w8 = wp[8];
                const float* r0 = xp;
                const float* r1 = xp + dh;
                const float* r2 = xp + 2 * dh;
                for (int64_t i = 0; i < span; ++i) {
                    ap[i] = b + w0 * r0[i] + w1 * r0[i + dw] + w2 * r0[i + 2 * dw] + w3 * r1[i] +
                            w4 * r1[i + dw] + w5 * r1[i + 2 * dw] + w6 * r2[i] + w7 * r2[i + dw] +
                            w8 * r2[i + 2 * dw];
                }
                for (int64_t oh = 0; oh < p.OH; ++oh) {
                    const float* src = ap + oh * Wp;
                    float* dst = yp + oh * p.OW;
                    for (int64_t ow = 0; ow < p.OW; ++ow) dst[ow] = src[ow];
                }
            } else if (p.stride_h == 1 && p.stride_w == 1) {
                for (int64_t i = 0; i < span; ++i) ap[i] = b;
                for (int64_t kh = 0; kh < p.KH; ++kh) {
                    for (int64_t kw = 0; kw < p.KW; ++kw) {
                        const float wv = wp[kh * p.KW + kw];
                        const float* xs = xp + kh * p.dilation_h * Wp + kw * p.dilation_w;
                        for (int64_t i = 0; i < span; ++i) ap[i] += wv * xs[i];
                    }
                }
                for (int64_t oh = 0; oh < p.OH; ++oh) {
                    const float* src = ap + oh * Wp;
                    float* dst = yp + oh * p.OW;
                    for (int64_t ow = 0; ow < p.OW; ++ow) dst[ow] = src[ow];
                }
            } else {
                for (int64_t oh = 0; oh < p.OH; ++oh) {
                    if (p.stride_w == 2 && p.KH == 3 && p.KW == 3 && p.dilation_w == 1) {
                        const float* r0 = xp + (oh * p.stride_h) * Wp;
                        const float* r1 = r0 + p.dilation_h * Wp;
                        const float* r2 = r1 + p.dilation_h * Wp;
                        const float* k = wp;
                        float* dst = yp + oh * p.OW;
                        for (int64_t ow = 0; ow < p.OW; ++ow) {
                            const int64_t j = 2 * ow;
                            dst[ow] = b + k[0] * r0[j] + k[1] * r0[j + 1] + k[2] * r0[j + 2] +
                                      k[3] * r1[j] + k[4] * r1[j + 1] + k[5] * r1[j + 2] +
                                      k[6] * r2[j] + k[7] * r2[j + 1] + k[8] * r2[j + 2];
                        }
                        continue;
                    }
                    for (int64_t ow = 0; ow < p.OW; ++ow) ap[ow] = b;
                    for (int64_t kh = 0; kh < p.KH; ++kh) {
                        const float* xr = xp + (oh * p.stride_h + kh * p.dilation_h) * Wp;
                        for (int64_t kw = 0; kw < p.KW; ++kw) {
                            const float wv = wp[kh * p.KW + kw];
                            const float* xs = xr + kw * p.dilation_w;
                            if (p.stride_w == 2) {
                                for (int64_t ow = 0; ow < p.OW; ++ow) ap[ow] += wv * xs[2 * ow];
                            } else {
                                for (int64_t ow = 0; ow < p.OW; ++ow) ap[ow] += wv * xs[ow * p.stride_w];
                            }
                        }
                    }
                    float* dst = yp + oh * p.OW;
                    for (int64_t ow = 0; ow < p.OW; ++ow) dst[ow] = ap[ow];
                }
            }
            act_row(yp, p.OH * p.OW, p.ep);
        }
        return;
    }
    // NHWC: vectorize over channels; weights regrouped as [KH*KW][channels].
    const int64_t nc = c1 - c0;
    float* wt = conv_scratch(2, static_cast<size_t>(KK * nc));
    for (int64_t c = 0; c < nc; ++c) {
        for (int64_t k = 0; k < KK; ++k) wt[k * nc + c] = w[(c0 + c) * KK + k];
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
                    const float* wk = wt + (kh * p.KW + kw) * nc;
                    for (int64_t c = 0; c < nc; ++c) yp[c] += xp[c] * wk[c];
                }
            }
            act_row(yp, nc, p.ep);
        }
    }
}

}  // namespace
}  // namespace pyengine
