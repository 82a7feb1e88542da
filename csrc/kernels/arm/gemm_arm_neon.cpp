// SPDX-License-Identifier: Apache-2.0
// The NEON GEMM micro-kernel: 8x8 tiles on AArch64 (16 of its 32 vector registers hold the
// sums), 4x8 on armv7 (8 of 16), and a row kernel for one or two rows (GEMV-like). The
// packing and blocking driver is the shared one in kernels/gemm.cpp.
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/arm/neon_math.h"
#include "kernels/gemm.h"

namespace pyengine {

namespace {

#if defined(__aarch64__)
constexpr int kMR = 8;
#else
constexpr int kMR = 4;
#endif  // defined(__aarch64__)
constexpr int kNR = 8;
// Rows of an unpadded B tail copied at a time into a zero-padded block.
constexpr int64_t kTailK = 64;

// acc + b * a[lane]: one broadcast-free multiply-add per row of the tile.
#if defined(__aarch64__)
#define PYENGINE_LANE_MADD(ACC, B, A, L) vfmaq_laneq_f32(ACC, B, A, L)
#else
#define PYENGINE_LANE_MADD(ACC, B, A, L) \
    vmlaq_lane_f32(ACC, B, (L) < 2 ? vget_low_f32(A) : vget_high_f32(A), (L) & 1)
#endif  // defined(__aarch64__)

// Sums of one M x 8 tile over kc steps into t (M rows of 8), added to t when `add`. B rows are
// read 8 wide. Every accumulator is a named local so that all stay in registers.
template <int M>
void core(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
          float* t, bool add) {
    const float32x4_t z = vdupq_n_f32(0.0f);
    float32x4_t c0a = z, c0b = z, c1a = z, c1b = z, c2a = z, c2b = z, c3a = z, c3b = z;
#if defined(__aarch64__)
    float32x4_t c4a = z, c4b = z, c5a = z, c5b = z, c6a = z, c6b = z, c7a = z, c7b = z;
#endif  // defined(__aarch64__)
    if (M == kMR && a_rs == 1 && a_cs == kMR) {
        // Packed A: the column of A for step k is kMR contiguous floats.
        for (int64_t k = 0; k < kc; ++k) {
            const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);
            const float32x4_t a0 = vld1q_f32(a);
            c0a = PYENGINE_LANE_MADD(c0a, b0, a0, 0); c0b = PYENGINE_LANE_MADD(c0b, b1, a0, 0);
            c1a = PYENGINE_LANE_MADD(c1a, b0, a0, 1); c1b = PYENGINE_LANE_MADD(c1b, b1, a0, 1);
            c2a = PYENGINE_LANE_MADD(c2a, b0, a0, 2); c2b = PYENGINE_LANE_MADD(c2b, b1, a0, 2);
            c3a = PYENGINE_LANE_MADD(c3a, b0, a0, 3); c3b = PYENGINE_LANE_MADD(c3b, b1, a0, 3);
#if defined(__aarch64__)
            const float32x4_t a1 = vld1q_f32(a + 4);
            c4a = PYENGINE_LANE_MADD(c4a, b0, a1, 0); c4b = PYENGINE_LANE_MADD(c4b, b1, a1, 0);
            c5a = PYENGINE_LANE_MADD(c5a, b0, a1, 1); c5b = PYENGINE_LANE_MADD(c5b, b1, a1, 1);
            c6a = PYENGINE_LANE_MADD(c6a, b0, a1, 2); c6b = PYENGINE_LANE_MADD(c6b, b1, a1, 2);
            c7a = PYENGINE_LANE_MADD(c7a, b0, a1, 3); c7b = PYENGINE_LANE_MADD(c7b, b1, a1, 3);
#endif  // defined(__aarch64__)
            a += kMR;
            b += b_rs;
        }
    } else {
        // A read in place (few rows, not packed): one broadcast per row and step.
#define PYENGINE_ROW(I)                                                 \
    if constexpr (M > I) {                                              \
        const float32x4_t av = vld1q_dup_f32(a + (I) * a_rs);           \
        c##I##a = neon::madd(c##I##a, b0, av);                          \
        c##I##b = neon::madd(c##I##b, b1, av);                          \
    }
        for (int64_t k = 0; k < kc; ++k) {
            const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);
            PYENGINE_ROW(0) PYENGINE_ROW(1) PYENGINE_ROW(2) PYENGINE_ROW(3)
#if defined(__aarch64__)
            PYENGINE_ROW(4) PYENGINE_ROW(5) PYENGINE_ROW(6) PYENGINE_ROW(7)
#endif  // defined(__aarch64__)
            a += a_cs;
            b += b_rs;
        }
#undef PYENGINE_ROW
    }
#define PYENGINE_OUT(I)                                                                    \
    if constexpr (M > I) {                                                                 \
        float* ti = t + (I) * kNR;                                                         \
        vst1q_f32(ti, add ? vaddq_f32(vld1q_f32(ti), c##I##a) : c##I##a);                  \
        vst1q_f32(ti + 4, add ? vaddq_f32(vld1q_f32(ti + 4), c##I##b) : c##I##b);          \
    }
    PYENGINE_OUT(0) PYENGINE_OUT(1) PYENGINE_OUT(2) PYENGINE_OUT(3)
#if defined(__aarch64__)
    PYENGINE_OUT(4) PYENGINE_OUT(5) PYENGINE_OUT(6) PYENGINE_OUT(7)
#endif  // defined(__aarch64__)
#undef PYENGINE_OUT
}

#undef PYENGINE_LANE_MADD

// The tile's sums for any B: B read in place when 8 columns may be read, else through a
// zero-padded copy of kTailK rows at a time.
template <int M>
void sums(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
          bool b_wide, int n, float* t) {
    if (b_wide) {
        core<M>(kc, a, a_rs, a_cs, b, b_rs, t, false);
        return;
    }
    float bt[kTailK * kNR];
    int64_t k0 = 0;
    do {
        const int64_t kk = kc - k0 < kTailK ? kc - k0 : kTailK;
        for (int64_t k = 0; k < kk; ++k) {
            const float* src = b + (k0 + k) * b_rs;
            float* d = bt + k * kNR;
            int j = 0;
            for (; j < n; ++j) d[j] = src[j];
            for (; j < kNR; ++j) d[j] = 0.0f;
        }
        core<M>(kk, a + k0 * a_cs, a_rs, a_cs, bt, kNR, t, k0 > 0);
        k0 += kTailK;
    } while (k0 < kc);
}

// Writes rows of the tile to C: + C (a later K block), then on the last block bias and
// activation. The tail columns go through a padded vector so each element gets the same math.
template <class Act>
void store(const float* t, float* c, int64_t ldc, int m, int n, bool accumulate, const Epilogue* ep,
           int64_t row0, int64_t col0, const Act& act) {
    const bool bias = ep != nullptr && ep->bias != nullptr;
    const bool per_row = bias && ep->bias_per_row;
    for (int i = 0; i < m; ++i) {
        const float* ti = t + i * kNR;
        float* ci = c + i * ldc;
        const float32x4_t row_bias = vdupq_n_f32(per_row ? ep->bias[row0 + i] : 0.0f);
        int j = 0;
        for (; j + 4 <= n; j += 4) {
            float32x4_t v = vld1q_f32(ti + j);
            if (accumulate) v = vaddq_f32(v, vld1q_f32(ci + j));
            if (ep != nullptr) {
                if (bias) v = vaddq_f32(v, per_row ? row_bias : vld1q_f32(ep->bias + col0 + j));
                v = act(v);
            }
            vst1q_f32(ci + j, v);
        }
        if (j < n) {
            float v4[4] = {0.0f, 0.0f, 0.0f, 0.0f}, b4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int q = j; q < n; ++q) {
                v4[q - j] = ti[q] + (accumulate ? ci[q] : 0.0f);
                if (bias) b4[q - j] = per_row ? ep->bias[row0 + i] : ep->bias[col0 + q];
            }
            float32x4_t v = vld1q_f32(v4);
            if (ep != nullptr) v = act(vaddq_f32(v, vld1q_f32(b4)));
            vst1q_f32(v4, v);
            for (int q = j; q < n; ++q) ci[q] = v4[q - j];
        }
    }
}

template <int M>
void tile(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
          bool b_padded, float* c, int64_t ldc, int n, bool accumulate, const Epilogue* ep,
          int64_t row0, int64_t col0) {
    float t[kMR * kNR];
    sums<M>(kc, a, a_rs, a_cs, b, b_rs, b_padded || n == kNR, n, t);
    if (ep == nullptr) {
        store(t, c, ldc, M, n, accumulate, nullptr, row0, col0, neon::ActNone{});
    } else {
        neon::with_activation(*ep, [&](const auto& act) {
            store(t, c, ldc, M, n, accumulate, ep, row0, col0, act);
        });
    }
}

void micro_neon(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                int64_t b_rs, bool b_padded, float* c, int64_t ldc, int m, int n, bool accumulate,
                const Epilogue* ep, int64_t row0, int64_t col0) {
    switch (m) {
        case 1: tile<1>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate, ep, row0, col0); break;
        case 2: tile<2>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate, ep, row0, col0); break;
        case 3: tile<3>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate, ep, row0, col0); break;
#if defined(__aarch64__)
        case 4: tile<4>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate, ep, row0, col0); break;
        case 5: tile<5>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate, ep, row0, col0); break;
        case 6: tile<6>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate, ep, row0, col0); break;
        case 7: tile<7>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate, ep, row0, col0); break;
#endif  // defined(__aarch64__)
        default: tile<kMR>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate, ep, row0, col0); break;
    }
}

// One row of C over all of K (M = 1 or 2): up to kRowRegs vectors of columns stay in registers
// and each step reads one contiguous run of a B row. Columns past the last full vector are
// summed as scalars so that B is never read beyond n.
#if defined(__aarch64__)
constexpr int kRowRegs = 16;
#else
constexpr int kRowRegs = 8;
#endif  // defined(__aarch64__)

void row_neon(int64_t K, const float* a, const float* b, int64_t b_rs, float* c, int n,
              const Epilogue* ep, int64_t row0, int64_t col0) {
    if (n > 4 * kRowRegs) {  // wider than the registers: one register-wide chunk at a time
        for (int j = 0; j < n; j += 4 * kRowRegs) {
            row_neon(K, a, b + j, b_rs, c + j, n - j < 4 * kRowRegs ? n - j : 4 * kRowRegs, ep, row0, col0 + j);
        }
        return;
    }
    const int full = n / 4, tail = n % 4;
    const float32x4_t z = vdupq_n_f32(0.0f);
    float32x4_t r0 = z, r1 = z, r2 = z, r3 = z, r4 = z, r5 = z, r6 = z, r7 = z;
#if defined(__aarch64__)
    float32x4_t r8 = z, r9 = z, r10 = z, r11 = z, r12 = z, r13 = z, r14 = z, r15 = z;
#endif  // defined(__aarch64__)
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f;
#define PYENGINE_FMA(R) \
    if (R < full) r##R = neon::madd(r##R, vld1q_f32(bk + 4 * (R)), av);
    for (int64_t k = 0; k < K; ++k) {
        const float* bk = b + k * b_rs;
        const float32x4_t av = vdupq_n_f32(a[k]);
        PYENGINE_FMA(0) PYENGINE_FMA(1) PYENGINE_FMA(2) PYENGINE_FMA(3)
        PYENGINE_FMA(4) PYENGINE_FMA(5) PYENGINE_FMA(6) PYENGINE_FMA(7)
#if defined(__aarch64__)
        PYENGINE_FMA(8) PYENGINE_FMA(9) PYENGINE_FMA(10) PYENGINE_FMA(11)
        PYENGINE_FMA(12) PYENGINE_FMA(13) PYENGINE_FMA(14) PYENGINE_FMA(15)
#endif  // defined(__aarch64__)
        if (tail > 0) {
            const float* bt = bk + 4 * full;
            s0 += a[k] * bt[0];
            if (tail > 1) s1 += a[k] * bt[1];
            if (tail > 2) s2 += a[k] * bt[2];
        }
    }
#undef PYENGINE_FMA
    float t[4 * kRowRegs + 4];
#define PYENGINE_OUT(R) \
    if (R < full) vst1q_f32(t + 4 * (R), r##R);
    PYENGINE_OUT(0) PYENGINE_OUT(1) PYENGINE_OUT(2) PYENGINE_OUT(3)
    PYENGINE_OUT(4) PYENGINE_OUT(5) PYENGINE_OUT(6) PYENGINE_OUT(7)
#if defined(__aarch64__)
    PYENGINE_OUT(8) PYENGINE_OUT(9) PYENGINE_OUT(10) PYENGINE_OUT(11)
    PYENGINE_OUT(12) PYENGINE_OUT(13) PYENGINE_OUT(14) PYENGINE_OUT(15)
#endif  // defined(__aarch64__)
#undef PYENGINE_OUT
    t[4 * full] = s0;
    t[4 * full + 1] = s1;
    t[4 * full + 2] = s2;
    neon::with_activation(*ep, [&](const auto& act) { store(t, c, 0, 1, n, false, ep, row0, col0, act); });
}

}  // namespace

const GemmMicroKernel& gemm_micro_arm_neon() {
    static const GemmMicroKernel uk = {kMR, kNR, micro_neon, 4 * kRowRegs, row_neon};
    return uk;
}

void gemm_arm_neon(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                   int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep) {
    gemm_driver(gemm_micro_arm_neon(), M, N, K, A, lda, B, ldb, trans_b, C, ldc, ep);
}

}  // namespace pyengine
