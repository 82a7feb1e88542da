// SPDX-License-Identifier: Apache-2.0
// Portable int8 GEMM, weight packing, epilogue and quantization (kernels/qgemm.h).
#include "kernels/qgemm.h"

#include <algorithm>
#include <cmath>
#include <vector>

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

namespace {

// The epilogue's steps, shared by the float and the code epilogues (and mirrored lane by lane
// by the vector variants): a sum's real value (one rounding to float, the scale, the activation
// clamp) and its point on the output grid relative to the zero point, clamped to the output's
// range first, which keeps round_half_even in its exact range and saturates.
struct EpilogueSteps {
    explicit EpilogueSteps(const QEpilogue& epilogue)
        : e(epilogue), inv_y(1.0f / epilogue.y_scale), q_lo(static_cast<float>(epilogue.q_lo - epilogue.y_zero_point)),
          q_hi(static_cast<float>(epilogue.q_hi - epilogue.y_zero_point)) {}
    int32_t offset(int64_t n) const { return (e.bias ? e.bias[n] : 0) - e.x_zero_point * e.wsum[n]; }
    float real(int32_t acc, int32_t off, int64_t n) const {
        return std::min(std::max(static_cast<float>(acc + off) * e.scale[n], e.lo), e.hi);
    }
    // One multiply (not a division) per value: requantization is a rescale, as in onnxruntime's
    // QLinearConv; QuantizeLinear itself divides (quantize_value).
    float grid(float v) const { return round_half_even(std::min(std::max(v * inv_y, q_lo), q_hi)); }

    const QEpilogue& e;
    const float inv_y, q_lo, q_hi;
};

}  // namespace

void qepilogue(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, float* y, int64_t y_m,
               int64_t y_n) {
    // Row by row over contiguous columns (vectorizes), into y directly when its rows are
    // contiguous, else into a tile that is then transposed (NCHW output: y_n = pixels).
    thread_local std::vector<int32_t> offset;
    thread_local std::vector<float> tile;
    const EpilogueSteps steps(e);
    if (offset.size() < static_cast<size_t>(N)) offset.resize(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) offset[static_cast<size_t>(n)] = steps.offset(n);
    const bool direct = y_n == 1;
    if (!direct && tile.size() < static_cast<size_t>(M * N)) tile.resize(static_cast<size_t>(M * N));
    const int32_t* off = offset.data();
    for (int64_t m = 0; m < M; ++m) {
        const int32_t* c = C + m * ldc;
        float* out = direct ? y + m * y_m : tile.data() + m * N;
        if (e.requantize) {
            for (int64_t n = 0; n < N; ++n) out[n] = steps.grid(steps.real(c[n], off[n], n)) * e.y_scale;
        } else {
            for (int64_t n = 0; n < N; ++n) out[n] = steps.real(c[n], off[n], n);
        }
    }
    if (!direct) {
        for (int64_t n = 0; n < N; ++n) {
            float* dst = y + n * y_n;
            const float* src = tile.data() + n;
            for (int64_t m = 0; m < M; ++m) dst[m * y_m] = src[m * N];
        }
    }
}

void qepilogue_codes(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, uint8_t* y,
                     int64_t y_m, int32_t shift) {
    const EpilogueSteps steps(e);
    for (int64_t m = 0; m < M; ++m) {
        const int32_t* c = C + m * ldc;
        uint8_t* out = y + m * y_m;
        for (int64_t n = 0; n < N; ++n) {
            const float q = steps.grid(steps.real(c[n], steps.offset(n), n));
            out[n] = static_cast<uint8_t>(static_cast<int32_t>(q) + e.y_zero_point + shift);
        }
    }
}

void qdw_row(const uint8_t* const* tap_x, int64_t taps, int64_t pix_step, const int16_t* w, int64_t C, int64_t n,
             int32_t* acc) {
    for (int64_t p = 0; p < n; ++p) {
        int32_t* s = acc + p * C;
        std::fill(s, s + C, 0);
        for (int64_t t = 0; t < taps; ++t) {
            const uint8_t* xt = tap_x[t] + p * pix_step;
            const int16_t* wt = w + t * C;
            for (int64_t c = 0; c < C; ++c) s[c] += int32_t(xt[c]) * wt[c];
        }
    }
}

void quantize_u8(const float* x, int64_t n, float scale, int32_t zero_point, int32_t q_lo, int32_t q_hi,
                 int32_t shift, uint8_t* out) {
    for (int64_t i = 0; i < n; ++i) {
        out[i] = static_cast<uint8_t>(quantize_value(x[i], scale, zero_point, q_lo, q_hi) + shift);
    }
}

void quantize_u8_rows(const float* x, int64_t rows, int64_t width, int64_t x_stride, float scale, int32_t zero_point,
                      int32_t q_lo, int32_t q_hi, int32_t shift, uint8_t* out, int64_t out_stride) {
    for (int64_t r = 0; r < rows; ++r) {
        quantize_u8(x + r * x_stride, width, scale, zero_point, q_lo, q_hi, shift, out + r * out_stride);
    }
}

}  // namespace pyengine
