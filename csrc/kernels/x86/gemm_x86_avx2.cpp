// SPDX-License-Identifier: Apache-2.0
// The AVX2+FMA GEMM micro-kernel: 6x16 tile, 12 ymm accumulators (BLIS/ncnn style).
// The packing and blocking driver is the shared one in kernels/gemm.cpp.
#include "kernels/gemm.h"
#include "kernels/x86/avx2_math.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {

namespace {

constexpr int kMR = 6, kNR = 16;

// Accumulates, then stores through the epilogue. Every accumulator is a named local (not an
// array) so the compiler keeps all of them in registers through the k loop.
#define PYENGINE_ROW(I, ACC) \
    if constexpr (M > I) { \
        const __m256 av = _mm256_broadcast_ss(ak + I * a_rs); \
        ACC##I##_0 = _mm256_fmadd_ps(av, b0, ACC##I##_0); \
        ACC##I##_1 = _mm256_fmadd_ps(av, b1, ACC##I##_1); \
    }
#define PYENGINE_STEP(AK, BK, ACC) \
    do { \
        const float* ak = (AK); \
        __m256 b0, b1; \
        if (kMasked) { b0 = _mm256_maskload_ps(BK, l0); b1 = _mm256_maskload_ps((BK) + 8, l1); } \
        else { b0 = _mm256_loadu_ps(BK); b1 = _mm256_loadu_ps((BK) + 8); } \
        PYENGINE_ROW(0, ACC) PYENGINE_ROW(1, ACC) PYENGINE_ROW(2, ACC) PYENGINE_ROW(3, ACC) PYENGINE_ROW(4, ACC) PYENGINE_ROW(5, ACC) \
    } while (0)
#define PYENGINE_STORE(I) \
    if constexpr (M > I) { \
        const int i = I; \
        __m256 v0 = _mm256_add_ps(c##I##_0, e##I##_0), v1 = _mm256_add_ps(c##I##_1, e##I##_1); \
        float* ci = c + i * ldc; \
        if (accumulate_c) { \
        v0 = _mm256_add_ps(v0, full ? _mm256_loadu_ps(ci) : _mm256_maskload_ps(ci, m0)); \
        v1 = _mm256_add_ps(v1, full ? _mm256_loadu_ps(ci + 8) : _mm256_maskload_ps(ci + 8, m1)); \
        } \
        if (bias) { \
        if (ep->bias_per_row) { \
        const __m256 rb = _mm256_broadcast_ss(ep->bias + row0 + i); \
        v0 = _mm256_add_ps(v0, rb); \
        v1 = _mm256_add_ps(v1, rb); \
        } else { \
        v0 = _mm256_add_ps(v0, col_bias0); \
        v1 = _mm256_add_ps(v1, col_bias1); \
        } \
        } \
        if (act) { \
        v0 = activate256(v0, *ep); \
        v1 = activate256(v1, *ep); \
        } \
        if (full) { \
        _mm256_storeu_ps(ci, v0); \
        _mm256_storeu_ps(ci + 8, v1); \
        } else { \
        _mm256_maskstore_ps(ci, m0, v0); \
        _mm256_maskstore_ps(ci + 8, m1, v1); \
        } \
    }

template <int M, bool kPacked, bool kMasked>
void kernel(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
            bool b_padded, float* c, int64_t ldc, int n, bool accumulate_c, const Epilogue* ep,
            int64_t row0, int64_t col0) {
    (void)b_padded;
    const __m256i l0 = tail_mask(n), l1 = tail_mask(n - 8);
    if (kPacked) {
        a_rs = 1;
        a_cs = kMR;
    }
    __m256 c0_0 = _mm256_setzero_ps(), c0_1 = c0_0, e0_0 = c0_0, e0_1 = c0_0;
    __m256 c1_0 = _mm256_setzero_ps(), c1_1 = c1_0, e1_0 = c1_0, e1_1 = c1_0;
    __m256 c2_0 = _mm256_setzero_ps(), c2_1 = c2_0, e2_0 = c2_0, e2_1 = c2_0;
    __m256 c3_0 = _mm256_setzero_ps(), c3_1 = c3_0, e3_0 = c3_0, e3_1 = c3_0;
    __m256 c4_0 = _mm256_setzero_ps(), c4_1 = c4_0, e4_0 = c4_0, e4_1 = c4_0;
    __m256 c5_0 = _mm256_setzero_ps(), c5_1 = c5_0, e5_0 = c5_0, e5_1 = c5_0;
    int64_t k = 0;
    if constexpr (M <= 2) {  // few rows: alternate two accumulator sets to hide FMA latency
        for (; k + 2 <= kc; k += 2) {
            PYENGINE_STEP(a, b, c);
            PYENGINE_STEP(a + a_cs, b + b_rs, e);
            a += 2 * a_cs;
            b += 2 * b_rs;
        }
    }
    for (; k < kc; ++k) {
        PYENGINE_STEP(a, b, c);
        a += a_cs;
        b += b_rs;
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
    PYENGINE_STORE(0) PYENGINE_STORE(1) PYENGINE_STORE(2) PYENGINE_STORE(3) PYENGINE_STORE(4) PYENGINE_STORE(5)
}
#undef PYENGINE_ROW
#undef PYENGINE_STEP
#undef PYENGINE_STORE

template <int M>
void tile(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
          bool b_padded, float* c, int64_t ldc, int n, bool accumulate_c, const Epilogue* ep,
          int64_t row0, int64_t col0) {
    const bool packed = a_rs == 1 && a_cs == kMR;
    if (n == kNR || b_padded) {
        if (packed) kernel<M, true, false>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0);
        else kernel<M, false, false>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0);
    } else {
        kernel<M, false, true>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0);
    }
}

void micro_avx2(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                int64_t b_rs, bool b_padded, float* c, int64_t ldc, int m, int n,
                bool accumulate_c, const Epilogue* ep, int64_t row0, int64_t col0) {
    switch (m) {
        case 1: tile<1>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 2: tile<2>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 3: tile<3>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 4: tile<4>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 5: tile<5>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        default: tile<6>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
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
