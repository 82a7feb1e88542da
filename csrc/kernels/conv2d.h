// SPDX-License-Identifier: Apache-2.0
// 2-D convolution, NCHW or NHWC, weights always OIHW (I = C / groups).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/activation.h"

namespace pyengine {

enum class Layout : uint8_t { NCHW, NHWC };

struct Conv2DParams {
    Layout layout = Layout::NCHW;
    int64_t N = 0, C = 0, H = 0, W = 0;  // input
    int64_t O = 0, KH = 0, KW = 0;       // output channels, kernel
    int64_t stride_h = 1, stride_w = 1;
    int64_t dilation_h = 1, dilation_w = 1;
    int64_t pad_top = 0, pad_left = 0;   // bottom/right padding is implied by OH/OW
    int64_t OH = 0, OW = 0;
    int64_t groups = 1;
    Epilogue ep;  // bias has O entries
    // Optional: the weights of each group packed for this GEMM micro-kernel (gemm_pack_a of the
    // O/groups x C/groups*KH*KW matrix, groups one after another). Used when the kernel table in
    // use has this micro-kernel; ignored otherwise.
    const float* packed_w = nullptr;
    const struct GemmMicroKernel* packed_w_uk = nullptr;
};

// Dispatches on the ISA in use.
void conv2d(const Conv2DParams& p, const float* x, const float* w, float* y);
// The generic variant: conv2d_run with the generic kernel table.
void conv2d_generic(const Conv2DParams& p, const float* x, const float* w, float* y);
// Plain direct loops, the reference the fast paths are tested against.
void conv2d_reference(const Conv2DParams& p, const float* x, const float* w, float* y);
// Depthwise (groups == C == O) direct convolution of image n, channels [c0, c1); portable.
void depthwise2d_generic(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                         int64_t c0, int64_t c1);

// Per-thread scratch buffer `slot` (0-3) of at least `floats` floats, reused across calls.
// Defined in baseline code so that ISA-specific files need no std::vector of their own.
float* conv_scratch(int slot, size_t floats);

struct KernelTable;
// Packs OIHW weights per group for conv2d_run with micro-kernel `uk` (see packed_w above);
// returns an empty vector when the convolution would not use them (depthwise, NHWC).
std::vector<float> conv2d_pack_weights(const Conv2DParams& p, const struct GemmMicroKernel& uk, const float* w);
// The shared convolution driver: depthwise direct, 1x1 as GEMM, else im2col + GEMM, all
// through the kernels of table `k` (so each ISA's table reuses it with its own GEMM).
void conv2d_run(const KernelTable& k, const Conv2DParams& p, const float* x, const float* w, float* y);

}  // namespace pyengine
