// SPDX-License-Identifier: Apache-2.0
// Max / average pooling as loops the compiler vectorizes (over output columns in NCHW, over
// channels in NHWC). Included by kernels/pool.cpp (baseline) and kernels/x86/pool_x86_avx2.cpp;
// each includer gets its own copy (internal linkage) built for its instruction set.
#pragma once

#include <cstdint>
#include <limits>

#include "kernels/pool.h"

namespace pyengine {
namespace {

// Sum or max of n contiguous floats with 8 independent partial results (vectorizable).
inline float reduce_plane(const float* x, int64_t n, bool is_max) {
    float acc[8];
    const float init = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int j = 0; j < 8; ++j) acc[j] = init;
    int64_t i = 0;
    if (is_max) {
        for (; i + 8 <= n; i += 8) {
            for (int j = 0; j < 8; ++j) acc[j] = acc[j] > x[i + j] ? acc[j] : x[i + j];
        }
        for (; i < n; ++i) acc[0] = acc[0] > x[i] ? acc[0] : x[i];
        float m = acc[0];
        for (int j = 1; j < 8; ++j) m = m > acc[j] ? m : acc[j];
        return m;
    }
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += x[i + j];
    }
    for (; i < n; ++i) acc[0] += x[i];
    float s = 0.0f;
    for (int j = 0; j < 8; ++j) s += acc[j];
    return s;
}

// Global pooling of one NHWC image (an NCHWc block is one with C = the block): 4 independent
// partial results per 16 channels, so the adds pipeline instead of waiting on one running row
// in memory.
template <bool IS_MAX>
void global_pool_nhwc(const float* x, float* y, int64_t HW, int64_t C) {
    constexpr int L = 16;
    const float init = IS_MAX ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int64_t c0 = 0; c0 < C; c0 += L) {
        const int64_t nc = C - c0 < L ? C - c0 : L;
        float a[4][L];
        for (int j = 0; j < 4; ++j) {
            for (int c = 0; c < L; ++c) a[j][c] = init;
        }
        int64_t i = 0;
        if (nc == L) {
            for (; i + 4 <= HW; i += 4) {
#pragma GCC unroll 4
                for (int j = 0; j < 4; ++j) {
                    const float* xp = x + (i + j) * C + c0;
                    for (int c = 0; c < L; ++c) a[j][c] = IS_MAX ? (a[j][c] > xp[c] ? a[j][c] : xp[c]) : a[j][c] + xp[c];
                }
            }
        }
        for (; i < HW; ++i) {
            const float* xp = x + i * C + c0;
            for (int64_t c = 0; c < nc; ++c) a[0][c] = IS_MAX ? (a[0][c] > xp[c] ? a[0][c] : xp[c]) : a[0][c] + xp[c];
        }
        for (int64_t c = 0; c < nc; ++c) {
            float r = a[0][c];
            for (int j = 1; j < 4; ++j) r = IS_MAX ? (r > a[j][c] ? r : a[j][c]) : r + a[j][c];
            y[c0 + c] = HW == 0 ? 0.0f : IS_MAX ? r : r / static_cast<float>(HW);
        }
    }
}

// Divides an average window's sum, or zeroes a max window that lies wholly in the padding.
inline float pool_finish(const Pool2DParams& p, float acc, int64_t h0, int64_t h1, int64_t hs,
                         int64_t he, int64_t ow) {
    const int64_t w0 = ow * p.stride_w - p.pad_left;
    const int64_t w1 = w0 + p.KW < p.W + p.pad_right ? w0 + p.KW : p.W + p.pad_right;
    const int64_t ws = w0 > 0 ? w0 : 0, we = w1 < p.W ? w1 : p.W;
    if (p.is_max) return he <= hs || we <= ws ? 0.0f : acc;
    const int64_t count = p.count_include_pad ? (h1 - h0) * (w1 - w0) : (he - hs) * (we - ws);
    return count > 0 ? acc / static_cast<float>(count) : 0.0f;
}

void pool_body(const Pool2DParams& p, const float* x, float* y) {
    const float init = p.is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
    const bool global = p.OH == 1 && p.OW == 1 && p.KH == p.H && p.KW == p.W && p.pad_top == 0 &&
                        p.pad_left == 0 && !p.count_include_pad;
    if (p.layout == Layout::NCHW) {
        for (int64_t nc = 0; nc < p.N * p.C; ++nc) {
            const float* plane = x + nc * p.H * p.W;
            float* yp = y + nc * p.OH * p.OW;
            if (global) {
                const float r = reduce_plane(plane, p.H * p.W, p.is_max);
                yp[0] = p.is_max ? (p.H * p.W > 0 ? r : 0.0f) : (p.H * p.W > 0 ? r / static_cast<float>(p.H * p.W) : 0.0f);
                continue;
            }
            if (p.is_max && p.KH == 2 && p.KW == 2 && p.stride_h == 2 && p.stride_w == 2 &&
                p.pad_top == 0 && p.pad_left == 0 && 2 * p.OH <= p.H && 2 * p.OW <= p.W) {
                // 2x2/2 max pooling: the max of two rows (contiguous), then of neighbour pairs.
                float pair[1024];
                for (int64_t oh = 0; oh < p.OH && 2 * p.OW <= 1024; ++oh) {
                    const float* r0 = plane + 2 * oh * p.W;
                    const float* r1 = r0 + p.W;
                    for (int64_t j = 0; j < 2 * p.OW; ++j) pair[j] = r0[j] > r1[j] ? r0[j] : r1[j];
                    float* row = yp + oh * p.OW;
                    for (int64_t ow = 0; ow < p.OW; ++ow) {
                        row[ow] = pair[2 * ow] > pair[2 * ow + 1] ? pair[2 * ow] : pair[2 * ow + 1];
                    }
                }
                if (2 * p.OW <= 1024) continue;
            }
            for (int64_t oh = 0; oh < p.OH; ++oh) {
                const int64_t h0 = oh * p.stride_h - p.pad_top;
                const int64_t h1 = h0 + p.KH < p.H + p.pad_bottom ? h0 + p.KH : p.H + p.pad_bottom;
                const int64_t hs = h0 > 0 ? h0 : 0, he = h1 < p.H ? h1 : p.H;
                float* row = yp + oh * p.OW;
                for (int64_t ow = 0; ow < p.OW; ++ow) row[ow] = init;
                for (int64_t h = hs; h < he; ++h) {
                    const float* xr = plane + h * p.W;
                    for (int64_t kw = 0; kw < p.KW; ++kw) {
                        const int64_t off = kw - p.pad_left;
                        int64_t lo = off >= 0 ? 0 : (-off + p.stride_w - 1) / p.stride_w;
                        int64_t hi = p.W - 1 - off < 0 ? 0 : (p.W - 1 - off) / p.stride_w + 1;
                        if (hi > p.OW) hi = p.OW;
                        if (lo > hi) lo = hi;
                        const float* xs = xr + off;
                        if (p.is_max) {
                            if (p.stride_w == 1) {
                                for (int64_t ow = lo; ow < hi; ++ow) row[ow] = row[ow] > xs[ow] ? row[ow] : xs[ow];
                            } else if (p.stride_w == 2) {
                                for (int64_t ow = lo; ow < hi; ++ow) row[ow] = row[ow] > xs[2 * ow] ? row[ow] : xs[2 * ow];
                            } else {
                                for (int64_t ow = lo; ow < hi; ++ow) {
                                    const float v = xs[ow * p.stride_w];
                                    row[ow] = row[ow] > v ? row[ow] : v;
                                }
                            }
                        } else {
                            if (p.stride_w == 1) {
                                for (int64_t ow = lo; ow < hi; ++ow) row[ow] += xs[ow];
                            } else {
                                for (int64_t ow = lo; ow < hi; ++ow) row[ow] += xs[ow * p.stride_w];
                            }
                        }
                    }
                }
                for (int64_t ow = 0; ow < p.OW; ++ow) row[ow] = pool_finish(p, row[ow], h0, h1, hs, he, ow);
            }
        }
        return;
    }
    if (global) {
        for (int64_t n = 0; n < p.N; ++n) {
            const float* xn = x + n * p.H * p.W * p.C;
            if (p.is_max) {
                global_pool_nhwc<true>(xn, y + n * p.C, p.H * p.W, p.C);
            } else {
                global_pool_nhwc<false>(xn, y + n * p.C, p.H * p.W, p.C);
            }
        }
        return;
    }
    for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t oh = 0; oh < p.OH; ++oh) {
            const int64_t h0 = oh * p.stride_h - p.pad_top;
            const int64_t h1 = h0 + p.KH < p.H + p.pad_bottom ? h0 + p.KH : p.H + p.pad_bottom;
            const int64_t hs = h0 > 0 ? h0 : 0, he = h1 < p.H ? h1 : p.H;
            for (int64_t ow = 0; ow < p.OW; ++ow) {
                const int64_t w0 = ow * p.stride_w - p.pad_left;
                const int64_t w1 = w0 + p.KW < p.W + p.pad_right ? w0 + p.KW : p.W + p.pad_right;
                const int64_t ws = w0 > 0 ? w0 : 0, we = w1 < p.W ? w1 : p.W;
                float* yp = y + ((n * p.OH + oh) * p.OW + ow) * p.C;
                for (int64_t c = 0; c < p.C; ++c) yp[c] = init;
                for (int64_t h = hs; h < he; ++h) {
                    for (int64_t w = ws; w < we; ++w) {
                        const float* xp = x + ((n * p.H + h) * p.W + w) * p.C;
                        if (p.is_max) {
                            for (int64_t c = 0; c < p.C; ++c) yp[c] = yp[c] > xp[c] ? yp[c] : xp[c];
                        } else {
                            for (int64_t c = 0; c < p.C; ++c) yp[c] += xp[c];
                        }
                    }
                }
                const float scale_or_zero = pool_finish(p, 1.0f, h0, h1, hs, he, ow);
                if (p.is_max) {
                    if (scale_or_zero == 0.0f) for (int64_t c = 0; c < p.C; ++c) yp[c] = 0.0f;
                } else {
                    for (int64_t c = 0; c < p.C; ++c) yp[c] *= scale_or_zero;
                }
            }
        }
    }
}

}  // namespace
}  // namespace pyengine
