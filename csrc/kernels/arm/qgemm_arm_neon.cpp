// SPDX-License-Identifier: Apache-2.0
// int8 GEMM on NEON (kernels/qgemm.h's contract: u8 activations x s8 packed weights, int32 sums).
// Both paths shift the activations to signed (a - 128, an XOR of the top bit) and add back
// 128 x the column sums of the weights, which they compute per panel:
//   - ARMv8.2 dot product (sdot, chosen when AT_HWCAP has ASIMDDP): one instruction multiplies
//     4 signed bytes by 4 and adds them to an int32 lane, 16 multiply-adds; a packed row of
//     16 bytes is 4 columns x 4 k, exactly sdot's lanes.
//   - plain NEON (ARMv8.0, armv7): smull widens 8 byte products to int16 (|-128 x -128| fits),
//     sadalp adds their pairs into int32 lanes; the two halves of each column's 4 k are
//     summed at the end.
#include <arm_neon.h>

#include <cstring>

#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/qgemm.h"

namespace pyengine {

namespace {

// 128 x the column sums over k < Kp of a 16-column panel ([Kp/4][16][4] bytes).
void panel_correction(const int8_t* panel, int64_t Kp, int32_t* corr) {
    for (int j = 0; j < 16; ++j) corr[j] = 0;
    for (int64_t k = 0; k < Kp; k += 4) {
        const int8_t* row = panel + k * kQgemmNr;
        for (int j = 0; j < 16; ++j) corr[j] += row[4 * j] + row[4 * j + 1] + row[4 * j + 2] + row[4 * j + 3];
    }
    for (int j = 0; j < 16; ++j) corr[j] *= 128;
}

// 4 activation bytes at a, shifted to signed, in every 32-bit lane.
inline uint32_t signed4(const uint8_t* a) {
    uint32_t v;
    std::memcpy(&v, a, 4);
    return v ^ 0x80808080u;
}

// Columns [0, nn) of 4 sums (one int32x4 holding columns 4g..4g+3) plus the correction, to c.
inline void store4(int32x4_t sums, const int32_t* corr, int g, int64_t nn, int32_t* c) {
    const int32x4_t v = vaddq_s32(sums, vld1q_s32(corr + 4 * g));
    if (nn >= 4 * g + 4) {
        vst1q_s32(c + 4 * g, v);
        return;
    }
    int32_t tmp[4];
    vst1q_s32(tmp, v);
    for (int64_t j = 4 * g; j < nn; ++j) c[j] = tmp[j - 4 * g];
}

// Plain NEON: one row against one panel; acc[v] holds columns 2v, 2v+1 as (k01, k23) halves.
void row_plain(int64_t Kp, const uint8_t* a, const int8_t* panel, const int32_t* corr, int64_t nn, int32_t* c) {
    int32x4_t acc[8];
    for (auto& v : acc) v = vdupq_n_s32(0);
    for (int64_t k = 0; k < Kp; k += 4) {
        const int8x8_t av = vreinterpret_s8_u32(vdup_n_u32(signed4(a + k)));
        const int8_t* row = panel + k * kQgemmNr;
        for (int v = 0; v < 8; ++v) acc[v] = vpadalq_s16(acc[v], vmull_s8(av, vld1_s8(row + 8 * v)));
    }
    for (int g = 0; g < 4; ++g) {
        // Lanes (c0 k01, c0 k23, c1 k01, c1 k23) of two vectors to (c0, c1, c2, c3).
        const int32x4_t lo = acc[2 * g], hi = acc[2 * g + 1];
        const int32x4_t sums = vcombine_s32(vpadd_s32(vget_low_s32(lo), vget_high_s32(lo)),
                                            vpadd_s32(vget_low_s32(hi), vget_high_s32(hi)));
        store4(sums, corr, g, nn, c);
    }
}

}  // namespace

void qgemm_arm_neon(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
                    int64_t ldc) {
    int32_t corr[16];
    for (int64_t nb = 0; nb < N; nb += kQgemmNr) {
        const int8_t* panel = Bp + nb * Kp;
        const int64_t nn = N - nb < kQgemmNr ? N - nb : kQgemmNr;
        panel_correction(panel, Kp, corr);
        for (int64_t m = 0; m < M; ++m) row_plain(Kp, A + m * lda, panel, corr, nn, C + m * ldc + nb);
    }
}

#if defined(__aarch64__)

#define PYENGINE_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))

namespace {

// R rows against one panel with sdot: acc[r][g] lane i is column 4g + i.
template <int R>
PYENGINE_DOTPROD void rows_dot(int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* panel, const int32_t* corr,
                               int64_t nn, int32_t* C, int64_t ldc) {
    int32x4_t acc[R][4];
    for (int r = 0; r < R; ++r)
        for (int g = 0; g < 4; ++g) acc[r][g] = vdupq_n_s32(0);
    for (int64_t k = 0; k < Kp; k += 4) {
        const int8_t* row = panel + k * kQgemmNr;
        const int8x16_t b0 = vld1q_s8(row), b1 = vld1q_s8(row + 16), b2 = vld1q_s8(row + 32), b3 = vld1q_s8(row + 48);
        for (int r = 0; r < R; ++r) {
            const int8x16_t av = vreinterpretq_s8_u32(vdupq_n_u32(signed4(A + r * lda + k)));
            acc[r][0] = vdotq_s32(acc[r][0], b0, av);
            acc[r][1] = vdotq_s32(acc[r][1], b1, av);
            acc[r][2] = vdotq_s32(acc[r][2], b2, av);
            acc[r][3] = vdotq_s32(acc[r][3], b3, av);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int g = 0; g < 4; ++g) store4(acc[r][g], corr, g, nn, C + r * ldc);
}

}  // namespace

PYENGINE_DOTPROD void qgemm_arm_neon_dot(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda,
                                         const int8_t* Bp, int32_t* C, int64_t ldc) {
    int32_t corr[16];
    for (int64_t nb = 0; nb < N; nb += kQgemmNr) {
        const int8_t* panel = Bp + nb * Kp;
        const int64_t nn = N - nb < kQgemmNr ? N - nb : kQgemmNr;
        panel_correction(panel, Kp, corr);
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) rows_dot<4>(Kp, A + m * lda, lda, panel, corr, nn, C + m * ldc + nb, ldc);
        for (; m < M; ++m) rows_dot<1>(Kp, A + m * lda, lda, panel, corr, nn, C + m * ldc + nb, ldc);
    }
}

#endif  // defined(__aarch64__)

}  // namespace pyengine
