// SPDX-License-Identifier: Apache-2.0
// Single-precision matrix multiply with a fused bias + activation epilogue.
#pragma once

#include <cstdint>

#include "kernels/activation.h"

namespace pyengine {

// C[M,N] = A[M,K] * B + bias, then activation. A is row-major with leading dimension lda;
// B is [K,N] with leading dimension ldb, or [N,K] when trans_b. Dispatches on the ISA in use.
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep);

// The portable reference, always built.
void gemm_generic(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep);

}  // namespace pyengine
