// SPDX-License-Identifier: Apache-2.0
// int8 GEMM (u8 activations x s8 weights, int32 accumulation), its weight packing, the
// requantizing epilogue, and ONNX QuantizeLinear rounding. docs/kernels.md "int8".
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pyengine {

// Packed weights: B[K, N] as [ceil(N/16)][Kp/4][16][4] int8 (Kp = K rounded up to 4), zero
// padded. One layout for every variant: a 64-byte row holds 4 consecutive k of 16 columns,
// which is what vpdpbusd (AVX-512 VNNI), vpmaddwd over widened bytes (AVX2) and sdot (NEON) take.
constexpr int64_t kQgemmNr = 16;
inline int64_t qgemm_kpad(int64_t K) { return (K + 3) / 4 * 4; }
inline size_t qgemm_packed_size(int64_t K, int64_t N) {
    return static_cast<size_t>((N + kQgemmNr - 1) / kQgemmNr * kQgemmNr * qgemm_kpad(K));
}
// Packs B(k, n) = b[k * stride_k + n * stride_n] (both layouts of a weight matrix).
void qgemm_pack_b(int64_t K, int64_t N, const int8_t* b, int64_t stride_k, int64_t stride_n, int8_t* out);

// C[m, n] = sum over k < Kp of A[m * lda + k] * B(k, n), for m < M, n < N (int32, row stride ldc).
// A rows hold Kp bytes (any value past K: the packed B is zero there).
using QgemmFn = void (*)(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp,
                         int32_t* C, int64_t ldc);
void qgemm_generic(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp,
                   int32_t* C, int64_t ldc);

// From the int32 sums to float outputs: per column n,
//   real = (acc - x_zero_point * wsum[n] + bias[n]) * x_scale * w_scale[n]   (the dequantized sum),
// clamped to [lo, hi] (the fused activation), then, when requantizing, rounded onto the output's
// grid: q = saturate(round_half_even(real / y_scale) + y_zero_point), out = (q - y_zero_point) * y_scale.
struct QEpilogue {
    const int32_t* wsum = nullptr;  // [N]: sum over k of the (zero-point-free) weights
    const int32_t* bias = nullptr;  // [N] in units of x_scale * w_scale[n], or nullptr
    const float* scale = nullptr;   // [N]: x_scale * w_scale[n]
    int32_t x_zero_point = 0;       // of the u8 activations
    float lo = -INFINITY, hi = INFINITY;
    bool requantize = false;
    float y_scale = 1.0f;
    int32_t y_zero_point = 0;
    int32_t q_lo = 0, q_hi = 255;   // the output dtype's range

    // The same epilogue for the columns from n on.
    QEpilogue from_column(int64_t n) const {
        QEpilogue e = *this;
        e.wsum += n;
        e.scale += n;
        if (e.bias != nullptr) e.bias += n;
        return e;
    }
};
// Rows [0, M) of C (row stride ldc) to y[m * y_m + n * y_n].
void qepilogue(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, float* y, int64_t y_m,
               int64_t y_n);
// The requantizing epilogue to u8 codes instead: y[m * y_m + n] = q + y_zero_point + shift, the
// code QuantizeLinear on the same grid gives for qepilogue's float (shift: 128 for int8 codes).
void qepilogue_codes(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, uint8_t* y,
                     int64_t y_m, int32_t shift);

// ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point) to [q_lo, q_hi]; NaN gives
// zero_point (ONNX leaves it undefined; onnxruntime gives the zero point too).
// Round half to even for |v| <= 2^22 without a libm call (baseline x86-64 has no roundss):
// adding and subtracting 1.5 * 2^23 leaves the nearest integer under the default rounding mode.
inline float round_half_even(float v) {
    constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
    return (v + kMagic) - kMagic;  // not folded: the build keeps IEEE semantics (no -ffast-math)
}

inline int32_t quantize_value(float x, float scale, int32_t zero_point, int32_t q_lo, int32_t q_hi) {
    float r = x / scale;
    if (!(r == r)) return zero_point;
    // Far outside the range saturates anyway; clamping first keeps the rounding trick exact.
    r = r < -4194304.0f ? -4194304.0f : (r > 4194304.0f ? 4194304.0f : r);
    const float v = round_half_even(r) + static_cast<float>(zero_point);
    if (v <= static_cast<float>(q_lo)) return q_lo;
    if (v >= static_cast<float>(q_hi)) return q_hi;
    return static_cast<int32_t>(v);
}

// Depthwise over n output pixels (u8 activations, int16 centered weights [taps][C]):
//   acc[p * C + c] = sum over t < taps of tap_x[t][p * pix_step + c] * w[t * C + c].
// A tap outside the image points into a row of the zero point's code, so borders run here too.
// Each tap_x[t] + p * pix_step must be readable for C bytes rounded up to 16.
void qdw_row(const uint8_t* const* tap_x, int64_t taps, int64_t pix_step, const int16_t* w, int64_t C, int64_t n,
             int32_t* acc);
// Depthwise 3x3, stride 1, padding 1 on every side (output H x W) over output rows [oh0, oh1):
//   acc[((oh - oh0) * W + ow) * C + c] = sum over kh, kw < 3 of X(oh + kh - 1, ow + kw - 1, c) * w[(kh * 3 + kw) * C + c]
// with X the u8 image x (pixel stride xs >= C) inside, `pad` (the zero point's code) outside.
// C a multiple of 16. Only variants with a faster way than qdw_row have one (KernelTable).
using Qdw3x3s1Fn = void (*)(const uint8_t* x, int64_t H, int64_t W, int64_t xs, int64_t C, uint8_t pad,
                            const int16_t* w, int64_t oh0, int64_t oh1, int32_t* acc);

// x (float, n values) to u8 codes with offset `shift` added (128 turns int8 codes into u8).
void quantize_u8(const float* x, int64_t n, float scale, int32_t zero_point, int32_t q_lo, int32_t q_hi,
                 int32_t shift, uint8_t* out);

// quantize_u8 over `rows` rows of `width` floats: row r from x + r * x_stride to
// out + r * out_stride (a blocked image's blocks into an NHWC pixel row, in one pass).
void quantize_u8_rows(const float* x, int64_t rows, int64_t width, int64_t x_stride, float scale, int32_t zero_point,
                      int32_t q_lo, int32_t q_hi, int32_t shift, uint8_t* out, int64_t out_stride);

}  // namespace pyengine
