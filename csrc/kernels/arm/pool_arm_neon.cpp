// SPDX-License-Identifier: Apache-2.0
// Max and average pooling. NHWC runs four channels per vector; NCHW runs four output columns
// per vector where the windows lie inside the row (stride 1 or 2), and whole planes for global
// pooling. Borders take the scalar path, with the reference kernel's arithmetic.
#include <limits>

#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/arm/neon_math.h"

namespace pyengine {

namespace {

using neon::imax;
using neon::imin;

// The clipped window of one output position along one axis, and its averaging count.
struct Span {
    int64_t lo, hi;   // real cells [lo, hi)
    int64_t padded;   // cells counting explicit padding
};

Span span(int64_t o, int64_t stride, int64_t pad_before, int64_t k, int64_t n, int64_t pad_after) {
    const int64_t s = o * stride - pad_before;
    const int64_t e = imin(s + k, n + pad_after);
    return {imax(s, 0), imin(e, n), e - s};
}

float finish(const Pool2DParams& p, float acc, const Span& h, const Span& w) {
    if (p.is_max) return (h.hi <= h.lo || w.hi <= w.lo) ? 0.0f : acc;  // all padding: 0
    const int64_t count = p.count_include_pad ? h.padded * w.padded : (h.hi - h.lo) * (w.hi - w.lo);
    return count > 0 ? acc / static_cast<float>(count) : 0.0f;
}

float32x4_t finish4(const Pool2DParams& p, float32x4_t acc, const Span& h, const Span& w) {
    if (p.is_max) return (h.hi <= h.lo || w.hi <= w.lo) ? vdupq_n_f32(0.0f) : acc;
    const int64_t count = p.count_include_pad ? h.padded * w.padded : (h.hi - h.lo) * (w.hi - w.lo);
    if (count <= 0) return vdupq_n_f32(0.0f);
    return neon::divide(acc, vdupq_n_f32(static_cast<float>(count)));
}

const float kLowest = -std::numeric_limits<float>::infinity();

void pool_nhwc(const Pool2DParams& p, const float* x, float* y) {
    const int64_t C = p.C;
    for (int64_t n = 0; n < p.N; ++n) {
        const float* xn = x + n * p.H * p.W * C;
        for (int64_t oh = 0; oh < p.OH; ++oh) {
            const Span h = span(oh, p.stride_h, p.pad_top, p.KH, p.H, p.pad_bottom);
            for (int64_t ow = 0; ow < p.OW; ++ow) {
                const Span w = span(ow, p.stride_w, p.pad_left, p.KW, p.W, p.pad_right);
                float* yo = y + ((n * p.OH + oh) * p.OW + ow) * C;
                int64_t c = 0;
                for (; c + 4 <= C; c += 4) {
                    float32x4_t acc = vdupq_n_f32(p.is_max ? kLowest : 0.0f);
                    for (int64_t ih = h.lo; ih < h.hi; ++ih) {
                        for (int64_t iw = w.lo; iw < w.hi; ++iw) {
                            const float32x4_t v = vld1q_f32(xn + (ih * p.W + iw) * C + c);
                            acc = p.is_max ? vmaxq_f32(acc, v) : vaddq_f32(acc, v);
                        }
                    }
                    vst1q_f32(yo + c, finish4(p, acc, h, w));
                }
                for (; c < C; ++c) {
                    float acc = p.is_max ? kLowest : 0.0f;
                    for (int64_t ih = h.lo; ih < h.hi; ++ih) {
                        for (int64_t iw = w.lo; iw < w.hi; ++iw) {
                            const float v = xn[(ih * p.W + iw) * C + c];
                            acc = p.is_max ? (acc < v ? v : acc) : acc + v;
                        }
                    }
                    yo[c] = finish(p, acc, h, w);
                }
            }
        }
    }
}

// One output of an NCHW plane, scalar.
float pool_one(const Pool2DParams& p, const float* plane, const Span& h, const Span& w) {
    float acc = p.is_max ? kLowest : 0.0f;
    for (int64_t ih = h.lo; ih < h.hi; ++ih) {
        for (int64_t iw = w.lo; iw < w.hi; ++iw) {
            const float v = plane[ih * p.W + iw];
            acc = p.is_max ? (acc < v ? v : acc) : acc + v;
        }
    }
    return finish(p, acc, h, w);
}

// A whole plane reduced to one value (global pooling).
float pool_plane(const Pool2DParams& p, const float* plane) {
    const int64_t n = p.H * p.W;
    float32x4_t acc = vdupq_n_f32(p.is_max ? kLowest : 0.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(plane + i);
        acc = p.is_max ? vmaxq_f32(acc, v) : vaddq_f32(acc, v);
    }
    float r = p.is_max ? neon::hmax(acc) : neon::hsum(acc);
    for (; i < n; ++i) r = p.is_max ? (r < plane[i] ? plane[i] : r) : r + plane[i];
    const Span h{0, p.H, p.H}, w{0, p.W, p.W};
    return finish(p, r, h, w);
}

void pool_nchw(const Pool2DParams& p, const float* x, float* y) {
    const bool global = p.OH == 1 && p.OW == 1 && p.KH == p.H && p.KW == p.W && p.pad_top == 0 &&
                        p.pad_left == 0 && p.pad_bottom == 0 && p.pad_right == 0;
    const int64_t sw = p.stride_w;
    // Output columns whose window lies inside the row: ow*sw - pad_left >= 0 and
    // ow*sw - pad_left + KW <= W (stride 2 loads one extra column, so one less there).
    const int64_t reach = p.KW + (sw == 2 ? 1 : 0);
    const int64_t ow_lo = (p.pad_left + sw - 1) / sw;
    const int64_t ow_hi = p.W - reach + p.pad_left >= 0 ? imin((p.W - reach + p.pad_left) / sw + 1, p.OW) : 0;
    const bool vector_cols = sw == 1 || sw == 2;
    for (int64_t nc = 0; nc < p.N * p.C; ++nc) {
        const float* plane = x + nc * p.H * p.W;
        float* yp = y + nc * p.OH * p.OW;
        if (global) {
            yp[0] = pool_plane(p, plane);
            continue;
        }
        for (int64_t oh = 0; oh < p.OH; ++oh) {
            const Span h = span(oh, p.stride_h, p.pad_top, p.KH, p.H, p.pad_bottom);
            float* yr = yp + oh * p.OW;
            int64_t ow = 0;
            for (; ow < p.OW; ++ow) {
                if (vector_cols && ow >= ow_lo && ow + 4 <= ow_hi) break;
                yr[ow] = pool_one(p, plane, h, span(ow, sw, p.pad_left, p.KW, p.W, p.pad_right));
            }
            for (; vector_cols && ow >= ow_lo && ow + 4 <= ow_hi; ow += 4) {
                const Span w = span(ow, sw, p.pad_left, p.KW, p.W, p.pad_right);  // same for all 4
                float32x4_t acc = vdupq_n_f32(p.is_max ? kLowest : 0.0f);
                for (int64_t ih = h.lo; ih < h.hi; ++ih) {
                    const float* row = plane + ih * p.W + ow * sw - p.pad_left;
                    for (int64_t kw = 0; kw < p.KW; ++kw) {
                        const float32x4_t v = sw == 1 ? vld1q_f32(row + kw) : vld2q_f32(row + kw).val[0];
                        acc = p.is_max ? vmaxq_f32(acc, v) : vaddq_f32(acc, v);
                    }
                }
                vst1q_f32(yr + ow, finish4(p, acc, h, w));
            }
            for (; ow < p.OW; ++ow) {
                yr[ow] = pool_one(p, plane, h, span(ow, sw, p.pad_left, p.KW, p.W, p.pad_right));
            }
        }
    }
}

}  // namespace

void pool2d_arm_neon(const Pool2DParams& p, const float* x, float* y) {
    if (p.layout == Layout::NHWC) {
        pool_nhwc(p, x, y);
    } else {
        pool_nchw(p, x, y);
    }
}

}  // namespace pyengine
