// SPDX-License-Identifier: Apache-2.0
// int8 GEMM with AVX2. vpmaddubsw (u8 x s8 pairs summed into int16) saturates: 255 * 127 * 2
// exceeds 32767. Instead both operands are widened to int16 and vpmaddwd sums the pairs into
// int32, which is exact for any weights. Tile: 4 rows x 16 columns.
// With AVX-VNNI (the VEX-encoded vpdpbusd of Alder Lake and later, on CPUs with or without
// AVX-512) one instruction does the u8 x s8 products and their sum without saturation: the
// qgemm_avx2_vnni variant, compiled for it by function attribute and chosen at run time.
#include <immintrin.h>

#include <cstring>

#include "kernels/qgemm.h"

#if defined(__AVX2__)

namespace pyengine {

namespace {

// One packed 64-byte k-row (16 columns x 4 k) against 4 activation bytes: 4 ymm of
// int32 partial sums, acc[q] lane 2i+h = column 4q+i, k pair h.
template <int R>
inline void tile(int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* panel, int32_t* C, int64_t ldc,
                 int64_t n_valid) {
    __m256i acc[R][4];
    for (int r = 0; r < R; ++r)
        for (int q = 0; q < 4; ++q) acc[r][q] = _mm256_setzero_si256();
    for (int64_t k = 0; k < Kp; k += 4) {
        __m256i b[4];
        for (int q = 0; q < 4; ++q) {
            b[q] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(panel + k * kQgemmNr + 16 * q)));
        }
        for (int r = 0; r < R; ++r) {
            int32_t a4;
            std::memcpy(&a4, A + r * lda + k, 4);
            // a0 a1 a2 a3 as int16, repeated: lanes pair with (k0,k1) and (k2,k3) of each column.
            const __m256i a = _mm256_cvtepu8_epi16(_mm_set1_epi32(a4));
            for (int q = 0; q < 4; ++q) acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(a, b[q]));
        }
    }
    for (int r = 0; r < R; ++r) {
        alignas(32) int32_t part[32];
        for (int q = 0; q < 4; ++q) _mm256_store_si256(reinterpret_cast<__m256i*>(part + 8 * q), acc[r][q]);
        const int64_t nn = n_valid < kQgemmNr ? n_valid : kQgemmNr;
        for (int64_t j = 0; j < nn; ++j) C[r * ldc + j] = part[2 * j] + part[2 * j + 1];
    }
}

// Rows in chunks that keep their A bytes in L1 while a panel of B streams past, 4 rows per
// Tile::run<4> call and the rest one by one; shared by both GEMMs.
template <typename Tile>
void drive(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
           int64_t ldc) {
    constexpr int64_t kRowChunk = 64;
    for (int64_t m0 = 0; m0 < M; m0 += kRowChunk) {
        const int64_t mc = M - m0 < kRowChunk ? M - m0 : kRowChunk;
        for (int64_t nb = 0; nb < N; nb += kQgemmNr) {
            const int8_t* panel = Bp + nb * Kp;
            int64_t m = m0;
            for (; m + 4 <= m0 + mc; m += 4) Tile::template run<4>(Kp, A + m * lda, lda, panel, C + m * ldc + nb, ldc, N - nb);
            for (; m < m0 + mc; ++m) Tile::template run<1>(Kp, A + m * lda, lda, panel, C + m * ldc + nb, ldc, N - nb);
        }
    }
}

struct PlainTile {
    template <int R>
    static void run(int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* panel, int32_t* C, int64_t ldc,
                    int64_t n_valid) {
        tile<R>(Kp, A, lda, panel, C, ldc, n_valid);
    }
};

}  // namespace

void qgemm_avx2(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
                int64_t ldc) {
    drive<PlainTile>(M, N, Kp, A, lda, Bp, C, ldc);
}

#define PYENGINE_AVX_VNNI __attribute__((target("avx2,avxvnni")))

namespace {

// R rows against one 16-column panel: a packed k-row is 64 bytes, columns 0-7 then 8-15, each
// column's 4 k side by side, which is vpdpbusd's lane layout.
template <int R>
PYENGINE_AVX_VNNI inline void tile_vnni(int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* panel, int32_t* C,
                                        int64_t ldc, int64_t n_valid) {
    __m256i acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (int64_t k = 0; k < Kp; k += 4) {
        const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + k * kQgemmNr));
        const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + k * kQgemmNr + 32));
        for (int r = 0; r < R; ++r) {
            int32_t a4;
            std::memcpy(&a4, A + r * lda + k, 4);
            const __m256i a = _mm256_set1_epi32(a4);
            acc[r][0] = _mm256_dpbusd_avx_epi32(acc[r][0], a, b0);
            acc[r][1] = _mm256_dpbusd_avx_epi32(acc[r][1], a, b1);
        }
    }
    const int64_t nn = n_valid < kQgemmNr ? n_valid : kQgemmNr;
    for (int r = 0; r < R; ++r) {
        if (nn == kQgemmNr) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + r * ldc), acc[r][0]);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + r * ldc + 8), acc[r][1]);
            continue;
        }
        alignas(32) int32_t part[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(part), acc[r][0]);
        _mm256_store_si256(reinterpret_cast<__m256i*>(part + 8), acc[r][1]);
        for (int64_t j = 0; j < nn; ++j) C[r * ldc + j] = part[j];
    }
}

struct VnniTile {
    template <int R>
    PYENGINE_AVX_VNNI static void run(int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* panel, int32_t* C, int64_t ldc,
                    int64_t n_valid) {
        tile_vnni<R>(Kp, A, lda, panel, C, ldc, n_valid);
    }
};

}  // namespace

void qgemm_avx2_vnni(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
                     int64_t ldc) {
    drive<VnniTile>(M, N, Kp, A, lda, Bp, C, ldc);
}

}  // namespace pyengine

#endif  // defined(__AVX2__)
