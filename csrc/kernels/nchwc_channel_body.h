// SPDX-License-Identifier: Apache-2.0
// The per-channel blocked kernels (kernels/nchwc_channel.h) over GCC/Clang vector types of one
// block, compiled by kernels/nchwc_channel.cpp (generic, blocks 4/8/16) and by each variant's
// file for its own block (internal linkage).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/nchwc_channel.h"

namespace pyengine {
namespace {

template <int CB, class F>
inline __attribute__((always_inline)) void nchwc_channel_loop(const float* a, const float* v, float* y, int64_t HW,
                                                              F f) {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    V b;
    std::memcpy(&b, v, sizeof(V));
    int64_t i = 0;
    for (; i + 2 <= HW; i += 2) {  // two vectors a step: loads in flight while one computes
        V x0, x1;
        std::memcpy(&x0, a + i * CB, sizeof(V));
        std::memcpy(&x1, a + (i + 1) * CB, sizeof(V));
        f(x0, b);
        f(x1, b);
        std::memcpy(y + i * CB, &x0, sizeof(V));
        std::memcpy(y + (i + 1) * CB, &x1, sizeof(V));
    }
    for (; i < HW; ++i) {
        V x0;
        std::memcpy(&x0, a + i * CB, sizeof(V));
        f(x0, b);
        std::memcpy(y + i * CB, &x0, sizeof(V));
    }
}

template <int CB>
void nchwc_binary_channel_body(BinaryOp op, const float* a, const float* v, float* y, int64_t HW) {
    switch (op) {
        case BinaryOp::Add: nchwc_channel_loop<CB>(a, v, y, HW, [](auto& x, const auto& b) { x += b; }); break;
        case BinaryOp::Sub: nchwc_channel_loop<CB>(a, v, y, HW, [](auto& x, const auto& b) { x -= b; }); break;
        case BinaryOp::Mul: nchwc_channel_loop<CB>(a, v, y, HW, [](auto& x, const auto& b) { x *= b; }); break;
        // The layout pass never plans Div blocked (a padded lane of v may be 0); kept exact.
        case BinaryOp::Div: nchwc_channel_loop<CB>(a, v, y, HW, [](auto& x, const auto& b) { x /= b; }); break;
    }
}

template <int CB>
void nchwc_affine_body(const float* x, const float* scale, const float* shift, float* y, int64_t HW) {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    V t;
    std::memcpy(&t, shift, sizeof(V));
    nchwc_channel_loop<CB>(x, scale, y, HW, [&t](auto& p, const auto& s) { p = p * s + t; });
}

}  // namespace
}  // namespace pyengine
