// SPDX-License-Identifier: Apache-2.0
// GEMM: the reference loops until the NEON micro-kernel lands.
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/gemm.h"

namespace pyengine {

void gemm_arm_neon(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                   int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep) {
    gemm_generic(M, N, K, A, lda, B, ldb, trans_b, C, ldc, ep);
}

}  // namespace pyengine
