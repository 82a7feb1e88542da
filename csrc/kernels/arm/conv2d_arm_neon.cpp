// SPDX-License-Identifier: Apache-2.0
// 2-D convolution: the shared driver (conv2d_run: 1x1 and im2col through the NEON GEMM
// micro-kernel) with a NEON depthwise kernel: NHWC four channels per vector, NCHW four output
// columns per vector where the taps lie inside the row (stride 1 or 2).
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/dispatch.h"
#include "kernels/arm/neon_math.h"

namespace pyengine {

namespace {

using neon::imax;
using neon::imin;

// y[c] = act(y[c] + bias[c]) for a run of channels (bias may be null).
template <class Act>
void bias_act_channels(float* y, const float* bias, int64_t C, const Act& act) {
    int64_t c = 0;
    for (; c + 4 <= C; c += 4) {
        const float32x4_t b = bias ? vld1q_f32(bias + c) : vdupq_n_f32(0.0f);
        vst1q_f32(y + c, act(vaddq_f32(vld1q_f32(y + c), b)));
    }
    if (c < C) {
        float t[4] = {0.0f, 0.0f, 0.0f, 0.0f}, b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t j = c; j < C; ++j) { t[j - c] = y[j]; b[j - c] = bias ? bias[j] : 0.0f; }
        vst1q_f32(t, act(vaddq_f32(vld1q_f32(t), vld1q_f32(b))));
        for (int64_t j = c; j < C; ++j) y[j] = t[j - c];
    }
}

template <class Act>
void depthwise_nchw(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                    int64_t c0, int64_t c1, const Act& act) {
    const int64_t sw = p.stride_w, dw = p.dilation_w;
    // Columns whose taps all lie inside the row; stride 2 loads one extra column.
    const int64_t reach = (p.KW - 1) * dw + 1 + (sw == 2 ? 1 : 0);
    const int64_t ow_lo = (p.pad_left + sw - 1) / sw;
    const int64_t ow_hi = p.W - reach + p.pad_left >= 0 ? imin((p.W - reach + p.pad_left) / sw + 1, p.OW) : 0;
    const bool vector_cols = sw == 1 || sw == 2;
    for (int64_t c = c0; c < c1; ++c) {
        const float* plane = x + (n * p.C + c) * p.H * p.W;
        const float* wc = w + c * p.KH * p.KW;
        float* yp = y + (n * p.O + c) * p.OH * p.OW;
        const float bias = p.ep.bias ? p.ep.bias[c] : 0.0f;
        for (int64_t oh = 0; oh < p.OH; ++oh) {
            float* yr = yp + oh * p.OW;
            const int64_t ih0 = oh * p.stride_h - p.pad_top;
            auto scalar = [&](int64_t ow) {
                float s = 0.0f;
                for (int64_t kh = 0; kh < p.KH; ++kh) {
                    const int64_t ih = ih0 + kh * p.dilation_h;
                    if (ih < 0 || ih >= p.H) continue;
                    for (int64_t kw = 0; kw < p.KW; ++kw) {
                        const int64_t iw = ow * sw - p.pad_left + kw * dw;
                        if (iw < 0 || iw >= p.W) continue;
                        s += plane[ih * p.W + iw] * wc[kh * p.KW + kw];
                    }
                }
                yr[ow] = s;
            };
            int64_t ow = 0;
            for (; ow < p.OW && !(vector_cols && ow >= ow_lo && ow + 4 <= ow_hi); ++ow) scalar(ow);
            for (; vector_cols && ow >= ow_lo && ow + 4 <= ow_hi; ow += 4) {
                float32x4_t acc = vdupq_n_f32(0.0f);
                for (int64_t kh = 0; kh < p.KH; ++kh) {
                    const int64_t ih = ih0 + kh * p.dilation_h;
                    if (ih < 0 || ih >= p.H) continue;
                    const float* row = plane + ih * p.W + ow * sw - p.pad_left;
                    for (int64_t kw = 0; kw < p.KW; ++kw) {
                        const float32x4_t v = sw == 1 ? vld1q_f32(row + kw * dw) : vld2q_f32(row + kw * dw).val[0];
                        acc = neon::madd(acc, v, vdupq_n_f32(wc[kh * p.KW + kw]));
                    }
                }
                vst1q_f32(yr + ow, acc);
            }
            for (; ow < p.OW; ++ow) scalar(ow);
            neon::apply_row(yr, yr, p.OW, bias, act);
        }
    }
}

template <class Act>
void depthwise_nhwc(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                    int64_t c0, int64_t c1, const Act& act) {
    const int64_t C = c1 - c0, taps = p.KH * p.KW;
    // Weights of channels [c0, c1) as [KH*KW, C] so four channels of one tap are one load.
    neon::Scratch wt(taps * C);
    for (int64_t c = 0; c < C; ++c) {
        for (int64_t t = 0; t < taps; ++t) wt.p[t * C + c] = w[(c0 + c) * taps + t];
    }
    x += c0;  // pixel (h, w) of channel c0 + c lies at ((n * H + h) * W + w) * p.C + c
    for (int64_t oh = 0; oh < p.OH; ++oh) {
        for (int64_t ow = 0; ow < p.OW; ++ow) {
            float* yo = y + ((n * p.OH + oh) * p.OW + ow) * p.C + c0;
            int64_t c = 0;
            for (; c + 4 <= C; c += 4) {
                float32x4_t acc = vdupq_n_f32(0.0f);
                for (int64_t kh = 0; kh < p.KH; ++kh) {
                    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                    if (ih < 0 || ih >= p.H) continue;
                    for (int64_t kw = 0; kw < p.KW; ++kw) {
                        const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
                        if (iw < 0 || iw >= p.W) continue;
                        acc = neon::madd(acc, vld1q_f32(x + ((n * p.H + ih) * p.W + iw) * p.C + c),
                                         vld1q_f32(wt.p + (kh * p.KW + kw) * C + c));
                    }
                }
                vst1q_f32(yo + c, acc);
            }
            for (; c < C; ++c) {
                float s = 0.0f;
                for (int64_t kh = 0; kh < p.KH; ++kh) {
                    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                    if (ih < 0 || ih >= p.H) continue;
                    for (int64_t kw = 0; kw < p.KW; ++kw) {
                        const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
                        if (iw < 0 || iw >= p.W) continue;
                        s += x[((n * p.H + ih) * p.W + iw) * p.C + c] * wt.p[(kh * p.KW + kw) * C + c];
                    }
                }
                yo[c] = s;
            }
            bias_act_channels(yo, p.ep.bias ? p.ep.bias + c0 : nullptr, C, act);
        }
    }
}

}  // namespace

void depthwise2d_arm_neon(const Conv2DParams& p, const float* x, const float* w, float* y,
                          int64_t n, int64_t c0, int64_t c1) {
    neon::with_activation(p.ep, [&](const auto& act) {
        if (p.layout == Layout::NHWC) {
            depthwise_nhwc(p, x, w, y, n, c0, c1, act);
        } else {
            depthwise_nchw(p, x, w, y, n, c0, c1, act);
        }
    });
}

void conv2d_arm_neon(const Conv2DParams& p, const float* x, const float* w, float* y) {
    conv2d_run(*kernel_table_neon(), p, x, w, y);
}

}  // namespace pyengine
