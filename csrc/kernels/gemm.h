// SPDX-License-Identifier: Apache-2.0
// Single-precision matrix multiply with a fused bias + activation epilogue.
//
// One packing/blocking driver (gemm_driver, baseline code) serves every instruction set; each
// ISA supplies only a register-tiled micro-kernel (GemmMicroKernel): generic here,
// kernels/x86/gemm_x86_avx2.cpp, later kernels/arm/gemm_arm_neon.cpp.
#pragma once

#include <cstdint>

#include "kernels/activation.h"

namespace pyengine {

// C[M,N] = A[M,K] * B + bias, then activation. A is row-major with leading dimension lda;
// B is [K,N] with leading dimension ldb, or [N,K] when trans_b. Dispatches on the ISA in use.
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep);

// The generic variant: the blocked driver with the portable micro-kernel.
void gemm_generic(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep);

// A register-tiled micro-kernel computing one tile of at most mr x nr elements of C.
struct GemmMicroKernel {
    int mr;  // rows of C per tile
    int nr;  // columns of C per tile
    // C[i, j] (+)= sum_k a[i*a_rs + k*a_cs] * b[k*b_rs + j] for i < m, j < n, k < kc.
    // Columns of b are contiguous. `b` may be read up to nr columns (a packed, zero-padded panel)
    // only when b_padded; otherwise exactly n columns. Rows of `a` beyond m are never read.
    // accumulate: add to C (a later K block) instead of overwriting it.
    // ep (non-null on the last K block): add bias (indexed by row0 + i when ep->bias_per_row,
    // else col0 + j) and apply the activation.
    void (*run)(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                int64_t b_rs, bool b_padded, float* c, int64_t ldc, int m, int n, bool accumulate,
                const Epilogue* ep, int64_t row0, int64_t col0);
    // Optional (nullptr: the driver uses `run`): one row of C over all of K, reading B rows as
    // contiguous runs (GEMV-like; for M = 1-2, where the tile kernel would stride through B).
    // c[j] = sum_k a[k] * b[k*b_rs + j] for j < n, then the epilogue as for `run`. Any n works;
    // up to row_nr columns stay in registers, wider rows stream B row by row (for B beyond L2).
    int row_nr;
    void (*row)(int64_t K, const float* a, const float* b, int64_t b_rs, float* c, int n,
                const Epilogue* ep, int64_t row0, int64_t col0);
};

// The packing, cache-blocking and threading driver shared by every ISA. With packed_b (see
// gemm_pack_b, for uk.nr), B, ldb and trans_b are not read: B is used as packed; likewise A with
// packed_a (gemm_pack_a, for uk.mr): constant weights are packed once, at load.
void gemm_driver(const GemmMicroKernel& uk, int64_t M, int64_t N, int64_t K, const float* A,
                 int64_t lda, const float* B, int64_t ldb, bool trans_b, float* C, int64_t ldc,
                 const Epilogue& ep, const float* packed_b = nullptr, const float* packed_a = nullptr);

// Floats in A packed for a micro-kernel of height mr: ceil(M / mr) panels of K columns x mr rows.
size_t gemm_packed_a_size(int mr, int64_t M, int64_t K);
// Packs row-major A [M,K] in that layout, zero-padding the last panel.
void gemm_pack_a(int mr, int64_t M, int64_t K, const float* A, int64_t lda, float* dst);

// Floats in B packed for a micro-kernel of width nr: ceil(N / nr) panels of K rows x nr columns.
size_t gemm_packed_b_size(int nr, int64_t K, int64_t N);
// Packs B ([K,N], or [N,K] when trans_b) in that layout, zero-padding the last panel.
void gemm_pack_b(int nr, int64_t K, int64_t N, const float* B, int64_t ldb, bool trans_b, float* dst);

// The portable micro-kernel (4x8, plain C the compiler vectorizes for the baseline ISA).
const GemmMicroKernel& gemm_micro_generic();

}  // namespace pyengine
