// SPDX-License-Identifier: Apache-2.0
#include "kernels/conv2d.h"

#include <cstring>
#include <vector>

#include "runtime/dispatch.h"
#include "runtime/thread_pool.h"

namespace pyengine {

namespace {

void act_row(float* row, int64_t n, const Epilogue& e) {
    if (e.act == Activation::None) return;
    for (int64_t i = 0; i < n; ++i) row[i] = activate(row[i], e);
}

}  // namespace
}  // namespace pyengine

#include "kernels/conv2d_body.h"

namespace pyengine {

namespace {

thread_local std::vector<float> tls_col, tls_row;

// NCHW im2col straight into the GEMM's packed-B layout (panels of nr output pixels, each K rows
// of nr floats): rows (ci, kh, kw) of cg input channels starting at channel c_first. Each row is
// gathered contiguously into `row`, then cut into the panels.
void im2col_nchw_packed(const Conv2DParams& p, const float* x, int64_t n, int64_t c_first, int64_t cg,
                        int nr, float* row, float* dst) {
    const int64_t OHW = p.OH * p.OW;
    const int64_t K = cg * p.KH * p.KW;
    const int64_t panels = (OHW + nr - 1) / nr;
    for (int64_t j = OHW; j < panels * nr; ++j) row[j] = 0.0f;  // the last panel's padding
    for (int64_t ci = 0; ci < cg; ++ci) {
        const float* xc = x + (n * p.C + c_first + ci) * p.H * p.W;
        for (int64_t kh = 0; kh < p.KH; ++kh) {
            for (int64_t kw = 0; kw < p.KW; ++kw) {
                const int64_t k = (ci * p.KH + kh) * p.KW + kw;
                const int64_t off = kw * p.dilation_w - p.pad_left;
                int64_t lo = 0, hi = 0;
                valid_range(p.OW, p.W, p.stride_w, off, &lo, &hi);
                for (int64_t oh = 0; oh < p.OH; ++oh) {
                    float* d = row + oh * p.OW;
                    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                    if (ih < 0 || ih >= p.H) {
                        for (int64_t ow = 0; ow < p.OW; ++ow) d[ow] = 0.0f;
                        continue;
                    }
                    const float* xr = xc + ih * p.W;
                    for (int64_t ow = 0; ow < lo; ++ow) d[ow] = 0.0f;
                    if (p.stride_w == 1) {
                        for (int64_t ow = lo; ow < hi; ++ow) d[ow] = xr[ow + off];
                    } else {
                        for (int64_t ow = lo; ow < hi; ++ow) d[ow] = xr[ow * p.stride_w + off];
                    }
                    for (int64_t ow = hi; ow < p.OW; ++ow) d[ow] = 0.0f;
                }
                for (int64_t q = 0; q < panels; ++q) {
                    std::memcpy(dst + (q * K + k) * nr, row + q * nr, static_cast<size_t>(nr) * sizeof(float));
                }
            }
        }
    }
}

// NHWC: one row per output pixel (oh, ow), columns (ci, kh, kw) to match OIHW weights.
void im2col_nhwc(const Conv2DParams& p, const float* x, int64_t n, int64_t c_first, int64_t cg, float* col) {
    const int64_t K = cg * p.KH * p.KW;
    for (int64_t oh = 0; oh < p.OH; ++oh) {
        for (int64_t ow = 0; ow < p.OW; ++ow) {
            float* d = col + (oh * p.OW + ow) * K;
            for (int64_t kh = 0; kh < p.KH; ++kh) {
                const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                for (int64_t kw = 0; kw < p.KW; ++kw) {
                    const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
                    const bool inside = ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
                    const float* xp = x + ((n * p.H + ih) * p.W + iw) * p.C + c_first;
                    for (int64_t ci = 0; ci < cg; ++ci) {
                        d[(ci * p.KH + kh) * p.KW + kw] = inside ? xp[ci] : 0.0f;
                    }
                }
            }
        }
    }
}

}  // namespace

void conv2d_run(const KernelTable& k, const Conv2DParams& p, const float* x, const float* w, float* y) {
    if (p.N == 0 || p.O == 0 || p.OH == 0 || p.OW == 0) return;
    const int64_t OHW = p.OH * p.OW;
    if (p.groups > 1 && p.groups == p.C && p.O == p.C) {  // depthwise: direct
        const int64_t per_task = p.C >= 64 ? 16 : p.C;
        const int64_t c_tasks = (p.C + per_task - 1) / per_task;
        const bool parallel = p.N * p.C * OHW * p.KH * p.KW >= (int64_t(1) << 18);
        auto task = [&](int64_t t) {
            const int64_t n = t / c_tasks, c0 = (t % c_tasks) * per_task;
            k.depthwise2d(p, x, w, y, n, c0, c0 + per_task < p.C ? c0 + per_task : p.C);
        };
        if (parallel) {
            parallel_for(p.N * c_tasks, task);
        } else {
            for (int64_t t = 0; t < p.N * c_tasks; ++t) task(t);
        }
        return;
    }
    const int64_t cg = p.C / p.groups, og = p.O / p.groups;
    const int64_t KC = cg * p.KH * p.KW;
    const bool pointwise = p.KH == 1 && p.KW == 1 && p.stride_h == 1 && p.stride_w == 1 &&
                           p.pad_top == 0 && p.pad_left == 0 && p.OH == p.H && p.OW == p.W;
    if (p.layout == Layout::NHWC && pointwise && p.groups == 1) {
        // [N*H*W, C] x [O, C]^T: the whole batch is one GEMM.
        k.gemm(p.N * OHW, p.O, p.C, x, p.C, w, p.C, true, y, p.O, p.ep);
        return;
    }
    for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t g = 0; g < p.groups; ++g) {
            Epilogue ep = p.ep;
            if (ep.bias) ep.bias += g * og;
            const float* wg = w + g * og * KC;
            if (p.layout == Layout::NCHW) {
                ep.bias_per_row = true;
                float* yg = y + (n * p.O + g * og) * OHW;
                if (pointwise) {  // [O, C] x [C, H*W]: the input is the B matrix as it lies
                    k.gemm(og, OHW, cg, wg, cg, x + (n * p.C + g * cg) * OHW, OHW, false, yg, OHW, ep);
                    continue;
                }
                const int nr = k.gemm_uk->nr;
                tls_row.resize(static_cast<size_t>((OHW + nr - 1) / nr * nr));
                tls_col.resize(gemm_packed_b_size(nr, KC, OHW));
                im2col_nchw_packed(p, x, n, g * cg, cg, nr, tls_row.data(), tls_col.data());
                gemm_driver(*k.gemm_uk, og, OHW, KC, wg, KC, nullptr, 0, false, yg, OHW, ep, tls_col.data());
            } else {
                tls_col.resize(static_cast<size_t>(KC * OHW));
                im2col_nhwc(p, x, n, g * cg, cg, tls_col.data());
                k.gemm(OHW, og, KC, tls_col.data(), KC, wg, KC, true, y + n * OHW * p.O + g * og, p.O, ep);
            }
        }
    }
}

void depthwise2d_generic(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                         int64_t c0, int64_t c1) {
    depthwise_body(p, x, w, y, n, c0, c1);
}

void conv2d_generic(const Conv2DParams& p, const float* x, const float* w, float* y) {
    conv2d_run(*kernel_table_generic(), p, x, w, y);
}

void conv2d_reference(const Conv2DParams& p, const float* x, const float* w, float* y) {
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
