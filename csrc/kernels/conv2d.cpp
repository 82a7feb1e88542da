// SPDX-License-Identifier: Apache-2.0
#include "kernels/conv2d.h"

#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"

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

thread_local std::vector<float> tls_col;

// NCHW convolution as one GEMM over flattened, zero-bordered input planes, split by stride
// phase: phase (a, b) of a channel holds padded-input pixels (sh * i + a, sw * j + b) as an
// Hs x Ws plane. Tap (kh, kw) of output pixel (oh, ow) is then pixel
// (oh + th / sh, ow + tw / sw) of phase (th % sh, tw % sw), th = kh * dh, tw = kw * dw: at flat
// offset (th / sh) * Ws + tw / sw from flat position oh * Ws + ow. So every packed B row is a
// plain run of a phase plane (no per-element bounds checks, unlike im2col). The GEMM computes
// (OH - 1) * Ws + OW flat outputs; the Ws - OW wrap-around columns of each row are dropped when
// the result is copied out.
void conv_nchw_flat(const KernelTable& k, const Conv2DParams& p, const float* x, int64_t n, int64_t g,
                    const float* wg, const float* packed_w, const Epilogue& ep, float* yg) {
    const int64_t cg = p.C / p.groups, og = p.O / p.groups;
    const int64_t K = cg * p.KH * p.KW;
    const int64_t sh = p.stride_h, sw = p.stride_w;
    const int64_t Hs = p.OH + (p.KH - 1) * p.dilation_h / sh;
    const int64_t Ws = p.OW + (p.KW - 1) * p.dilation_w / sw;
    const int64_t plane = Hs * Ws;
    const int64_t span = (p.OH - 1) * Ws + p.OW;
    const int nr = k.gemm_uk->nr;
    const int64_t panels = (span + nr - 1) / nr;
    thread_local std::vector<float> phases, packed, out;
    // Slack at the end: the last panel may read up to nr floats past the span.
    phases.resize(static_cast<size_t>(cg * sh * sw * plane + nr + Ws));
    float* const ph = phases.data();
    for (int64_t ci = 0; ci < cg; ++ci) {
        const float* xc = x + (n * p.C + g * cg + ci) * p.H * p.W;
        for (int64_t a = 0; a < sh; ++a) {
            for (int64_t b = 0; b < sw; ++b) {
                float* dst = ph + ((ci * sh + a) * sw + b) * plane;
                // Columns j whose input column sw * j + b - pad_left lies inside [0, W).
                const int64_t off = b - p.pad_left;
                int64_t lo = 0, hi = 0;
                valid_range(Ws, p.W, sw, off, &lo, &hi);
                for (int64_t i = 0; i < Hs; ++i) {
                    float* d = dst + i * Ws;
                    const int64_t ih = sh * i + a - p.pad_top;
                    if (ih < 0 || ih >= p.H) {
                        for (int64_t j = 0; j < Ws; ++j) d[j] = 0.0f;
                        continue;
                    }
                    const float* xr = xc + ih * p.W + off;
                    for (int64_t j = 0; j < lo; ++j) d[j] = 0.0f;
                    if (sw == 1) {
                        for (int64_t j = lo; j < hi; ++j) d[j] = xr[j];
                    } else {
                        for (int64_t j = lo; j < hi; ++j) d[j] = xr[sw * j];
                    }
                    for (int64_t j = hi; j < Ws; ++j) d[j] = 0.0f;
                }
            }
        }
    }
    for (int64_t i = cg * sh * sw * plane; i < static_cast<int64_t>(phases.size()); ++i) ph[i] = 0.0f;
    packed.resize(static_cast<size_t>(panels * K * nr));
    // Runs of nr floats; a constant size lets the compiler inline the copies.
    auto copy_runs = [&](auto run_floats) {
        const int kRun = decltype(run_floats)::value == 0 ? nr : decltype(run_floats)::value;
        for (int64_t ci = 0; ci < cg; ++ci) {
            for (int64_t kh = 0; kh < p.KH; ++kh) {
                const int64_t th = kh * p.dilation_h;
                for (int64_t kw = 0; kw < p.KW; ++kw) {
                    const int64_t tw = kw * p.dilation_w;
                    const int64_t kk = (ci * p.KH + kh) * p.KW + kw;
                    const float* src = ph + ((ci * sh + th % sh) * sw + tw % sw) * plane + (th / sh) * Ws + tw / sw;
                    float* dst = packed.data() + kk * kRun;
                    for (int64_t q = 0; q < panels; ++q) {
                        std::memcpy(dst + q * K * kRun, src + q * kRun, sizeof(float) * kRun);
                    }
                }
            }
        }
    };
    switch (nr) {
        case 8: copy_runs(std::integral_constant<int, 8>{}); break;
        case 16: copy_runs(std::integral_constant<int, 16>{}); break;
        case 32: copy_runs(std::integral_constant<int, 32>{}); break;
        default: copy_runs(std::integral_constant<int, 0>{}); break;  // any other width
    }
    out.resize(static_cast<size_t>(og * span));
    gemm_driver(*k.gemm_uk, og, span, K, wg, K, nullptr, 0, false, out.data(), span, ep, packed.data(),
                packed_w);
    for (int64_t o = 0; o < og; ++o) {
        for (int64_t oh = 0; oh < p.OH; ++oh) {
            std::memcpy(yg + (o * p.OH + oh) * p.OW, out.data() + o * span + oh * Ws,
                        static_cast<size_t>(p.OW) * sizeof(float));
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
    // One image per task when there are several (each GEMM then runs on its task's thread);
    // a single image parallelizes inside its GEMMs instead.
    const bool use_packed = p.packed_w != nullptr && p.packed_w_uk == k.gemm_uk && p.layout == Layout::NCHW;
    const size_t packed_group = use_packed ? gemm_packed_a_size(k.gemm_uk->mr, og, KC) : 0;
    auto image = [&](int64_t n) {
        for (int64_t g = 0; g < p.groups; ++g) {
            Epilogue ep = p.ep;
            if (ep.bias) ep.bias += g * og;
            const float* wg = w + g * og * KC;
            if (p.layout == Layout::NCHW) {
                ep.bias_per_row = true;
                float* yg = y + (n * p.O + g * og) * OHW;
                const float* pw = use_packed ? p.packed_w + static_cast<size_t>(g) * packed_group : nullptr;
                if (pointwise) {  // [O, C] x [C, H*W]: the input is the B matrix as it lies
                    const float* xg = x + (n * p.C + g * cg) * OHW;
                    if (pw) gemm_driver(*k.gemm_uk, og, OHW, cg, wg, cg, xg, OHW, false, yg, OHW, ep, nullptr, pw);
                    else k.gemm(og, OHW, cg, wg, cg, xg, OHW, false, yg, OHW, ep);
                    continue;
                }
                conv_nchw_flat(k, p, x, n, g, wg, pw, ep, yg);
            } else {
                tls_col.resize(static_cast<size_t>(KC * OHW));
                im2col_nhwc(p, x, n, g * cg, cg, tls_col.data());
                k.gemm(OHW, og, KC, tls_col.data(), KC, wg, KC, true, y + n * OHW * p.O + g * og, p.O, ep);
            }
        }
    };
    if (p.N > 1 && num_threads() > 1 && p.O * KC * OHW >= (int64_t(1) << 16)) {
        parallel_for(p.N, image);
    } else {
        for (int64_t n = 0; n < p.N; ++n) image(n);
    }
}

std::vector<float> conv2d_pack_weights(const Conv2DParams& p, const GemmMicroKernel& uk, const float* w) {
    if (p.layout != Layout::NCHW || (p.groups > 1 && p.groups == p.C && p.O == p.C)) return {};
    const int64_t og = p.O / p.groups, KC = p.C / p.groups * p.KH * p.KW;
    const size_t group = gemm_packed_a_size(uk.mr, og, KC);
    std::vector<float> out(group * static_cast<size_t>(p.groups));
    for (int64_t g = 0; g < p.groups; ++g) {
        gemm_pack_a(uk.mr, og, KC, w + g * og * KC, KC, out.data() + static_cast<size_t>(g) * group);
    }
    return out;
}

float* conv_scratch(int slot, size_t floats) {
    thread_local std::vector<float> buffers[4];
    std::vector<float>& b = buffers[slot & 3];
    if (b.size() < floats) b.resize(floats);
    return b.data();
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
