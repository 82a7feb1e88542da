// SPDX-License-Identifier: Apache-2.0
// Channel ops in the blocked layout. Gathers (kernels/channel_gather.h): shuffles, concats,
// slices and random maps on channel counts that are not multiples of the block, through the
// generic kernel of every block and each variant's own kernel, against the same map applied to
// plain NCHW. Per-channel binary ops and affine maps (kernels/nchwc_channel.h): every variant
// against the generic kernel of its block, on pixel counts with odd tails.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "kernels/channel_gather.h"
#include "kernels/conv_nchwc.h"
#include "kernels/nchwc_channel.h"
#include "kernels/dispatch.h"
#include "test_util.h"

using namespace pyengine;

namespace {

using Map = std::vector<std::pair<int, int64_t>>;

struct Case {
    std::string name;
    std::vector<int64_t> in_channels;
    Map map;
};

std::vector<Case> cases() {
    std::vector<Case> out;
    auto shuffle = [](int64_t C, int64_t g) {
        Map m;
        for (int64_t c = 0; c < C; ++c) m.emplace_back(0, (c % g) * (C / g) + c / g);
        return m;
    };
    out.push_back({"shuffle 58 / 2", {58}, shuffle(58, 2)});
    out.push_back({"shuffle 27 / 3", {27}, shuffle(27, 3)});
    Map concat;
    const int64_t sizes[] = {13, 7, 22};
    for (int i = 0; i < 3; ++i) {
        for (int64_t c = 0; c < sizes[i]; ++c) concat.emplace_back(i, c);
    }
    out.push_back({"concat 13+7+22", {13, 7, 22}, concat});
    Map slice;
    for (int64_t c = 5; c < 40; ++c) slice.emplace_back(0, c);
    out.push_back({"slice 5..40 of 45", {45}, slice});
    out.push_back({"copy 32", {32}, Map{}});
    for (int64_t c = 0; c < 32; ++c) out.back().map.emplace_back(0, c);
    // Every lane from anywhere: blocks of more than four parts (the merging path).
    std::mt19937 rng(5);
    Map any;
    for (int64_t c = 0; c < 37; ++c) {
        const int i = static_cast<int>(rng() % 2);
        any.emplace_back(i, static_cast<int64_t>(rng() % (i == 0 ? 41 : 19)));
    }
    out.push_back({"random 37 from 41+19", {41, 19}, any});
    return out;
}

// Runs `c` with block cb and `kernel` over N x HW images; returns the output in plain NCHW.
std::vector<float> run_blocked(const Case& c, int cb, NchwcGatherKernel kernel, int64_t N, int64_t HW,
                               const std::vector<std::vector<float>>& plain_in) {
    std::vector<std::vector<float>> blocked;
    std::vector<const float*> ptrs;
    for (size_t i = 0; i < plain_in.size(); ++i) {
        blocked.emplace_back(static_cast<size_t>(nchwc_numel(N, c.in_channels[i], HW, cb)));
        nchwc_reorder(plain_in[i].data(), blocked.back().data(), N, c.in_channels[i], HW, cb, true);
    }
    for (const auto& b : blocked) ptrs.push_back(b.data());
    const int64_t C = static_cast<int64_t>(c.map.size());
    std::vector<float> y(static_cast<size_t>(nchwc_numel(N, C, HW, cb)), NAN);
    const NchwcGatherMap m = nchwc_gather_compile(c.map, cb);
    nchwc_gather(m, ptrs.data(), c.in_channels.data(), static_cast<int>(ptrs.size()), y.data(), N, HW, kernel);
    for (float v : y) {
        if (!std::isfinite(v)) return {};  // padding lanes must be written too
    }
    std::vector<float> plain(static_cast<size_t>(N * C * HW));
    nchwc_reorder(y.data(), plain.data(), N, C, HW, cb, false);
    return plain;
}

}  // namespace

TEST_CASE(channel_gather_matches_plain_map) {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    for (const Case& c : cases()) {
        for (int64_t HW : {1, 7, 30}) {
            const int64_t N = 2, C = static_cast<int64_t>(c.map.size());
            std::vector<std::vector<float>> in;
            for (int64_t ch : c.in_channels) {
                in.emplace_back(static_cast<size_t>(N * ch * HW));
                for (float& v : in.back()) v = d(rng);
            }
            std::vector<float> want(static_cast<size_t>(N * C * HW));
            for (int64_t n = 0; n < N; ++n) {
                for (int64_t o = 0; o < C; ++o) {
                    const auto& s = c.map[static_cast<size_t>(o)];
                    const int64_t Ci = c.in_channels[static_cast<size_t>(s.first)];
                    for (int64_t i = 0; i < HW; ++i) {
                        want[static_cast<size_t>((n * C + o) * HW + i)] =
                            in[static_cast<size_t>(s.first)][static_cast<size_t>((n * Ci + s.second) * HW + i)];
                    }
                }
            }
            std::vector<std::pair<std::string, std::pair<int, NchwcGatherKernel>>> kernels_to_try;
            for (int cb : {4, 8, 16}) kernels_to_try.push_back({str("generic/", cb), {cb, nchwc_gather_generic(cb)}});
            for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon}) {
                if (const KernelTable* t = kernel_table(isa)) kernels_to_try.push_back({t->name, {t->nchwc_block, t->nchwc_gather}});
            }
            for (const auto& k : kernels_to_try) {
                const std::vector<float> got = run_blocked(c, k.second.first, k.second.second, N, HW, in);
                if (got != want) std::printf("  %s, HW=%lld, %s: differs\n", c.name.c_str(), static_cast<long long>(HW), k.first.c_str());
                CHECK(got == want);
            }
        }
    }
}

TEST_CASE(channel_gather_compiles_parts_per_source_block) {
    // A shuffle of 58 channels in blocks of 16: output block 0 takes channels 0..7 and 29..36,
    // which lie in input blocks 0, 1 and 2; every lane is supplied once.
    const NchwcGatherMap m = nchwc_gather_compile(
        [] {
            Map s;
            for (int64_t c = 0; c < 58; ++c) s.emplace_back(0, (c % 2) * 29 + c / 2);
            return s;
        }(),
        16);
    CHECK(m.begin.size() == 5);
    CHECK(m.begin[1] - m.begin[0] == 3);
    for (size_t b = 0; b + 1 < m.begin.size(); ++b) {
        for (int l = 0; l < 16; ++l) {
            int suppliers = 0;
            for (int32_t p = m.begin[b]; p < m.begin[b + 1]; ++p) suppliers += m.parts[static_cast<size_t>(p)].take[l] != 0;
            CHECK(suppliers == (static_cast<int64_t>(b) * 16 + l < 58 ? 1 : 0));
        }
    }
    CHECK(!m.is_copy(0));
}

TEST_CASE(per_channel_kernels_match_generic) {
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> d(-2.0f, 2.0f);
    for (const KernelTable* t : {kernel_table(Isa::Avx2), kernel_table(Isa::Avx512), kernel_table(Isa::Neon),
                                 kernel_table(Isa::Generic)}) {
        if (t == nullptr) continue;
        const int cb = t->nchwc_block;
        for (int64_t HW : {1, 2, 3, 17}) {
            std::vector<float> a(static_cast<size_t>(HW * cb)), v(static_cast<size_t>(cb)), w(v.size());
            for (float& x : a) x = d(rng);
            for (float& x : v) x = d(rng) + 3.0f;  // never 0: Div is exact too
            for (float& x : w) x = d(rng);
            for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) {
                std::vector<float> got(a.size()), want(a.size());
                t->nchwc_binary_channel(op, a.data(), v.data(), got.data(), HW);
                for (int64_t i = 0; i < HW * cb; ++i) {
                    const float p = a[static_cast<size_t>(i)], q = v[static_cast<size_t>(i % cb)];
                    want[static_cast<size_t>(i)] = op == BinaryOp::Add ? p + q : op == BinaryOp::Sub ? p - q
                                                 : op == BinaryOp::Mul ? p * q : p / q;
                }
                CHECK(got == want);
            }
            std::vector<float> got(a.size()), want(a.size());
            t->nchwc_affine(a.data(), v.data(), w.data(), got.data(), HW);
            nchwc_affine_generic(cb)(a.data(), v.data(), w.data(), want.data(), HW);
            for (size_t i = 0; i < got.size(); ++i) {
                if (std::fabs(got[i] - want[i]) > 1e-6f * (1.0f + std::fabs(want[i]))) {
                    std::printf("  %s affine HW=%lld: element %zu is %g, generic gives %g\n", t->name,
                                static_cast<long long>(HW), i, got[i], want[i]);
                    CHECK(false);
                    break;
                }
            }
        }
    }
}

TEST_MAIN()
