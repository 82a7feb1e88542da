// SPDX-License-Identifier: Apache-2.0
// Kernel variants against the generic one where test_kernels.cpp does not reach: the dispatch
// on ARM (AT_HWCAP on armv7), activation edge values, the pooling and depthwise column paths
// at row ends (NEON loads 4 or 8 columns), depthwise channel ranges, GEMM with leading
// dimensions wider than the matrices. On a machine with only the generic table the comparisons
// are trivial, but the dispatch checks still run.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common.h"
#include "platform/cpu.h"
#include "kernels/conv_nchwc.h"
#include "kernels/dispatch.h"
#include "kernels/qgemm.h"
#if defined(__aarch64__)
#include "kernels/arm/kernels_arm_neon.h"
#endif  // defined(__aarch64__)

#if defined(__x86_64__)
namespace pyengine {
// The AVX2 table's two int8 GEMMs (kernels/x86/qgemm_x86_avx2.cpp): it picks one per CPU.
void qgemm_avx2(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
                int64_t ldc);
void qgemm_avx2_vnni(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
                     int64_t ldc);
// The AVX-512 table's VNNI GEMM (kernels/x86/qgemm_x86_avx512.cpp), which AMX's replaces, and its
// depthwise row without VNNI, which the VNNI one replaces.
void qgemm_avx512_vnni(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp,
                       int32_t* C, int64_t ldc);
void qepilogue_codes_avx512(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, uint8_t* y,
                            int64_t y_m, int32_t shift);
void qdw_row_avx512(const uint8_t* const* tap_x, int64_t taps, int64_t pix_step, const int16_t* w, int64_t C,
                    int64_t n, int32_t* acc);
}  // namespace pyengine
#endif  // defined(__x86_64__)
#include "test_util.h"

using namespace pyengine;

namespace {

std::vector<float> randoms(size_t n, float lo, float hi, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// The variants to compare with generic: every table this build and CPU can run.
std::vector<const KernelTable*> variants() {
    std::vector<const KernelTable*> out;
    for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon}) {
        if (const KernelTable* t = kernel_table(isa)) out.push_back(t);
    }
    return out;
}

// |got - want| <= atol + rtol * |want| everywhere; prints the first miss.
bool close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
           float rtol = 1e-5f, float atol = 1e-6f) {
    for (size_t i = 0; i < want.size(); ++i) {
        const float g = got[i], w = want[i];
        if (std::isnan(w) && std::isnan(g)) continue;
        if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w))) {
            std::printf("  %s: element %zu is %.9g, generic gives %.9g\n", what.c_str(), i, g, w);
            return false;
        }
    }
    return true;
}

const char* act_name(Activation a) {
    switch (a) {
        case Activation::None: return "none";
        case Activation::Relu: return "relu";
        case Activation::Relu6: return "relu6";
        case Activation::LeakyRelu: return "leaky_relu";
        case Activation::Sigmoid: return "sigmoid";
        case Activation::Tanh: return "tanh";
        case Activation::Clip: return "clip";
        case Activation::HardSigmoid: return "hard_sigmoid";
        case Activation::HardSwish: return "hard_swish";
        case Activation::Silu: return "silu";
    }
    return "?";
}

const Activation kActs[] = {Activation::None, Activation::Relu, Activation::Relu6,
                            Activation::LeakyRelu, Activation::Sigmoid, Activation::Tanh,
                            Activation::Clip, Activation::HardSigmoid, Activation::HardSwish,
                            Activation::Silu};

Epilogue epilogue(Activation a, const float* bias) {
    Epilogue e;
    e.act = a;
    e.bias = bias;
    e.alpha = a == Activation::Clip ? -0.5f : 0.1f;
    e.beta = 0.75f;
    if (a == Activation::HardSwish) {  // its fixed parameters
        e.alpha = 1.0f / 6.0f;
        e.beta = 0.5f;
    }
    return e;
}

}  // namespace

TEST_CASE(dispatch_follows_cpu_and_env) {
    const auto avail = kernels_available();
    CHECK(!avail.empty() && avail.back() == "generic");
    const char* env = std::getenv("PYENGINE_ISA");
    if (env != nullptr && *env != '\0') {
        CHECK(std::string(kernels().name) == env);
    } else {
        CHECK(std::string(kernels().name) == avail.front());  // the best one by default
    }
#if defined(__aarch64__) && defined(PYENGINE_HAVE_NEON_KERNELS)
    // NEON is the AArch64 baseline: always there.
    CHECK(cpu_support_arm_neon());
    CHECK(kernel_table(Isa::Neon) != nullptr);
#endif  // defined(__aarch64__) && defined(PYENGINE_HAVE_NEON_KERNELS)
#if defined(__arm__)
    // armv7: NEON kernels exactly when the kernel reports NEON in AT_HWCAP.
    CHECK((kernel_table(Isa::Neon) != nullptr) == cpu_features().neon);
    if (!cpu_features().neon) {
        CHECK_THROWS(kernels_select("neon"), InvalidArgument, "not available");
    }
#endif  // defined(__arm__)
    CHECK_THROWS(kernels_select("sse9"), InvalidArgument, "sse9");
    std::string names;
    for (const KernelTable* t : variants()) names += std::string(" ") + t->name;
    std::printf("  in use: %s; compared with generic:%s\n", kernels().name, names.empty() ? " (none on this CPU)" : names.c_str());
}

TEST_CASE(activation_matches_generic) {
    const KernelTable* g = kernel_table_generic();
    for (const KernelTable* t : variants()) {
        for (int64_t n : {1, 3, 4, 5, 8, 17, 1027}) {
            auto x = randoms(static_cast<size_t>(n), -12.0f, 12.0f, static_cast<uint32_t>(n));
            if (n > 8) {  // the edges of each activation's pieces, and tiny values for tanh
                // (-3, 3: HardSwish's knees; 2.5, -7.5: HardSigmoid's with alpha 0.1, beta 0.75)
                const float edges[] = {0.0f, -0.0f, 6.0f, -0.5f, 0.75f, 0.625f, -0.625f, 1e-4f,
                                       -3e-6f, 9.5f, -95.0f, 90.0f, 3.0f, -3.0f, 2.5f, -7.5f};
                for (size_t i = 0; i < sizeof edges / sizeof edges[0]; ++i) x[i] = edges[i];
            }
            for (Activation a : kActs) {
                Epilogue e = epilogue(a, nullptr);
                std::vector<float> want(x.size()), got(x.size());
                g->activation_apply(x.data(), want.data(), n, e);
                t->activation_apply(x.data(), got.data(), n, e);
                CHECK(close(got, want, str(t->name, " activation ", act_name(a), " n=", n), 2e-6f, 1e-7f));
                // In place, as the executor may run it.
                std::vector<float> inplace = x;
                t->activation_apply(inplace.data(), inplace.data(), n, e);
                CHECK(close(inplace, got, str(t->name, " in-place activation ", act_name(a)), 0.0f, 0.0f));
            }
        }
    }
}

namespace {

// Pooling geometry as PoolOp builds it (explicit pads; ceil_mode off).
Pool2DParams pool_params(Layout layout, bool is_max, bool include_pad, int64_t N, int64_t C,
                         int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                         int64_t pad) {
    Pool2DParams p;
    p.layout = layout;
    p.is_max = is_max;
    p.count_include_pad = include_pad;
    p.N = N; p.C = C; p.H = H; p.W = W;
    p.KH = kh; p.KW = kw;
    p.stride_h = sh; p.stride_w = sw;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pad;
    p.OH = (H + 2 * pad - kh) / sh + 1;
    p.OW = (W + 2 * pad - kw) / sw + 1;
    return p;
}

}  // namespace

TEST_CASE(pool_matches_generic) {
    const KernelTable* g = kernel_table_generic();
    // {kh, kw, sh, sw, pad}; a window equal to the input is global pooling.
    const int64_t windows[][5] = {{2, 2, 2, 2, 0}, {3, 3, 1, 1, 1}, {3, 3, 2, 2, 1},
                                  {2, 3, 1, 2, 0}, {3, 2, 3, 3, 1}, {1, 1, 1, 1, 0},
                                  {7, 13, 1, 1, 0}};
    for (const KernelTable* t : variants()) {
        for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
            for (int64_t C : {1, 5, 9, 20}) {
                for (const auto& wnd : windows) {
                    for (int mode = 0; mode < 3; ++mode) {  // max, avg, avg counting padding
                        Pool2DParams p = pool_params(layout, mode == 0, mode == 2, 2, C, 7, 13, wnd[0], wnd[1],
                                                     wnd[2], wnd[3], wnd[4]);
                        auto x = randoms(static_cast<size_t>(p.N * C * p.H * p.W), -5.0f, 5.0f, static_cast<uint32_t>(C));
                        const size_t ny = static_cast<size_t>(p.N * C * p.OH * p.OW);
                        std::vector<float> want(ny), got(ny);
                        g->pool2d(p, x.data(), want.data());
                        t->pool2d(p, x.data(), got.data());
                        CHECK(close(got, want, str(t->name, layout == Layout::NHWC ? " NHWC" : " NCHW", " pool mode ", mode,
                                                   " C=", C, " window ", wnd[0], "x", wnd[1], " stride ", wnd[2], "x", wnd[3], " pad ", wnd[4]),
                                    2e-6f, 1e-6f));
                    }
                }
            }
        }
    }
}

namespace {

Conv2DParams conv_params(Layout layout, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O,
                         int64_t k, int64_t stride, int64_t pad, int64_t dilation, int64_t groups) {
    Conv2DParams p;
    p.layout = layout;
    p.N = N; p.C = C; p.H = H; p.W = W;
    p.O = O; p.KH = k; p.KW = k;
    p.stride_h = p.stride_w = stride;
    p.dilation_h = p.dilation_w = dilation;
    p.pad_top = p.pad_left = pad;
    p.OH = (H + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
    p.OW = (W + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
    p.groups = groups;
    return p;
}

}  // namespace

TEST_CASE(depthwise_matches_generic) {
    const KernelTable* g = kernel_table_generic();
    // {C, k, stride, pad, dilation}; channel ranges [c0, c1) as the conv driver splits them.
    const int64_t convs[][5] = {{9, 3, 1, 1, 1}, {9, 3, 2, 1, 1}, {5, 5, 1, 4, 2}, {24 + 1, 3, 2, 0, 1},
                                {70, 3, 1, 1, 1}, {7, 3, 2, 1, 2}, {6, 1, 1, 0, 1}};
    for (const KernelTable* t : variants()) {
        for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
            for (const auto& c : convs) {
                for (Activation a : {Activation::None, Activation::Relu6, Activation::Sigmoid}) {
                    for (int64_t W : {13, 16, 17}) {
                        Conv2DParams p = conv_params(layout, 2, c[0], 11, W, c[0], c[1], c[2], c[3], c[4], c[0]);
                        auto x = randoms(static_cast<size_t>(p.N * p.C * p.H * p.W), -1.0f, 1.0f, 3);
                        auto w = randoms(static_cast<size_t>(p.O * p.KH * p.KW), -0.5f, 0.5f, 4);
                        auto bias = randoms(static_cast<size_t>(p.O), -0.2f, 0.2f, 5);
                        p.ep = epilogue(a, bias.data());
                        const size_t ny = static_cast<size_t>(p.N * p.O * p.OH * p.OW);
                        std::vector<float> want(ny, 7.0f), got(ny, 7.0f);
                        // Image 1, the middle channels only: the rest must stay untouched.
                        const int64_t c0 = c[0] / 3, c1 = c[0] - c[0] / 4;
                        g->depthwise2d(p, x.data(), w.data(), want.data(), 1, c0, c1);
                        t->depthwise2d(p, x.data(), w.data(), got.data(), 1, c0, c1);
                        CHECK(close(got, want, str(t->name, layout == Layout::NHWC ? " NHWC" : " NCHW", " depthwise C=", c[0],
                                                   " W=", W, " k=", c[1], " s=", c[2], " pad=", c[3], " dil=", c[4],
                                                   " channels ", c0, "..", c1, " act ", act_name(a)),
                                    1e-5f, 1e-6f));
                    }
                }
            }
        }
    }
}

TEST_CASE(gemm_matches_generic) {
    const KernelTable* g = kernel_table_generic();
    const int64_t sizes[][3] = {{1, 1, 1},   {1, 10, 64},  {5, 6, 7},    {8, 8, 8},    {17, 33, 65},
                                {64, 10, 256}, {3, 100, 9}, {1, 256, 256}, {33, 47, 129}, {130, 70, 300}};
    for (const KernelTable* t : variants()) {
        for (const auto& s : sizes) {
            const int64_t M = s[0], N = s[1], K = s[2];
            for (bool trans_b : {false, true}) {
                for (Activation a : {Activation::None, Activation::Relu, Activation::Tanh}) {
                    // Leading dimensions wider than the matrices, as views of bigger buffers.
                    const int64_t lda = K + 3, ldb = (trans_b ? K : N) + 1, ldc = N + 2;
                    auto A = randoms(static_cast<size_t>(M * lda), -1.0f, 1.0f, 6);
                    auto B = randoms(static_cast<size_t>((trans_b ? N : K) * ldb), -1.0f, 1.0f, 7);
                    auto bias = randoms(static_cast<size_t>(N), -0.5f, 0.5f, 8);
                    Epilogue e = epilogue(a, a == Activation::Tanh ? nullptr : bias.data());
                    std::vector<float> want(static_cast<size_t>(M * ldc), 42.0f), got = want;
                    g->gemm(M, N, K, A.data(), lda, B.data(), ldb, trans_b, want.data(), ldc, e);
                    t->gemm(M, N, K, A.data(), lda, B.data(), ldb, trans_b, got.data(), ldc, e);
                    // Sums of K products: tolerance grows with K (different summation order).
                    const float atol = 1e-6f * static_cast<float>(K);
                    CHECK(close(got, want, str(t->name, " gemm ", M, "x", N, "x", K, trans_b ? " trans_b" : "", " act ", act_name(a)),
                                1e-5f, atol));
                }
            }
        }
    }
}

namespace {

// A blocked convolution of p (plain NCHW data, OIHW weights) through `kernel` with block cb,
// through the driver (which splits it over the pool's threads, in runs of oc_tile output blocks
// and of pixels, and writes out the padding); returns the plain NCHW output.
// Also checks that every padded lane of the blocked output is finite.
std::vector<float> conv_blocked(NchwcConvKernel kernel, int oc_tile, int cb, const Conv2DParams& p, bool plain_input,
                                const std::vector<float>& x, const std::vector<float>& w, const float* bias,
                                const std::vector<float>* residual, bool* finite) {
    NchwcConv c;
    c.p = p;
    c.cb = cb;
    c.in_block = plain_input ? 1 : cb;
    if (!nchwc_conv_setup(&c)) return {};
    const std::vector<float> wb = nchwc_pack_conv_weights(c, w.data());
    c.w = wb.data();
    const int64_t OB = (p.O + cb - 1) / cb;
    std::vector<float> bb(static_cast<size_t>(OB * cb), 0.0f);
    if (bias != nullptr) std::memcpy(bb.data(), bias, static_cast<size_t>(p.O) * sizeof(float));
    c.bias = bias != nullptr ? bb.data() : nullptr;
    std::vector<float> xb(static_cast<size_t>(nchwc_numel(p.N, p.C, p.H * p.W, cb)));
    if (plain_input) xb = x;
    else nchwc_reorder(x.data(), xb.data(), p.N, p.C, p.H * p.W, cb, true);
    const int64_t ny = nchwc_numel(p.N, p.O, p.OH * p.OW, cb);
    std::vector<float> rb;
    if (residual != nullptr) {
        rb.resize(static_cast<size_t>(ny));
        nchwc_reorder(residual->data(), rb.data(), p.N, p.O, p.OH * p.OW, cb, true);
        c.residual = rb.data();
    }
    std::vector<float> yb(static_cast<size_t>(ny), NAN);
    conv_nchwc_run(kernel, oc_tile, c, xb.data(), yb.data());
    *finite = true;
    for (float v : yb) *finite = *finite && std::isfinite(v);
    std::vector<float> y(static_cast<size_t>(p.N * p.O * p.OH * p.OW));
    nchwc_reorder(yb.data(), y.data(), p.N, p.O, p.OH * p.OW, cb, false);
    return y;
}

}  // namespace

TEST_CASE(conv_nchwc_matches_reference) {
    // Every variant's blocked kernel, and the generic one at each block size.
    struct Variant { std::string name; NchwcConvKernel kernel; int cb, oc_tile; };
    std::vector<Variant> kernels;
    for (int cb : {4, 8, 16}) kernels.push_back({str("generic/", cb), conv_nchwc_generic(cb), cb, 1});
    for (const KernelTable* t : variants()) kernels.push_back({t->name, t->conv_nchwc, t->nchwc_block, t->nchwc_oc_tile});
    // {C, O, H, W, k, stride, pad, dilation, groups (0: depthwise)}
    const int64_t convs[][9] = {
        {24 + 1, 17, 5, 6, 3, 1, 1, 1, 1}, {3, 33, 9, 11, 7, 2, 3, 1, 1}, {16, 40, 7, 7, 1, 1, 0, 1, 1},
        {32, 64, 8, 9, 1, 2, 0, 1, 1},     {19, 23, 6, 13, 3, 2, 1, 2, 1}, {9, 8, 5, 7, 5, 1, 2, 1, 1},
        {64, 32, 6, 7, 3, 1, 1, 1, 2},     {25, 25, 7, 9, 3, 1, 1, 1, 0}, {40, 40, 9, 8, 3, 2, 1, 1, 0},
        {33, 33, 6, 5, 5, 1, 2, 2, 0},     {5, 7, 1, 1, 1, 1, 0, 1, 1},   {7, 6, 3, 4, 3, 1, 0, 1, 1},
        // Big enough to be split over threads: by rows, and by pixels within rows (2 rows).
        {32, 48, 17, 19, 3, 1, 1, 1, 1},  {64, 16, 2, 60, 3, 1, 1, 1, 1}, {48, 48, 45, 40, 3, 1, 1, 1, 0},
        {80, 80, 26, 30, 3, 1, 1, 1, 0},
        // Depthwise rows long enough for the sliding row kernel's full and half tiles and its
        // single-pixel tail: 3x3 and 5x5 at strides 1 and 2.
        {36, 36, 10, 41, 3, 2, 1, 1, 0},  {24, 24, 13, 37, 5, 2, 2, 1, 0}, {20, 20, 7, 29, 5, 1, 2, 1, 0},
        // 1x1 over a 7 x 7 plane (tiles of T and T - 1 pixels) with 5 blocks of 16 (runs of 3 + 2).
        {20, 80, 7, 7, 1, 1, 0, 1, 1},
        // A reduction split into chunks of input blocks (1x1 over 300 channels; 3x3 over 70).
        {300, 40, 5, 11, 1, 1, 0, 1, 1},  {70, 33, 9, 7, 3, 1, 1, 1, 1}};
    // Every activation on the first geometry; two on each of the others (one rotating), so the
    // test stays quick under qemu.
    const size_t n_acts = sizeof(kActs) / sizeof(kActs[0]);
    for (const Variant& kv : kernels) {
        const int cb = kv.cb;
        for (size_t ci = 0; ci < sizeof(convs) / sizeof(convs[0]); ++ci) {
            const auto& cv = convs[ci];
            std::vector<Activation> acts(kActs, kActs + n_acts);
            if (ci > 0) acts = {kActs[ci % n_acts], Activation::Relu};
            const int64_t groups = cv[8] == 0 ? cv[0] : cv[8];
            if (cv[8] > 1 && ((cv[0] / groups) % cb != 0 || (cv[1] / groups) % cb != 0)) continue;
            Conv2DParams p = conv_params(Layout::NCHW, 2, cv[0], cv[2], cv[3], cv[1], cv[4], cv[5], cv[6], cv[7], groups);
            auto x = randoms(static_cast<size_t>(p.N * p.C * p.H * p.W), -1.0f, 1.0f, 11);
            auto w = randoms(static_cast<size_t>(p.O * (p.C / groups) * p.KH * p.KW), -0.5f, 0.5f, 12);
            auto bias = randoms(static_cast<size_t>(p.O), -0.2f, 0.2f, 13);
            auto res = randoms(static_cast<size_t>(p.N * p.O * p.OH * p.OW), -1.0f, 1.0f, 14);
            for (Activation a : acts) {
                for (int mode = 0; mode < 3; ++mode) {  // 0: plain, 1: residual, 2: plain input, no bias
                    const bool plain_input = mode == 2 && cv[8] != 0 && groups == 1;
                    if (mode == 2 && !plain_input) continue;
                    const float* b = mode == 2 ? nullptr : bias.data();
                    Conv2DParams q = p;
                    q.ep = epilogue(Activation::None, b);
                    std::vector<float> want(static_cast<size_t>(p.N * p.O * p.OH * p.OW));
                    conv2d_reference(q, x.data(), w.data(), want.data());
                    const Epilogue e = epilogue(a, nullptr);
                    for (size_t i = 0; i < want.size(); ++i) want[i] = activate(want[i] + (mode == 1 ? res[i] : 0.0f), e);
                    q.ep = e;
                    bool finite = false;
                    auto got = conv_blocked(kv.kernel, kv.oc_tile, cb, q, plain_input, x, w, b, mode == 1 ? &res : nullptr, &finite);
                    const std::string what = str(kv.name, " conv C=", p.C, " O=", p.O, " ", p.H, "x", p.W, " k=", p.KH,
                                                 " s=", p.stride_h, " pad=", p.pad_top, " dil=", p.dilation_h, " groups=",
                                                 groups, " act ", act_name(a), " mode ", mode);
                    CHECK(!got.empty());
                    CHECK(finite);
                    if (!got.empty()) CHECK(close(got, want, what, 1e-4f, 1e-5f));
                }
            }
        }
    }
}

TEST_CASE(conv_nchwc_epilogue_matches_activation) {
    // The blocked kernels apply activations inside their tiles (their own exp for the sigmoid
    // family): through an identity 1x1 convolution, every activation at the edges of its pieces
    // and at large magnitudes must match the generic activation kernel.
    const float edges[] = {0.0f, -0.0f, 6.0f, -0.5f, 0.75f, 0.625f, -0.625f, 1e-4f, -3e-6f, 9.5f, -95.0f,
                           90.0f, 3.0f, -3.0f, 2.5f, -7.5f, 87.0f, -87.0f, 88.5f, -88.5f, 200.0f, -200.0f, 20.0f, -20.0f};
    const int64_t C = 16, W = 60;
    auto x = randoms(static_cast<size_t>(C * W), -30.0f, 30.0f, 5);
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; ++i) x[i * 7 % x.size()] = edges[i];
    std::vector<float> w(static_cast<size_t>(C * C), 0.0f);
    for (int64_t c = 0; c < C; ++c) w[static_cast<size_t>(c * C + c)] = 1.0f;
    const KernelTable* g = kernel_table_generic();
    for (const KernelTable* t : variants()) {
        for (Activation a : kActs) {
            Conv2DParams p = conv_params(Layout::NCHW, 1, C, 1, W, C, 1, 1, 0, 1, 1);
            p.ep = epilogue(a, nullptr);
            bool finite = true;
            const auto got = conv_blocked(t->conv_nchwc, t->nchwc_oc_tile, t->nchwc_block, p, false, x, w, nullptr,
                                          nullptr, &finite);
            std::vector<float> want(x.size());
            g->activation_apply(x.data(), want.data(), static_cast<int64_t>(x.size()), p.ep);
            CHECK(close(got, want, str(t->name, " blocked epilogue ", act_name(a)), 2e-6f, 1e-7f));
        }
    }
}

TEST_CASE(nchwc_pool_and_reorder_match_plain) {
    // {C, H, W, k, stride, pad, global}
    const int64_t pools[][7] = {{25, 7, 9, 3, 2, 1, 0}, {17, 6, 5, 2, 2, 0, 0}, {9, 5, 6, 3, 1, 1, 0}, {33, 7, 7, 7, 1, 0, 1},
                                {20, 9, 11, 9, 1, 0, 1}};
    for (int cb : {4, 8, 16}) {
        for (const auto& pc : pools) {
            for (bool is_max : {true, false}) {
                Pool2DParams p;
                p.is_max = is_max;
                p.N = 2; p.C = pc[0]; p.H = pc[1]; p.W = pc[2];
                p.KH = p.KW = pc[6] ? pc[1] : pc[3];
                p.stride_h = p.stride_w = pc[4];
                p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pc[5];
                p.OH = (p.H + 2 * pc[5] - p.KH) / p.stride_h + 1;
                p.OW = (p.W + 2 * pc[5] - p.KW) / p.stride_w + 1;
                auto x = randoms(static_cast<size_t>(p.N * p.C * p.H * p.W), -1.0f, 1.0f, 21);
                std::vector<float> want(static_cast<size_t>(p.N * p.C * p.OH * p.OW));
                pool2d_generic(p, x.data(), want.data());
                std::vector<float> xb(static_cast<size_t>(nchwc_numel(p.N, p.C, p.H * p.W, cb)));
                nchwc_reorder(x.data(), xb.data(), p.N, p.C, p.H * p.W, cb, true);
                std::vector<float> back(x.size());
                nchwc_reorder(xb.data(), back.data(), p.N, p.C, p.H * p.W, cb, false);
                CHECK(back == x);
                std::vector<float> yb(static_cast<size_t>(nchwc_numel(p.N, p.C, p.OH * p.OW, cb)), NAN);
                pool2d_nchwc(p, cb, xb.data(), yb.data());
                std::vector<float> got(want.size());
                nchwc_reorder(yb.data(), got.data(), p.N, p.C, p.OH * p.OW, cb, false);
                CHECK(close(got, want, str("nchwc pool cb=", cb, " C=", p.C, is_max ? " max" : " avg"), 1e-5f, 1e-6f));
            }
        }
    }
}

TEST_CASE(int8_kernels_match_generic_exactly) {
    // Integer sums and the epilogue's float steps are the same operations in every variant:
    // the results must be equal bit for bit, on odd sizes, tails and row strides wider than the rows.
    const KernelTable* g = kernel_table_generic();
    std::mt19937 rng(17);
    auto bytes = [&](size_t n) {
        std::vector<uint8_t> v(n);
        for (auto& b : v) b = static_cast<uint8_t>(rng());
        return v;
    };
    // Sizes past 16 rows reach the AMX tiles where the CPU has them: rows, columns and k in
    // whole tiles and not (a partial last k tile, a lone last panel, a half-filled row block).
    const int64_t sizes[][3] = {{1, 1, 1},     {1, 16, 4},    {3, 17, 5},    {4, 64, 64},   {5, 70, 27},
                                {9, 33, 148},  {64, 130, 36}, {16, 16, 64},  {17, 48, 64},  {32, 32, 128},
                                {33, 40, 200}, {100, 130, 576}};
    for (const KernelTable* t : variants()) {
        for (const auto& s : sizes) {
            const int64_t M = s[0], N = s[1], K = s[2], Kp = qgemm_kpad(K), lda = Kp + 5, ldc = N + 3;
            auto A = bytes(static_cast<size_t>(M * lda));
            auto Bs = bytes(static_cast<size_t>(K * N));
            std::vector<int8_t> B(Bs.begin(), Bs.end()), packed(qgemm_packed_size(K, N));
            qgemm_pack_b(K, N, B.data(), N, 1, packed.data());
            std::vector<int32_t> want(static_cast<size_t>(M * ldc), 7), got = want;
            g->qgemm(M, N, Kp, A.data(), lda, packed.data(), want.data(), ldc);
            t->qgemm(M, N, Kp, A.data(), lda, packed.data(), got.data(), ldc);
            CHECK(got == want);
            if (got != want) std::printf("  %s qgemm %lldx%lldx%lld differs\n", t->name, (long long)M, (long long)N, (long long)K);
#if defined(__x86_64__)
            // The VNNI GEMM where the table picked AMX's, so both stay tested on this CPU.
#if defined(PYENGINE_HAVE_AVX512_KERNELS)
            if (t->isa == Isa::Avx512 && cpu_support_x86_amx_int8()) {
                std::vector<int32_t> vnni(want.size(), 7);
                qgemm_avx512_vnni(M, N, Kp, A.data(), lda, packed.data(), vnni.data(), ldc);
                CHECK(vnni == want);
            }
#endif  // defined(PYENGINE_HAVE_AVX512_KERNELS)
            // Both AVX2 GEMMs, whichever one the table picked for this CPU.
            if (t->isa == Isa::Avx2) {
                std::vector<int32_t> plain(want.size(), 7);
                qgemm_avx2(M, N, Kp, A.data(), lda, packed.data(), plain.data(), ldc);
                CHECK(plain == want);
                if (cpu_features().avx_vnni) {
                    std::vector<int32_t> vnni(want.size(), 7);
                    qgemm_avx2_vnni(M, N, Kp, A.data(), lda, packed.data(), vnni.data(), ldc);
                    CHECK(vnni == want);
                }
            }
#endif  // defined(__x86_64__)
#if defined(__aarch64__)
            // Both AArch64 paths, whichever one the table picked for this CPU.
            if (t->isa == Isa::Neon) {
                std::vector<int32_t> plain(want.size(), 7);
                qgemm_arm_neon(M, N, Kp, A.data(), lda, packed.data(), plain.data(), ldc);
                CHECK(plain == want);
                if (cpu_features().asimddp) {
                    std::vector<int32_t> dot(want.size(), 7);
                    qgemm_arm_neon_dot(M, N, Kp, A.data(), lda, packed.data(), dot.data(), ldc);
                    CHECK(dot == want);
                }
            }
#endif  // defined(__aarch64__)
            // The epilogue on these sums: plain and requantized, rows contiguous and strided.
            std::vector<int32_t> wsum(static_cast<size_t>(N)), bias(static_cast<size_t>(N));
            std::vector<float> scale(static_cast<size_t>(N));
            for (int64_t n = 0; n < N; ++n) {
                wsum[static_cast<size_t>(n)] = static_cast<int32_t>(rng() % 20001) - 10000;
                bias[static_cast<size_t>(n)] = static_cast<int32_t>(rng() % 2001) - 1000;
                scale[static_cast<size_t>(n)] = 1e-4f * static_cast<float>(1 + rng() % 100);
            }
            // Activation clamps: none, ReLU, ReLU6, and one whose range lies above the output grid.
            const float clamps[][2] = {{-INFINITY, INFINITY}, {0.0f, INFINITY}, {0.0f, 6.0f}, {200.0f, 300.0f}};
            for (bool requantize : {false, true}) {
                for (const auto& clamp : clamps) {
                for (int64_t y_n : {int64_t(1), M}) {
                    QEpilogue e;
                    e.wsum = wsum.data();
                    e.bias = requantize ? bias.data() : nullptr;
                    e.scale = scale.data();
                    e.x_zero_point = 37;
                    e.lo = clamp[0];
                    e.hi = clamp[1];
                    e.requantize = requantize;
                    e.y_scale = 0.37f;
                    e.y_zero_point = 11;
                    const int64_t y_m = y_n == 1 ? N + 2 : 1;
                    std::vector<float> yw(static_cast<size_t>(M * (N + 2) + N * M), -1.0f), yg = yw;
                    g->qepilogue(e, want.data(), ldc, M, N, yw.data(), y_m, y_n);
                    t->qepilogue(e, want.data(), ldc, M, N, yg.data(), y_m, y_n);
                    CHECK(std::memcmp(yw.data(), yg.data(), yw.size() * sizeof(float)) == 0);
                    if (requantize && y_n == 1) {  // to u8 codes, uint8 and int8 grids
                        for (int32_t shift : {0, 128}) {
                            // uint8 grid [0, 255], or int8 [-128, 127] with its codes shifted by 128
                            e.q_lo = shift == 0 ? 0 : -128;
                            e.q_hi = shift == 0 ? 255 : 127;
                            e.y_zero_point = shift == 0 ? 11 : -3;
                            std::vector<uint8_t> cw(static_cast<size_t>(M * (N + 5)), 1), cg = cw;
                            g->qepilogue_codes(e, want.data(), ldc, M, N, cw.data(), N + 5, shift);
                            t->qepilogue_codes(e, want.data(), ldc, M, N, cg.data(), N + 5, shift);
                            CHECK(cw == cg);
#if defined(PYENGINE_HAVE_AVX512_KERNELS)
                            if (t->isa == Isa::Avx512) {  // the one without BW packs too
                                std::vector<uint8_t> plain(cw.size(), 1);
                                qepilogue_codes_avx512(e, want.data(), ldc, M, N, plain.data(), N + 5, shift);
                                CHECK(plain == cw);
                            }
#endif  // defined(PYENGINE_HAVE_AVX512_KERNELS)
                        }
                    }
                }
                }
            }
        }
        // Quantization (contiguous and in strided rows) and the depthwise kernels.
        auto xs = randoms(1000, -40.0f, 40.0f, 9);
        xs[3] = INFINITY;
        xs[4] = -INFINITY;
        xs[5] = NAN;
        for (int64_t n : {int64_t(1), int64_t(15), int64_t(16), int64_t(17), int64_t(1000)}) {
            std::vector<uint8_t> qw(static_cast<size_t>(n)), qg = qw;
            g->quantize_u8(xs.data(), n, 0.3f, 5, -128, 127, 128, qw.data());
            t->quantize_u8(xs.data(), n, 0.3f, 5, -128, 127, 128, qg.data());
            CHECK(qw == qg);
        }
        for (int64_t width : {int64_t(4), int64_t(16), int64_t(19)}) {
            const int64_t rows = 30, out_stride = width + 7;
            std::vector<uint8_t> qw(static_cast<size_t>(rows * out_stride), 9), qg = qw;
            g->quantize_u8_rows(xs.data(), rows, width, width + 1, 0.07f, 128, 0, 255, 0, qw.data(), out_stride);
            t->quantize_u8_rows(xs.data(), rows, width, width + 1, 0.07f, 128, 0, 255, 0, qg.data(), out_stride);
            CHECK(qw == qg);
        }
        for (int64_t C : {int64_t(1), int64_t(16), int64_t(24), int64_t(35)}) {
            for (int64_t taps : {int64_t(9), int64_t(25), int64_t(49)}) {
                const int64_t pix = 7, step = C + 3;
                auto x = bytes(static_cast<size_t>(taps * (step + 1) + pix * step + C + 16));
                // Taps at scattered offsets, every third one in a separate row (a border's pad row).
                auto pad = bytes(static_cast<size_t>(pix * step + C + 16));
                std::vector<const uint8_t*> tap_x(static_cast<size_t>(taps));
                for (int64_t k = 0; k < taps; ++k) tap_x[static_cast<size_t>(k)] = k % 3 == 2 ? pad.data() : x.data() + k * (step + 1);
                std::vector<int16_t> w(static_cast<size_t>(taps * C));
                for (auto& v : w) v = static_cast<int16_t>(static_cast<int>(rng() % 511) - 255);
                for (int64_t n : {int64_t(1), int64_t(4), pix}) {
                    std::vector<int32_t> aw(static_cast<size_t>(pix * C), 3), ag = aw;
                    g->qdw_row(tap_x.data(), taps, step, w.data(), C, n, aw.data());
                    t->qdw_row(tap_x.data(), taps, step, w.data(), C, n, ag.data());
                    CHECK(aw == ag);
#if defined(PYENGINE_HAVE_AVX512_KERNELS)
                    if (t->isa == Isa::Avx512) {  // the row without VNNI too, whichever the table took
                        std::vector<int32_t> plain(aw.size(), 3);
                        qdw_row_avx512(tap_x.data(), taps, step, w.data(), C, n, plain.data());
                        CHECK(plain == aw);
                    }
#endif  // defined(PYENGINE_HAVE_AVX512_KERNELS)
                }
            }
        }
        // The 3x3 stride-1 depthwise kernel where the variant has one, against the sum itself:
        // a width with a tail past 4 pixels, a pixel stride wider than the channels, the whole
        // image and a band of rows.
        if (t->qdw3x3s1 != nullptr) {
            const int64_t H = 5, W = 7, C = 32, stride = C + 16;
            const uint8_t pad = 37;
            auto img = bytes(static_cast<size_t>(H * W * stride));
            std::vector<int16_t> w(static_cast<size_t>(9 * C));
            for (auto& v : w) v = static_cast<int16_t>(static_cast<int>(rng() % 511) - 255);
            auto X = [&](int64_t ih, int64_t iw, int64_t c) -> int32_t {
                return ih < 0 || ih >= H || iw < 0 || iw >= W ? pad : img[static_cast<size_t>((ih * W + iw) * stride + c)];
            };
            for (const auto& band : {std::pair<int64_t, int64_t>{0, H}, std::pair<int64_t, int64_t>{2, 4}}) {
                const int64_t oh0 = band.first, oh1 = band.second;
                std::vector<int32_t> want(static_cast<size_t>((oh1 - oh0) * W * C)), got(want.size(), 5);
                for (int64_t oh = oh0; oh < oh1; ++oh)
                    for (int64_t ow = 0; ow < W; ++ow)
                        for (int64_t c = 0; c < C; ++c) {
                            int32_t sum = 0;
                            for (int64_t k = 0; k < 9; ++k) sum += X(oh + k / 3 - 1, ow + k % 3 - 1, c) * w[static_cast<size_t>(k * C + c)];
                            want[static_cast<size_t>(((oh - oh0) * W + ow) * C + c)] = sum;
                        }
                t->qdw3x3s1(img.data(), H, W, stride, C, pad, w.data(), oh0, oh1, got.data());
                CHECK(got == want);
            }
        }
    }
}

TEST_MAIN()
