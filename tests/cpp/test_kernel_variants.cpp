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
#include "runtime/cpu.h"
#include "runtime/dispatch.h"
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
#endif
#if defined(__arm__)
    // armv7: NEON kernels exactly when the kernel reports NEON in AT_HWCAP.
    CHECK((kernel_table(Isa::Neon) != nullptr) == cpu_features().neon);
    if (!cpu_features().neon) {
        CHECK_THROWS(kernels_select("neon"), InvalidArgument, "not available");
    }
#endif
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
            for (int64_t C : {1, 5, 9}) {
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

TEST_MAIN()
