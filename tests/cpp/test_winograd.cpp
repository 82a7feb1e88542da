// SPDX-License-Identifier: Apache-2.0
// Winograd F(4x4, 3x3) in the blocked layout against the generic direct blocked kernel: every
// compiled variant (generic at blocks 4, 8 and 16; AVX2, AVX-512 or NEON where this build and
// CPU have them) on odd sizes and tails (H and W not multiples of 4, channel counts not
// multiples of the block, asymmetric padding), batch > 1, bias, residual and activations, on
// one thread and split over two; and the rule and the mode switch.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common.h"
#include "kernels/conv_nchwc.h"
#include "kernels/conv_winograd.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"
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

struct Geometry {
    int64_t N, C, O, H, W, pad_top, pad_left, pad_bottom, pad_right;
};

Conv2DParams params(const Geometry& g, Activation act) {
    Conv2DParams p;
    p.layout = Layout::NCHW;
    p.N = g.N; p.C = g.C; p.H = g.H; p.W = g.W; p.O = g.O;
    p.KH = p.KW = 3;
    p.stride_h = p.stride_w = p.dilation_h = p.dilation_w = 1;
    p.groups = 1;
    p.pad_top = g.pad_top;
    p.pad_left = g.pad_left;
    p.OH = g.H + g.pad_top + g.pad_bottom - 2;
    p.OW = g.W + g.pad_left + g.pad_right - 2;
    p.ep.act = act;
    p.ep.alpha = 0.1f;
    return p;
}

// One blocked convolution (block cb) of plain NCHW x with OIHW w: direct through the generic
// kernel, or Winograd through `wino`; returns the plain output and checks padded lanes are finite.
std::vector<float> run(NchwcWinogradKernel wino, int oc_tile, int cb, const Conv2DParams& p, const std::vector<float>& x,
                       const std::vector<float>& w, const std::vector<float>& bias, const std::vector<float>* residual,
                       bool* finite) {
    NchwcConv c;
    c.p = p;
    c.cb = cb;
    c.in_block = cb;
    CHECK(nchwc_conv_setup(&c));
    CHECK(winograd_eligible(c));
    const std::vector<float> wb = wino != nullptr ? winograd_pack_weights(c, w.data()) : nchwc_pack_conv_weights(c, w.data());
    c.w = wb.data();
    std::vector<float> bb(static_cast<size_t>((p.O + cb - 1) / cb * cb), 0.0f);
    std::copy(bias.begin(), bias.end(), bb.begin());
    c.bias = bb.data();
    std::vector<float> xb(static_cast<size_t>(nchwc_numel(p.N, p.C, p.H * p.W, cb)));
    nchwc_reorder(x.data(), xb.data(), p.N, p.C, p.H * p.W, cb, true);
    const int64_t ny = nchwc_numel(p.N, p.O, p.OH * p.OW, cb);
    std::vector<float> rb;
    if (residual != nullptr) {
        rb.resize(static_cast<size_t>(ny));
        nchwc_reorder(residual->data(), rb.data(), p.N, p.O, p.OH * p.OW, cb, true);
        c.residual = rb.data();
    }
    std::vector<float> yb(static_cast<size_t>(ny), NAN);
    if (wino != nullptr) {
        conv_winograd_run(wino, oc_tile, c, xb.data(), yb.data());
    } else {
        conv_nchwc_run(conv_nchwc_generic(cb), 1, c, xb.data(), yb.data());
    }
    *finite = std::all_of(yb.begin(), yb.end(), [](float v) { return std::isfinite(v); });
    std::vector<float> y(static_cast<size_t>(p.N * p.O * p.OH * p.OW));
    nchwc_reorder(yb.data(), y.data(), p.N, p.O, p.OH * p.OW, cb, false);
    return y;
}

}  // namespace

TEST_CASE(winograd_matches_direct) {
    struct Variant { std::string name; NchwcWinogradKernel kernel; int cb, oc_tile; };
    std::vector<Variant> variants;
    for (int cb : {4, 8, 16}) variants.push_back({str("generic/", cb), conv_winograd_generic(cb), cb, 1});
    for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon}) {
        if (const KernelTable* t = kernel_table(isa)) variants.push_back({t->name, t->conv_winograd, t->nchwc_block, t->nchwc_oc_tile});
    }
    // {N, C, O, H, W, pads top, left, bottom, right}
    const Geometry geoms[] = {
        {1, 3, 5, 5, 6, 1, 1, 1, 1},      {2, 17, 35, 9, 7, 1, 1, 1, 1},   {1, 35, 17, 10, 13, 0, 0, 0, 0},
        {2, 25, 40, 11, 11, 1, 1, 1, 1},  {1, 8, 16, 3, 4, 0, 0, 0, 0},    {1, 5, 7, 1, 1, 1, 1, 1, 1},
        {1, 19, 21, 7, 9, 1, 0, 0, 2},    {1, 16, 16, 8, 8, 2, 2, 2, 2},
        // Big enough to split over two threads: by tiles, and by output blocks (few tiles).
        {1, 64, 48, 23, 19, 1, 1, 1, 1},  {1, 70, 130, 6, 6, 1, 1, 1, 1}};
    const Activation acts[] = {Activation::Relu, Activation::None, Activation::Tanh, Activation::Silu};
    size_t gi = 0;
    for (const Geometry& g : geoms) {
        ++gi;
        const Activation act = acts[gi % 4];
        const Conv2DParams p = params(g, act);
        // He-scaled weights, as a trained layer has.
        const float scale = std::sqrt(6.0f / static_cast<float>(9 * g.C));
        auto x = randoms(static_cast<size_t>(p.N * p.C * p.H * p.W), -1.0f, 1.0f, 21);
        auto w = randoms(static_cast<size_t>(p.O * p.C * 9), -scale, scale, 22);
        auto bias = randoms(static_cast<size_t>(p.O), -0.2f, 0.2f, 23);
        auto res = randoms(static_cast<size_t>(p.N * p.O * p.OH * p.OW), -1.0f, 1.0f, 24);
        for (int threads : {1, 2}) {
            set_num_threads(threads);
            for (int with_res = 0; with_res < 2; ++with_res) {
                const std::vector<float>* r = with_res ? &res : nullptr;
                for (const Variant& v : variants) {
                    bool finite = false;
                    const auto want = run(nullptr, 1, v.cb, p, x, w, bias, r, &finite);
                    const auto got = run(v.kernel, v.oc_tile, v.cb, p, x, w, bias, r, &finite);
                    CHECK(finite);
                    float peak = 0.0f;
                    for (float e : want) peak = std::max(peak, std::fabs(e));
                    // Relative to the layer's largest output: Winograd's error is relative to
                    // the magnitudes of the tile, not to each (possibly tiny) output.
                    bool ok = got.size() == want.size();
                    for (size_t i = 0; ok && i < want.size(); ++i) {
                        if (!(std::fabs(got[i] - want[i]) <= 1e-5f * peak + 1e-4f * std::fabs(want[i]))) {
                            std::printf("  %s N=%lld C=%lld O=%lld %lldx%lld threads=%d residual=%d: element %zu is %.9g, direct %.9g\n",
                                        v.name.c_str(), (long long)g.N, (long long)g.C, (long long)g.O, (long long)g.H,
                                        (long long)g.W, threads, with_res, i, got[i], want[i]);
                            ok = false;
                        }
                    }
                    CHECK(ok);
                }
            }
        }
    }
    set_num_threads(1);
}

TEST_CASE(winograd_rule_and_mode) {
    NchwcConv c;
    c.p = params({1, 64, 64, 56, 56, 1, 1, 1, 1}, Activation::None);
    c.cb = c.in_block = 16;
    CHECK(nchwc_conv_setup(&c));
    CHECK(winograd_eligible(c));
    CHECK(!winograd_pick(c, WinogradMode::Off));
    CHECK(winograd_pick(c, WinogradMode::Always));
    CHECK(winograd_pick(c, WinogradMode::Auto));
    // The rule: large weights need 8 tiles per call (ResNet's 7x7 stage at batch 1 stays
    // direct, at batch 2 not); small ones (C*O <= 16384) pay for themselves on one tile.
    NchwcConv deep = c;
    deep.p = params({1, 512, 512, 7, 7, 1, 1, 1, 1}, Activation::None);
    CHECK(!winograd_pick(deep, WinogradMode::Auto));
    CHECK(winograd_pick(deep, WinogradMode::Always));
    deep.p.N = 2;
    CHECK(winograd_pick(deep, WinogradMode::Auto));
    NchwcConv small = c;
    small.p = params({1, 64, 64, 4, 4, 1, 1, 1, 1}, Activation::None);
    CHECK(winograd_pick(small, WinogradMode::Auto));
    NchwcConv strided = c;
    strided.p.stride_h = strided.p.stride_w = 2;
    CHECK(!winograd_eligible(strided));
    CHECK(!winograd_pick(strided, WinogradMode::Always));
    NchwcConv plain = c;  // a plain NCHW input (the first convolution) stays direct
    plain.in_block = 1;
    CHECK(!winograd_eligible(plain));
    setenv("PYENGINE_WINOGRAD", "0", 1);
    CHECK(winograd_mode() == WinogradMode::Off);
    setenv("PYENGINE_WINOGRAD", "1", 1);
    CHECK(winograd_mode() == WinogradMode::Always);
    setenv("PYENGINE_WINOGRAD", "fast", 1);
    CHECK_THROWS(winograd_mode(), InvalidArgument, "PYENGINE_WINOGRAD='fast'");
    unsetenv("PYENGINE_WINOGRAD");
    CHECK(winograd_mode() == WinogradMode::Auto);
}

TEST_MAIN()
