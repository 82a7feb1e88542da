// SPDX-License-Identifier: Apache-2.0
#include "kernels/gemm.h"

#include <vector>

#include "runtime/dispatch.h"

namespace pyengine {

void gemm_generic(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep) {
    for (int64_t i = 0; i < M; ++i) {
        float* c = C + i * ldc;
        for (int64_t j = 0; j < N; ++j) c[j] = 0.0f;
        const float* a = A + i * lda;
        if (trans_b) {
            for (int64_t j = 0; j < N; ++j) {
                const float* b = B + j * ldb;
                float s = 0.0f;
                for (int64_t k = 0; k < K; ++k) s += a[k] * b[k];
                c[j] = s;
            }
        } else {
            // i-k-j order walks B and C by rows, which the compiler vectorizes.
            for (int64_t k = 0; k < K; ++k) {
                const float av = a[k];
                const float* b = B + k * ldb;
                for (int64_t j = 0; j < N; ++j) c[j] += av * b[j];
            }
        }
        for (int64_t j = 0; j < N; ++j) {
            float v = c[j] + (ep.bias ? ep.bias[j] : 0.0f);
            c[j] = activate(v, ep);
        }
    }
}

void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep) {
    kernels().gemm(M, N, K, A, lda, B, ldb, trans_b, C, ldc, ep);
}

}  // namespace pyengine
