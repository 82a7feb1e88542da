// SPDX-License-Identifier: Apache-2.0
// The blocked-layout driver (task split over the pool), weight packing, reorders and pooling,
// and the generic kernels for blocks 4, 8 and 16.
#include "kernels/conv_nchwc.h"

#include <algorithm>
#include <cstring>

#include "kernels/dispatch.h"
#include "kernels/nchwc_tasks.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

void act_row(float* row, int64_t n, const Epilogue& e) {
    if (e.act == Activation::None) return;
    for (int64_t i = 0; i < n; ++i) row[i] = activate(row[i], e);
}

}  // namespace
}  // namespace pyengine

#include "kernels/conv_nchwc_body.h"

namespace pyengine {

namespace {
constexpr int64_t kInlineMacs = kNchwcInlineMacs;
constexpr int64_t kTaskMacs = kNchwcTaskMacs;
constexpr int64_t kInlineFloats = kNchwcInlineFloats;
}  // namespace

bool nchwc_conv_setup(NchwcConv* c) {
    const Conv2DParams& p = c->p;
    const int64_t cb = c->cb;
    if (p.layout != Layout::NCHW || p.groups < 1 || cb < 1) return false;
    c->depthwise = p.groups > 1 && p.groups == p.C && p.O == p.C;
    if (c->depthwise) {
        if (c->in_block != c->cb) return false;
        c->ob_per_group = 1;
        c->icb_per_group = 1;
        return true;
    }
    const int64_t cg = p.C / p.groups, og = p.O / p.groups;
    if (p.groups > 1 && (cg % cb != 0 || og % cb != 0 || c->in_block != c->cb)) return false;
    c->ob_per_group = (og + cb - 1) / cb;
    c->icb_per_group = c->in_block == 1 ? cg : (cg + cb - 1) / cb;
    return true;
}

bool nchwc_conv_for_weights(const Shape& oihw, int64_t groups, int cb, NchwcConv* c) {
    if (oihw.size() != 4 || groups < 1 || oihw[0] % groups != 0) return false;
    for (int64_t d : oihw) if (d <= 0) return false;
    c->p.layout = Layout::NCHW;
    c->p.O = oihw[0];
    c->p.C = oihw[1] * groups;
    c->p.KH = oihw[2];
    c->p.KW = oihw[3];
    c->p.groups = groups;
    c->cb = cb;
    const bool depthwise = groups > 1 && groups == c->p.C && c->p.O == c->p.C;
    // A few input channels (an image) are read straight from plain NCHW, as MLAS does.
    c->in_block = !depthwise && groups == 1 && c->p.C < cb ? 1 : cb;
    return nchwc_conv_setup(c);
}

Shape nchwc_packed_weight_shape(const NchwcConv& c) {
    const int64_t OB = (c.p.O + c.cb - 1) / c.cb;
    if (c.depthwise) return {OB, c.p.KH, c.p.KW, c.cb};
    return {OB, c.icb_per_group, c.p.KH, c.p.KW, c.in_block, c.cb};
}

std::vector<float> nchwc_pack_conv_weights(const NchwcConv& c, const float* w) {
    const Conv2DParams& p = c.p;
    const int64_t cb = c.cb, ib = c.in_block, KK = p.KH * p.KW;
    const int64_t OB = (p.O + cb - 1) / cb;
    if (c.depthwise) {
        std::vector<float> out(static_cast<size_t>(OB * KK * cb), 0.0f);
        for (int64_t o = 0; o < p.O; ++o) {
            for (int64_t k = 0; k < KK; ++k) out[static_cast<size_t>(((o / cb) * KK + k) * cb + o % cb)] = w[o * KK + k];
        }
        return out;
    }
    const int64_t cg = p.C / p.groups;
    const int64_t icbg = c.icb_per_group;
    std::vector<float> out(static_cast<size_t>(OB * icbg * KK * ib * cb), 0.0f);
    for (int64_t o = 0; o < p.O; ++o) {
        const int64_t ob = o / cb, lane = o % cb;
        for (int64_t ci = 0; ci < cg; ++ci) {  // channel within the group
            const int64_t icb = ci / ib, il = ci % ib;
            for (int64_t k = 0; k < KK; ++k) {
                out[static_cast<size_t>((((ob * icbg + icb) * KK + k) * ib + il) * cb + lane)] = w[(o * cg + ci) * KK + k];
            }
        }
    }
    return out;
}

NchwcConvKernel conv_nchwc_generic(int cb) {
    switch (cb) {
        case 4: return nchwc_conv_body<4, 2, 4>;
        case 8: return nchwc_conv_body<8, 2, 4>;
        case 16: return nchwc_conv_body<16, 1, 4>;
        default: return nullptr;
    }
}

namespace {

// The input of a direct convolution with its padding written out as zeros (rows and columns
// the taps reach), so that the kernel needs no bounds checks and every tile is a full one.
// Returns x itself when no tap leaves the input.
const float* pad_input(NchwcConv* c, const float* x) {
    Conv2DParams& p = c->p;
    const int64_t Hp = (p.OH - 1) * p.stride_h + (p.KH - 1) * p.dilation_h + 1;
    const int64_t Wp = (p.OW - 1) * p.stride_w + (p.KW - 1) * p.dilation_w + 1;
    if (p.pad_top == 0 && p.pad_left == 0 && Hp <= p.H && Wp <= p.W) return x;
    const int64_t ib = c->in_block;
    const int64_t blocks = p.N * (ib == 1 ? p.C : (p.C + ib - 1) / ib);
    // Grow-only: resizing down and up again would zero the regrown part on every call.
    thread_local std::vector<float> padded;
    const size_t need = static_cast<size_t>(blocks * Hp * Wp * ib);
    if (padded.size() < need) padded.resize(need);
    float* out = padded.data();
    const Conv2DParams q = p;
    auto copy = [&](int64_t b) {
        const float* src = x + b * q.H * q.W * ib;
        float* dst = out + b * Hp * Wp * ib;
        const int64_t w0 = q.pad_left, w1 = std::min(Wp, q.pad_left + q.W);  // columns with data
        for (int64_t i = 0; i < Hp; ++i) {
            float* d = dst + i * Wp * ib;
            const int64_t ih = i - q.pad_top;
            if (ih < 0 || ih >= q.H || w1 <= w0) {
                std::memset(d, 0, static_cast<size_t>(Wp * ib) * sizeof(float));
                continue;
            }
            std::memset(d, 0, static_cast<size_t>(w0 * ib) * sizeof(float));
            std::memcpy(d + w0 * ib, src + ih * q.W * ib, static_cast<size_t>((w1 - w0) * ib) * sizeof(float));
            std::memset(d + w1 * ib, 0, static_cast<size_t>((Wp - w1) * ib) * sizeof(float));
        }
    };
    if (num_threads() > 1 && blocks > 1 && blocks * Hp * Wp * ib >= kInlineFloats) {
        parallel_for(blocks, copy);
    } else {
        for (int64_t b = 0; b < blocks; ++b) copy(b);
    }
    p.H = Hp;
    p.W = Wp;
    p.pad_top = p.pad_left = 0;
    return out;
}

}  // namespace

void conv_nchwc(const NchwcConv& c, const float* x, float* y) {
    const KernelTable& k = kernels();
    if (k.nchwc_block == c.cb && k.conv_nchwc != nullptr) {
        conv_nchwc_run(k.conv_nchwc, k.nchwc_oc_tile, c, x, y);
    } else {
        conv_nchwc_run(conv_nchwc_generic(c.cb), 1, c, x, y);
    }
}

void conv_nchwc_run(NchwcConvKernel kern, int oc_tile, const NchwcConv& c0, const float* x, float* y) {
    NchwcConv c = c0;
    const Conv2DParams& p = c.p;
    if (p.N == 0 || p.O == 0 || p.OH == 0 || p.OW == 0) return;
    // Depthwise checks taps at the edges itself; on short rows (where edges are a good part of
    // the row) the copy costs less than the one-pixel edge path.
    if (!c.depthwise) x = pad_input(&c, x);
    const int64_t OB = (p.O + c.cb - 1) / c.cb;
    const int64_t pixels = p.OH * p.OW;
    const int64_t per_pixel = (c.depthwise ? 1 : p.C / p.groups) * p.KH * p.KW;
    const int64_t macs = p.N * OB * c.cb * pixels * per_pixel;
    const int threads = num_threads();
    if (threads <= 1 || macs < kInlineMacs) {
        for (int64_t n = 0; n < p.N; ++n) kern(c, x, y, n, 0, OB, 0, pixels);
        return;
    }
    // Tasks over (image, run of output blocks, run of pixels): one image alone fills every
    // thread, and a run of blocks keeps its weights in cache across its pixels.
    const int64_t ob_run = c.depthwise ? 1 : std::max<int64_t>(1, oc_tile);
    const int64_t ob_runs = (OB + ob_run - 1) / ob_run;
    const int64_t base = p.N * ob_runs;
    const int64_t want = 4 * static_cast<int64_t>(threads);
    int64_t runs = std::min<int64_t>(pixels, (want + base - 1) / base);
    runs = std::max<int64_t>(1, std::min<int64_t>(runs, macs / (base * kTaskMacs)));
    // Runs of whole rows where that still gives enough runs (fewer partial tiles), else pixels.
    int64_t run = (pixels + runs - 1) / runs;
    if (runs <= p.OH) run = (p.OH + runs - 1) / runs * p.OW;
    runs = (pixels + run - 1) / run;
    parallel_for(base * runs, [&](int64_t t) {
        const int64_t r = t % runs, rest = t / runs;
        const int64_t ob0 = (rest % ob_runs) * ob_run, n = rest / ob_runs;
        kern(c, x, y, n, ob0, std::min(OB, ob0 + ob_run), r * run, std::min(pixels, (r + 1) * run));
    });
}

void pool2d_nchwc(const Pool2DParams& p, int cb, const float* x, float* y) {
    // Each block of an image is an NHWC image of cb channels: the NHWC pooling loop runs on it
    // with the channels as its vector lanes.
    const int64_t blocks = p.N * ((p.C + cb - 1) / cb);
    Pool2DParams q = p;
    q.layout = Layout::NHWC;
    q.N = 1;
    q.C = cb;
    const int64_t in = p.H * p.W * cb, out = p.OH * p.OW * cb;
    auto one = [&](int64_t b) { pool2d(q, x + b * in, y + b * out); };
    const int64_t work = blocks * out * p.KH * p.KW;
    if (work < kInlineFloats || num_threads() <= 1) {
        for (int64_t b = 0; b < blocks; ++b) one(b);
    } else {
        parallel_for(blocks, one);
    }
}

void nchwc_channel_affine(const float* x, const float* scale, const float* shift, int64_t N, int64_t C,
                          int64_t HW, int cb, const Epilogue& act, float* y) {
    const int64_t CB = (C + cb - 1) / cb;
    const NchwcAffineKernel k = kernels().nchwc_block == cb ? kernels().nchwc_affine : nchwc_affine_generic(cb);
    nchwc_for_blocks(N, CB, HW * cb, [&](int64_t n, int64_t b) {
        const int64_t at = (n * CB + b) * HW * cb;
        k(x + at, scale + b * cb, shift + b * cb, y + at, HW);
        if (act.act != Activation::None) activation_apply(y + at, y + at, HW * cb, act);
    });
}

void nchwc_binary_channel(BinaryOp op, const float* a, const float* b, int64_t N, int64_t C, int64_t HW,
                          bool b_per_image, int cb, float* y) {
    const int64_t CB = (C + cb - 1) / cb;
    const NchwcBinaryChannelKernel k =
        kernels().nchwc_block == cb ? kernels().nchwc_binary_channel : nchwc_binary_channel_generic(cb);
    nchwc_for_blocks(N, CB, HW * cb, [&](int64_t n, int64_t blk) {
        const int64_t at = (n * CB + blk) * HW * cb;
        k(op, a + at, b + ((b_per_image ? n : 0) * CB + blk) * cb, y + at, HW);
    });
}

void nchwc_reorder(const float* src, float* dst, int64_t N, int64_t C, int64_t HW, int cb, bool to_blocked) {
    const int64_t CB = (C + cb - 1) / cb;
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t b = 0; b < CB; ++b) {
            const int64_t lanes = std::min<int64_t>(cb, C - b * cb);
            float* blk = (to_blocked ? dst : const_cast<float*>(src)) + (n * CB + b) * HW * cb;
            const float* plain_c = (to_blocked ? src : dst) + (n * C + b * cb) * HW;
            if (to_blocked) {
                for (int64_t i = 0; i < HW; ++i) {
                    float* d = blk + i * cb;
                    for (int64_t l = 0; l < lanes; ++l) d[l] = plain_c[l * HW + i];
                    for (int64_t l = lanes; l < cb; ++l) d[l] = 0.0f;
                }
            } else {
                float* out = dst + (n * C + b * cb) * HW;
                for (int64_t i = 0; i < HW; ++i) {
                    const float* s = blk + i * cb;
                    for (int64_t l = 0; l < lanes; ++l) out[l * HW + i] = s[l];
                }
            }
        }
    }
}

}  // namespace pyengine
