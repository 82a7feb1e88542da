// SPDX-License-Identifier: Apache-2.0
// The channel-gather kernel (kernels/channel_gather.h) over GCC/Clang vector types of one
// block, so one body serves every variant: kernels/channel_gather.cpp (generic, blocks
// 4/8/16), x86/channel_gather_x86_avx2.cpp (8), x86/channel_gather_x86_avx512.cpp (16) and
// arm/channel_gather_arm_neon.cpp (4) compile it for their own instruction set (internal
// linkage). GCC's __builtin_shuffle with a run-time index vector becomes one vpermps (AVX2,
// AVX-512) or tbl (NEON); elsewhere the lanes are picked one by one.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/channel_gather.h"

namespace pyengine {
namespace {

template <int CB>
struct GatherVec {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    typedef int32_t VI __attribute__((vector_size(CB * sizeof(float))));
};

// v's lanes picked by idx, into r (by reference: a vector by value or as the result would
// change the ABI of the generic build).
template <int CB>
inline __attribute__((always_inline)) void gather_permute(const typename GatherVec<CB>::V& v,
                                                          const typename GatherVec<CB>::VI& idx,
                                                          typename GatherVec<CB>::V& r) {
#if defined(__GNUC__) && !defined(__clang__)
    r = __builtin_shuffle(v, idx);
#else
    for (int l = 0; l < CB; ++l) r[l] = v[idx[l] & (CB - 1)];
#endif  // defined(__GNUC__) && !defined(__clang__)
}

// P parts (held in registers) merged into each output vector; `merge` starts from what y
// holds (the parts of a block with more than one group of P), else from zero.
template <int CB, int P>
void gather_parts(const NchwcGatherPart* parts, const float* const* srcs, float* y, int64_t HW, bool merge) {
    typedef typename GatherVec<CB>::V V;
    typedef typename GatherVec<CB>::VI VI;
    VI idx[P], take[P];
    const float* s[P];
    for (int k = 0; k < P; ++k) {
        std::memcpy(&idx[k], parts[k].lane, sizeof(VI));
        std::memcpy(&take[k], parts[k].take, sizeof(VI));
        s[k] = srcs[parts[k].input] + static_cast<int64_t>(parts[k].src_block) * HW * CB;
    }
    for (int64_t i = 0; i < HW; ++i) {
        V acc = V{} + 0.0f;
        if (merge) std::memcpy(&acc, y + i * CB, sizeof(V));
        for (int k = 0; k < P; ++k) {
            V v;
            std::memcpy(&v, s[k] + i * CB, sizeof(V));
            V picked;
            gather_permute<CB>(v, idx[k], picked);
            acc = take[k] != 0 ? picked : acc;
        }
        std::memcpy(y + i * CB, &acc, sizeof(V));
    }
}

template <int CB>
void nchwc_gather_body(const NchwcGatherPart* parts, int n_parts, const float* const* srcs, float* y, int64_t HW) {
    if (n_parts == 0) {
        std::memset(y, 0, static_cast<size_t>(HW * CB) * sizeof(float));
        return;
    }
    for (int p0 = 0; p0 < n_parts; p0 += 4) {
        const bool merge = p0 > 0;
        switch (n_parts - p0 < 4 ? n_parts - p0 : 4) {
            case 1: gather_parts<CB, 1>(parts + p0, srcs, y, HW, merge); break;
            case 2: gather_parts<CB, 2>(parts + p0, srcs, y, HW, merge); break;
            case 3: gather_parts<CB, 3>(parts + p0, srcs, y, HW, merge); break;
            default: gather_parts<CB, 4>(parts + p0, srcs, y, HW, merge); break;
        }
    }
}

}  // namespace
}  // namespace pyengine
