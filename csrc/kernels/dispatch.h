// SPDX-License-Identifier: Apache-2.0
// Kernel dispatch: one table of function pointers per instruction set, chosen once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/activation.h"
#include "kernels/channel_gather.h"
#include "kernels/conv2d.h"
#include "kernels/conv_nchwc.h"
#include "kernels/conv_winograd.h"
#include "kernels/elementwise.h"
#include "kernels/erf.h"
#include "kernels/gemm.h"
#include "kernels/nchwc_channel.h"
#include "kernels/pool.h"
#include "kernels/qgemm.h"

namespace pyengine {

enum class Isa { Generic, Avx2, Avx512, Neon };

// Every kernel that has ISA-specific variants goes through this table. A new kernel is a field
// here, set in kernels/generic.cpp; vector tables start from the generic one and override it.
struct KernelTable {
    Isa isa;
    const char* name;
    // C[M,N] = A[M,K] * B (+bias, activation). B is [K,N] (ldb), or [N,K] with trans_b.
    void (*gemm)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep);
    void (*conv2d)(const Conv2DParams& p, const float* x, const float* w, float* y);
    // Depthwise (groups == C == O) direct convolution of image n, channels [c0, c1).
    void (*depthwise2d)(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                        int64_t c0, int64_t c1);
    void (*pool2d)(const Pool2DParams& p, const float* x, float* y);
    void (*activation_apply)(const float* x, float* y, int64_t n, const Epilogue& ep);
    // y[i] = a[i*a_step] op b[i*b_step], steps 0 or 1.
    void (*binary)(BinaryOp op, const float* a, int64_t a_step, const float* b, int64_t b_step,
                   float* y, int64_t n);
    // Softmax over the middle axis of [outer, axis, inner].
    void (*softmax)(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner);
    // y = erf(x), or GELU with `gelu` (kernels/erf.h).
    void (*erf_apply)(const float* x, float* y, int64_t n, bool gelu);
    // The GEMM micro-kernel behind `gemm`, for callers that pack B themselves (convolution).
    const GemmMicroKernel* gemm_uk;
    // The blocked layout (kernels/conv_nchwc.h): the block this variant's kernel is built for
    // (its vector width), the kernel, and how many output blocks one of its tiles covers.
    int nchwc_block;
    NchwcConvKernel conv_nchwc;
    int nchwc_oc_tile;
    // Channel gathers (concat, slice, shuffle) of blocked tensors, for block nchwc_block.
    NchwcGatherKernel nchwc_gather;
    // Per-channel binary op and affine map on one block of one image (kernels/nchwc_channel.h).
    NchwcBinaryChannelKernel nchwc_binary_channel;
    NchwcAffineKernel nchwc_affine;
    // Winograd F(4x4, 3x3) in that layout (kernels/conv_winograd.h); its GEMM tiles also cover
    // nchwc_oc_tile output blocks.
    NchwcWinogradKernel conv_winograd;
    // int8: the u8 x s8 GEMM on packed weights (kernels/qgemm.h) and the path it takes
    // ("amx", "avx512-vnni", "avx-vnni", "avx2", "neon-dot", "neon", "generic"), which `pyengine info` shows.
    QgemmFn qgemm;
    const char* qgemm_name;
    // The depthwise int8 convolution over a run of pixels (kernels/qgemm.h qdw_row).
    void (*qdw_row)(const uint8_t* const* tap_x, int64_t taps, int64_t pix_step, const int16_t* w, int64_t C,
                    int64_t n, int32_t* acc);
    // ... and its 3x3 stride-1 "same" case over whole output rows (kernels/qgemm.h qdw3x3s1), or
    // nullptr where the variant has none (qdw_row serves).
    Qdw3x3s1Fn qdw3x3s1;
    // x (n floats) to u8 codes (kernels/qgemm.h quantize_u8, same results).
    void (*quantize_u8)(const float* x, int64_t n, float scale, int32_t zero_point, int32_t q_lo, int32_t q_hi,
                        int32_t shift, uint8_t* out);
    // ... and strided rows of them (kernels/qgemm.h quantize_u8_rows).
    void (*quantize_u8_rows)(const float* x, int64_t rows, int64_t width, int64_t x_stride, float scale,
                             int32_t zero_point, int32_t q_lo, int32_t q_hi, int32_t shift, uint8_t* out,
                             int64_t out_stride);
    // int32 sums to float outputs (kernels/qgemm.h qepilogue, same results bit for bit).
    void (*qepilogue)(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, float* y, int64_t y_m,
                      int64_t y_n);
    // ... or to u8 codes (kernels/qgemm.h qepilogue_codes).
    void (*qepilogue_codes)(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, uint8_t* y,
                            int64_t y_m, int32_t shift);
};

// The table in use: PYENGINE_ISA if set (an error if the CPU lacks it), else the best available.
const KernelTable& kernels();
// The table for `isa`, or nullptr when it was not compiled in or the CPU cannot run it.
const KernelTable* kernel_table(Isa isa);
// Switches the table in use (tests compare variants); throws InvalidArgument if unavailable.
void kernels_select(const std::string& isa_name);
// Names of the ISAs usable on this machine, best first.
std::vector<std::string> kernels_available();

// Per-ISA tables, defined by the files that implement them.
const KernelTable* kernel_table_generic();
const KernelTable* kernel_table_avx2();  // nullptr unless compiled with the AVX2 kernels
const KernelTable* kernel_table_avx512();  // nullptr unless compiled with the AVX-512 kernels
const KernelTable* kernel_table_neon();  // nullptr unless compiled with the NEON kernels

}  // namespace pyengine
