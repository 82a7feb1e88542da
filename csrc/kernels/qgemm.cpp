// SPDX-License-Identifier: Apache-2.0
// Portable int8 GEMM, weight packing, epilogue and quantization (kernels/qgemm.h).
#include "kernels/qgemm.h"

#include <algorithm>
#include <cmath>

namespace pyengine {

void qgemm_pack_b(int64_t K, int64_t N, const int8_t* b, int64_t stride_k, int64_t stride_n, int8_t* out) {
    const int64_t Kp = qgemm_kpad(K);
    for (int64_t nb = 0; nb < N; nb += kQgemmNr) {
        for (int64_t k4 = 0; k4 < Kp; k4 += 4) {
            for (int64_t j = 0; j < kQgemmNr; ++j) {
                for (int64_t kk = 0; kk < 4; ++kk) {
                    const int64_t k = k4 + kk, n = nb + j;
                    *out++ = k < K && n < N ? b[k * stride_k + n * stride_n] : int8_t(0);
                }
            }
        }
    }
}

void qgemm_generic(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp,
                   int32_t* C, int64_t ldc) {
    for (int64_t nb = 0; nb < N; nb += kQgemmNr) {
        const int8_t* panel = Bp + nb * Kp;
        const int64_t nn = std::min(kQgemmNr, N - nb);
        for (int64_t m = 0; m < M; ++m) {
            const uint8_t* a = A + m * lda;
            int32_t acc[kQgemmNr] = {};
            for (int64_t k4 = 0; k4 < Kp; k4 += 4) {
                const int8_t* b = panel + k4 * kQgemmNr;
                for (int64_t j = 0; j < kQgemmNr; ++j) {
                    acc[j] += int32_t(a[k4]) * b[4 * j] + int32_t(a[k4 + 1]) * b[4 * j + 1] +
                              int32_t(a[k4 + 2]) * b[4 * j + 2] + int32_t(a[k4 + 3]) * b[4 * j + 3];
                }
            }
            std::copy(acc, acc + nn, C + m * ldc + nb);
        }
    }
}

void qepilogue(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, float* y, int64_t y_m,
               int64_t y_n) {
    const float inv_y = 1.0f / e.y_scale;
    for (int64_t n = 0; n < N; ++n) {
        const int32_t offset = (e.bias ? e.bias[n] : 0) - e.x_zero_point * e.wsum[n];
        const float s = e.scale[n];
        float* out = y + n * y_n;
        const int32_t* c = C + n;
        for (int64_t m = 0; m < M; ++m) {
            float v = static_cast<float>(c[m * ldc] + offset) * s;
            v = std::min(std::max(v, e.lo), e.hi);
            if (e.requantize) {
                // One multiply (not a division) per value: requantization is a rescale, as in
                // onnxruntime's QLinearConv; QuantizeLinear itself divides (quantize_value).
                float q = std::nearbyint(v * inv_y) + static_cast<float>(e.y_zero_point);
                q = std::min(std::max(q, static_cast<float>(e.q_lo)), static_cast<float>(e.q_hi));
                v = (q - static_cast<float>(e.y_zero_point)) * e.y_scale;
            }
            out[m * y_m] = v;
        }
    }
}

void quantize_u8(const float* x, int64_t n, float scale, int32_t zero_point, int32_t q_lo, int32_t q_hi,
                 int32_t shift, uint8_t* out) {
    for (int64_t i = 0; i < n; ++i) {
        out[i] = static_cast<uint8_t>(quantize_value(x[i], scale, zero_point, q_lo, q_hi) + shift);
    }
}

}  // namespace pyengine
