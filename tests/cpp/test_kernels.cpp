// SPDX-License-Identifier: Apache-2.0
// Every compiled kernel variant against the generic one (and plain reference loops) on the same
// random inputs, with odd sizes and tails (5x6x7, 24+1 channels); the thread pool under load.
#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "common.h"
#include "kernels/conv2d.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/pool.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"
#include "test_util.h"

using namespace pyengine;

namespace {

std::mt19937 rng(1234);

std::vector<float> rand_vec(int64_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = d(rng);
    return v;
}

// Every table this build and CPU can run, generic first.
std::vector<const KernelTable*> tables() {
    std::vector<const KernelTable*> out;
    for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
        if (const KernelTable* t = kernel_table(isa)) out.push_back(t);
    }
    return out;
}

bool close(const std::vector<float>& a, const std::vector<float>& b, float tol, const char* what,
           const char* isa) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        const float d = std::fabs(a[i] - b[i]);
        if (!(d <= tol * (1.0f + std::fabs(b[i])))) {
            std::printf("  %s [%s]: element %zu is %g, expected %g\n", what, isa, i, a[i], b[i]);
            return false;
        }
    }
    return true;
}

Epilogue epilogue(int which, const float* bias) {
    Epilogue e;
    e.bias = bias;
    const Activation acts[] = {Activation::None, Activation::Relu, Activation::Relu6, Activation::LeakyRelu,
                               Activation::Sigmoid, Activation::Tanh, Activation::Clip,
                               Activation::HardSigmoid, Activation::HardSwish, Activation::Silu};
    e.act = acts[which % 10];
    e.alpha = e.act == Activation::Clip ? -0.5f : 0.1f;
    e.beta = 0.75f;
    return e;
}

}  // namespace

TEST_CASE(gemm_variants_match_reference) {
    std::uniform_int_distribution<int> small(1, 40), big(1, 300);
    // Fixed shapes for the paths random ones rarely reach: one or two rows with B beyond L2
    // (the streaming row kernel), row kernels' register tails, 5x6x7.
    const int64_t fixed[][3] = {{1, 517, 700}, {2, 1031, 300}, {1, 2000, 601}, {1, 257, 33},
                                {2, 129, 5}, {5, 7, 6}, {13, 1, 1}};
    for (int iter = 0; iter < 67; ++iter) {
        int64_t M = iter % 3 == 0 ? big(rng) : small(rng);
        int64_t N = iter % 4 == 0 ? big(rng) : small(rng);
        int64_t K = iter % 5 == 0 ? big(rng) + 256 : small(rng);  // > one K block sometimes
        if (iter >= 60) {
            M = fixed[iter - 60][0];
            N = fixed[iter - 60][1];
            K = fixed[iter - 60][2];
        }
        const bool trans_b = iter % 2 == 1;
        const bool per_row = iter % 6 == 5;
        auto A = rand_vec(M * K), B = rand_vec(K * N), bias = rand_vec(per_row ? M : N);
        Epilogue ep = epilogue(iter, iter % 3 == 2 ? nullptr : bias.data());
        ep.bias_per_row = per_row;
        // Plain double-precision reference.
        std::vector<float> ref(static_cast<size_t>(M * N));
        for (int64_t i = 0; i < M; ++i) {
            for (int64_t j = 0; j < N; ++j) {
                double s = 0;
                for (int64_t k = 0; k < K; ++k) s += double(A.data()[i * K + k]) * (trans_b ? B.data()[j * K + k] : B.data()[k * N + j]);
                const float b = ep.bias ? ep.bias[per_row ? i : j] : 0.0f;
                ref[static_cast<size_t>(i * N + j)] = activate(static_cast<float>(s) + b, ep);
            }
        }
        for (const KernelTable* t : tables()) {
            std::vector<float> C(static_cast<size_t>(M * N), -7.0f);
            t->gemm(M, N, K, A.data(), K, B.data(), trans_b ? K : N, trans_b, C.data(), N, ep);
            CHECK(close(C, ref, 2e-4f * std::sqrt(float(K)), "gemm", t->name));
        }
    }
}

TEST_CASE(gemm_respects_ldc_and_empty_k) {
    for (const KernelTable* t : tables()) {
        // C is a 5x7 window of a 5x10 buffer: the 3 columns outside it must stay untouched.
        auto A = rand_vec(5 * 3), B = rand_vec(3 * 7);
        std::vector<float> C(50, 42.0f);
        t->gemm(5, 7, 3, A.data(), 3, B.data(), 7, false, C.data(), 10, Epilogue{});
        for (int i = 0; i < 5; ++i) {
            for (int j = 7; j < 10; ++j) CHECK(C[static_cast<size_t>(i * 10 + j)] == 42.0f);
        }
        std::vector<float> bias = {1.0f, -2.0f};
        Epilogue ep;
        ep.bias = bias.data();
        ep.act = Activation::Relu;
        std::vector<float> D(4, 9.0f);
        t->gemm(2, 2, 0, A.data(), 1, B.data(), 2, false, D.data(), 2, ep);
        CHECK(D[0] == 1.0f && D[1] == 0.0f && D[2] == 1.0f && D[3] == 0.0f);
    }
}

TEST_CASE(conv2d_variants_match_reference) {
    struct Case { Layout layout; int64_t N, C, H, W, O, K, stride, pad, dil, groups; };
    const Case cases[] = {
        {Layout::NCHW, 1, 5, 6, 7, 3, 3, 1, 1, 1, 1},   {Layout::NHWC, 1, 5, 6, 7, 3, 3, 1, 1, 1, 1},
        {Layout::NCHW, 2, 25, 7, 5, 25, 3, 2, 1, 1, 25}, {Layout::NHWC, 2, 25, 7, 5, 25, 3, 2, 1, 1, 25},
        {Layout::NCHW, 1, 25, 9, 9, 25, 3, 1, 1, 1, 25}, {Layout::NHWC, 1, 25, 9, 9, 25, 3, 1, 2, 2, 25},
        {Layout::NCHW, 2, 24, 5, 6, 17, 1, 1, 0, 1, 1},  {Layout::NHWC, 2, 24, 5, 6, 17, 1, 1, 0, 1, 1},
        {Layout::NCHW, 1, 6, 11, 13, 9, 5, 3, 2, 1, 3},  {Layout::NHWC, 1, 6, 11, 13, 9, 5, 3, 2, 1, 3},
        {Layout::NCHW, 1, 4, 8, 8, 8, 3, 1, 1, 1, 4},    {Layout::NCHW, 1, 3, 33, 35, 33, 3, 2, 1, 1, 1},
        {Layout::NCHW, 1, 7, 6, 7, 5, 1, 2, 0, 1, 1},    {Layout::NHWC, 1, 7, 6, 7, 5, 1, 2, 0, 1, 1},
        {Layout::NCHW, 2, 5, 9, 8, 7, 3, 1, 2, 2, 1},    {Layout::NCHW, 1, 32, 16, 16, 64, 3, 1, 1, 1, 1},
        {Layout::NCHW, 1, 6, 5, 7, 4, 5, 1, 0, 1, 2},
    };
    int which = 0;
    for (const Case& c : cases) {
        Conv2DParams p;
        p.layout = c.layout;
        p.N = c.N; p.C = c.C; p.H = c.H; p.W = c.W; p.O = c.O; p.KH = p.KW = c.K;
        p.stride_h = p.stride_w = c.stride;
        p.pad_top = p.pad_left = c.pad;
        p.dilation_h = p.dilation_w = c.dil;
        p.groups = c.groups;
        const int64_t ke = (c.K - 1) * c.dil + 1;
        p.OH = (c.H + 2 * c.pad - ke) / c.stride + 1;
        p.OW = (c.W + 2 * c.pad - ke) / c.stride + 1;
        auto x = rand_vec(p.N * p.C * p.H * p.W), w = rand_vec(p.O * (p.C / p.groups) * p.KH * p.KW);
        auto bias = rand_vec(p.O);
        p.ep = epilogue(which, which % 2 ? bias.data() : nullptr);
        ++which;
        if (p.ep.act == Activation::Sigmoid || p.ep.act == Activation::Tanh) p.ep.act = Activation::Relu6;
        std::vector<float> ref(static_cast<size_t>(p.N * p.O * p.OH * p.OW));
        conv2d_reference(p, x.data(), w.data(), ref.data());
        for (const KernelTable* t : tables()) {
            std::vector<float> y(ref.size(), -7.0f);
            t->conv2d(p, x.data(), w.data(), y.data());
            CHECK(close(y, ref, 1e-4f, "conv2d", t->name));
        }
    }
}

TEST_CASE(pool_variants_match_generic) {
    for (int iter = 0; iter < 40; ++iter) {
        Pool2DParams p;
        p.layout = iter % 2 ? Layout::NHWC : Layout::NCHW;
        p.is_max = iter % 4 < 2;
        p.count_include_pad = iter % 8 >= 4;
        p.N = 1 + iter % 2; p.C = 1 + iter % 25; p.H = 5 + iter % 7; p.W = 6 + iter % 5;
        p.KH = 1 + iter % 3; p.KW = 1 + (iter / 3) % 3;
        p.stride_h = 1 + iter % 2; p.stride_w = 1 + (iter / 2) % 3;
        p.pad_top = p.pad_left = (p.KH > 1 && p.KW > 1 && iter % 5 != 0) ? 1 : 0;
        p.pad_bottom = p.pad_right = p.pad_top;
        p.OH = (p.H + 2 * p.pad_top - p.KH) / p.stride_h + 1;
        p.OW = (p.W + 2 * p.pad_left - p.KW) / p.stride_w + 1;
        if (iter % 10 == 9) {  // global
            p.KH = p.H; p.KW = p.W; p.OH = p.OW = 1; p.stride_h = p.stride_w = 1;
            p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 0;
        }
        auto x = rand_vec(p.N * p.C * p.H * p.W);
        std::vector<float> ref(static_cast<size_t>(p.N * p.C * p.OH * p.OW));
        kernel_table_generic()->pool2d(p, x.data(), ref.data());
        for (const KernelTable* t : tables()) {
            std::vector<float> y(ref.size(), -7.0f);
            t->pool2d(p, x.data(), y.data());
            CHECK(close(y, ref, 1e-5f, "pool2d", t->name));
        }
    }
}

TEST_CASE(elementwise_variants_match_generic) {
    for (int64_t n : {1, 7, 8, 9, 25, 1000}) {
        auto a = rand_vec(n, 3.0f), b = rand_vec(n, 3.0f);
        for (auto& v : b) v = std::fabs(v) + 0.5f;
        for (int op = 0; op < 4; ++op) {
            for (int steps = 0; steps < 3; ++steps) {
                const int64_t as = steps == 2 ? 0 : 1, bs = steps == 1 ? 0 : 1;
                std::vector<float> ref(static_cast<size_t>(n));
                binary_generic(static_cast<BinaryOp>(op), a.data(), as, b.data(), bs, ref.data(), n);
                for (const KernelTable* t : tables()) {
                    std::vector<float> y(ref.size());
                    t->binary(static_cast<BinaryOp>(op), a.data(), as, b.data(), bs, y.data(), n);
                    CHECK(close(y, ref, 1e-6f, "binary", t->name));
                }
            }
        }
        for (int act = 0; act < 7; ++act) {
            const Epilogue e = epilogue(act, nullptr);
            std::vector<float> ref(static_cast<size_t>(n));
            activation_apply_generic(a.data(), ref.data(), n, e);
            for (const KernelTable* t : tables()) {
                std::vector<float> y(ref.size());
                t->activation_apply(a.data(), y.data(), n, e);
                CHECK(close(y, ref, 2e-6f, "activation", t->name));
            }
        }
    }
    for (int64_t outer : {1, 3}) {
        for (int64_t axis : {1, 5, 8, 17, 100}) {
            for (int64_t inner : {1, 3, 9}) {
                auto x = rand_vec(outer * axis * inner, 10.0f);
                std::vector<float> ref(x.size());
                softmax_generic(x.data(), ref.data(), outer, axis, inner);
                for (const KernelTable* t : tables()) {
                    std::vector<float> y(ref.size());
                    t->softmax(x.data(), y.data(), outer, axis, inner);
                    CHECK(close(y, ref, 1e-5f, "softmax", t->name));
                }
            }
        }
    }
}

TEST_CASE(thread_pool_concurrent_callers_and_nesting) {
    set_num_threads(3);
    std::atomic<int64_t> total{0};
    std::vector<std::thread> callers;
    for (int c = 0; c < 6; ++c) {
        callers.emplace_back([&] {
            for (int r = 0; r < 200; ++r) {
                parallel_for(17, [&](int64_t t) {
                    parallel_for(3, [&](int64_t) { total.fetch_add(1); });  // nested: inline
                    total.fetch_add(t);
                });
            }
        });
    }
    for (auto& t : callers) t.join();
    CHECK(total.load() == 6 * 200 * (17 * 3 + 17 * 16 / 2));
    CHECK_THROWS(parallel_for(8, [](int64_t t) { if (t == 5) throw InvalidArgument("task 5 failed"); }),
                 InvalidArgument, "task 5 failed");
    CHECK_THROWS(set_num_threads(0), InvalidArgument, "thread count 0");
    set_num_threads(2);
    CHECK(num_threads() == 2);
}

TEST_CASE(isa_selection_errors_are_clear) {
    CHECK_THROWS(kernels_select("sse9"), InvalidArgument, "is not one of generic");
    if (kernel_table(Isa::Neon) == nullptr) {
        CHECK_THROWS(kernels_select("neon"), InvalidArgument, "'neon' is not available");
    }
    kernels_select("generic");
    CHECK(std::string(kernels().name) == "generic");
}

TEST_MAIN()
