// SPDX-License-Identifier: Apache-2.0
// The AVX2+FMA GEMM micro-kernel: 6x16 tile, 12 ymm accumulators (BLIS/ncnn style).
// The packing and blocking driver is the shared one in kernels/gemm.cpp.
#include "kernels/gemm.h"
#include "kernels/x86/avx2_math.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {

namespace {

constexpr int kMR = 6, kNR = 16;

// Sums kc rank-1 updates into acc[0..M). kPacked: a is a packed panel (a_rs 1, a_cs kMR).
template <int M, bool kPacked, bool kMasked>
inline void accumulate(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                       int64_t b_rs, __m256i m0, __m256i m1, __m256 (&acc)[kMR][2]) {
    for (int i = 0; i < M; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    if (kPacked) {
        a_rs = 1;
        a_cs = kMR;
    }
    for (int64_t k = 0; k < kc; ++k) {
        __m256 b0, b1;
        if (kMasked) {
            b0 = _mm256_maskload_ps(b, m0);
            b1 = _mm256_maskload_ps(b + 8, m1);
        } else {
            b0 = _mm256_loadu_ps(b);
            b1 = _mm256_loadu_ps(b + 8);
        }
        for (int i = 0; i < M; ++i) {
            const __m256 av = _mm256_broadcast_ss(a + i * a_rs);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
        a += a_cs;
        b += b_rs;
    }
}

template <int M>
void tile(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
          bool b_padded, int n, __m256 (&acc)[kMR][2]) {
    const bool packed = a_rs == 1 && a_cs == kMR;
    if (n == kNR || b_padded) {
        const __m256i none = _mm256_setzero_si256();
        if (packed) accumulate<M, true, false>(kc, a, a_rs, a_cs, b, b_rs, none, none, acc);
        else accumulate<M, false, false>(kc, a, a_rs, a_cs, b, b_rs, none, none, acc);
    } else {
        accumulate<M, false, true>(kc, a, a_rs, a_cs, b, b_rs, tail_mask(n), tail_mask(n - 8), acc);
    }
}

void micro_avx2(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                int64_t b_rs, bool b_padded, float* c, int64_t ldc, int m, int n,
                bool accumulate_c, const Epilogue* ep, int64_t row0, int64_t col0) {
    __m256 acc[kMR][2];
    switch (m) {
        case 1: tile<1>(kc, a, a_rs, a_cs, b, b_rs, b_padded, n, acc); break;
        case 2: tile<2>(kc, a, a_rs, a_cs, b, b_rs, b_padded, n, acc); break;
        case 3: tile<3>(kc, a, a_rs, a_cs, b, b_rs, b_padded, n, acc); break;
        case 4: tile<4>(kc, a, a_rs, a_cs, b, b_rs, b_padded, n, acc); break;
        case 5: tile<5>(kc, a, a_rs, a_cs, b, b_rs, b_padded, n, acc); break;
        default: tile<6>(kc, a, a_rs, a_cs, b, b_rs, b_padded, n, acc); break;
    }
    const bool full = n == kNR;
    const __m256i m0 = tail_mask(n), m1 = tail_mask(n - 8);
    const bool act = ep != nullptr && ep->act != Activation::None;
    __m256 col_bias0 = _mm256_setzero_ps(), col_bias1 = _mm256_setzero_ps();
    const bool bias = ep != nullptr && ep->bias != nullptr;
    if (bias && !ep->bias_per_row) {
        col_bias0 = full ? _mm256_loadu_ps(ep->bias + col0) : _mm256_maskload_ps(ep->bias + col0, m0);
        col_bias1 = full ? _mm256_loadu_ps(ep->bias + col0 + 8) : _mm256_maskload_ps(ep->bias + col0 + 8, m1);
    }
    for (int i = 0; i < m; ++i) {
        float* ci = c + i * ldc;
        __m256 v0 = acc[i][0], v1 = acc[i][1];
        if (accumulate_c) {
            v0 = _mm256_add_ps(v0, full ? _mm256_loadu_ps(ci) : _mm256_maskload_ps(ci, m0));
            v1 = _mm256_add_ps(v1, full ? _mm256_loadu_ps(ci + 8) : _mm256_maskload_ps(ci + 8, m1));
        }
        if (bias) {
            if (ep->bias_per_row) {
                const __m256 rb = _mm256_broadcast_ss(ep->bias + row0 + i);
                v0 = _mm256_add_ps(v0, rb);
                v1 = _mm256_add_ps(v1, rb);
            } else {
                v0 = _mm256_add_ps(v0, col_bias0);
                v1 = _mm256_add_ps(v1, col_bias1);
            }
        }
        if (act) {
            v0 = activate256(v0, *ep);
            v1 = activate256(v1, *ep);
        }
        if (full) {
            _mm256_storeu_ps(ci, v0);
            _mm256_storeu_ps(ci + 8, v1);
        } else {
            _mm256_maskstore_ps(ci, m0, v0);
            _mm256_maskstore_ps(ci + 8, m1, v1);
        }
    }
}

}  // namespace

const GemmMicroKernel& gemm_micro_avx2() {
    static const GemmMicroKernel uk = {kMR, kNR, micro_avx2};
    return uk;
}

void gemm_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep) {
    gemm_driver(gemm_micro_avx2(), M, N, K, A, lda, B, ldb, trans_b, C, ldc, ep);
}

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
