// SPDX-License-Identifier: Apache-2.0
// The AVX2+FMA GEMM micro-kernel: 6x16 tile, 12 ymm accumulators (BLIS/ncnn style).
// The packing and blocking driver is the shared one in kernels/gemm.cpp.
#include "kernels/gemm.h"
#include "kernels/x86/avx2_math.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {

namespace {

constexpr int kMR = 6, kNR = 16;

// How one tile's rows leave the registers: C added (later K blocks), bias, activation, tail.
struct TileOut {
    bool full, accumulate, bias, bias_per_row, act;
    __m256i m0, m1;
    __m256 col_bias0, col_bias1;
    const Epilogue* ep;
    int64_t row0;

    TileOut(int n, bool accumulate_c, const Epilogue* e, int64_t r0, int64_t col0)
        : full(n == kNR), accumulate(accumulate_c), bias(e != nullptr && e->bias != nullptr),
          bias_per_row(bias && e->bias_per_row), act(e != nullptr && e->act != Activation::None),
          m0(tail_mask(n)), m1(tail_mask(n - 8)), col_bias0(_mm256_setzero_ps()),
          col_bias1(_mm256_setzero_ps()), ep(e), row0(r0) {
        if (bias && !bias_per_row) {
            col_bias0 = _mm256_maskload_ps(e->bias + col0, m0);
            col_bias1 = _mm256_maskload_ps(e->bias + col0 + 8, m1);
        }
    }

    __attribute__((always_inline)) void store(float* ci, int i, __m256 v0, __m256 v1) const {
        if (accumulate) {
            v0 = _mm256_add_ps(v0, full ? _mm256_loadu_ps(ci) : _mm256_maskload_ps(ci, m0));
            v1 = _mm256_add_ps(v1, full ? _mm256_loadu_ps(ci + 8) : _mm256_maskload_ps(ci + 8, m1));
        }
        if (bias) {
            const __m256 b0 = bias_per_row ? _mm256_broadcast_ss(ep->bias + row0 + i) : col_bias0;
            const __m256 b1 = bias_per_row ? b0 : col_bias1;
            v0 = _mm256_add_ps(v0, b0);
            v1 = _mm256_add_ps(v1, b1);
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
};

// One M x 16 tile. Every accumulator is a named local, not an array element, so that the
// compiler keeps all of them in registers through the k loop (an array of __m256, which may
// alias the float loads, ends up stored to the stack on every iteration).
#define PYENGINE_ROW(I, ACC)                                          \
    if constexpr (M > I) {                                            \
        const __m256 av = _mm256_broadcast_ss(ak + I * a_rs);         \
        ACC##I##_0 = _mm256_fmadd_ps(av, b0, ACC##I##_0);             \
        ACC##I##_1 = _mm256_fmadd_ps(av, b1, ACC##I##_1);             \
    }
#define PYENGINE_STEP(AK, BK, ACC)                                                    \
    do {                                                                              \
        const float* ak = (AK);                                                       \
        const __m256 b0 = kMasked ? _mm256_maskload_ps(BK, l0) : _mm256_loadu_ps(BK); \
        const __m256 b1 = kMasked ? _mm256_maskload_ps((BK) + 8, l1) : _mm256_loadu_ps((BK) + 8); \
        PYENGINE_ROW(0, ACC) PYENGINE_ROW(1, ACC) PYENGINE_ROW(2, ACC)                \
        PYENGINE_ROW(3, ACC) PYENGINE_ROW(4, ACC) PYENGINE_ROW(5, ACC)                \
    } while (0)
#define PYENGINE_STORE(I) \
    if constexpr (M > I) out.store(c + I * ldc, I, _mm256_add_ps(c##I##_0, e##I##_0), _mm256_add_ps(c##I##_1, e##I##_1));

template <int M, bool kPacked, bool kMasked>
void kernel(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
            float* c, int64_t ldc, int n, bool accumulate_c, const Epilogue* ep, int64_t row0,
            int64_t col0) {
    const __m256i l0 = tail_mask(n), l1 = tail_mask(n - 8);
    if (kPacked) {
        a_rs = 1;
        a_cs = kMR;
    }
    // c: the sums; e: a second set for odd k when M <= 2 (zero otherwise).
    __m256 c0_0 = _mm256_setzero_ps(), c0_1 = c0_0, e0_0 = c0_0, e0_1 = c0_0;
    __m256 c1_0 = c0_0, c1_1 = c0_0, e1_0 = c0_0, e1_1 = c0_0;
    __m256 c2_0 = c0_0, c2_1 = c0_0, e2_0 = c0_0, e2_1 = c0_0;
    __m256 c3_0 = c0_0, c3_1 = c0_0, e3_0 = c0_0, e3_1 = c0_0;
    __m256 c4_0 = c0_0, c4_1 = c0_0, e4_0 = c0_0, e4_1 = c0_0;
    __m256 c5_0 = c0_0, c5_1 = c0_0, e5_0 = c0_0, e5_1 = c0_0;
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
    const TileOut out(n, accumulate_c, ep, row0, col0);
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
        if (packed) kernel<M, true, false>(kc, a, a_rs, a_cs, b, b_rs, c, ldc, n, accumulate_c, ep, row0, col0);
        else kernel<M, false, false>(kc, a, a_rs, a_cs, b, b_rs, c, ldc, n, accumulate_c, ep, row0, col0);
    } else if (packed) {
        kernel<M, true, true>(kc, a, a_rs, a_cs, b, b_rs, c, ldc, n, accumulate_c, ep, row0, col0);
    } else {
        kernel<M, false, true>(kc, a, a_rs, a_cs, b, b_rs, c, ldc, n, accumulate_c, ep, row0, col0);
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

// One row of C with kRegs ymm accumulators (8 * kRegs columns at most; the last is masked).
// kRegs is a template argument so that the k loop has no per-register branches.
template <int kRegs>
void row_regs(int64_t K, const float* a, const float* b, int64_t b_rs, float* c, int n,
              const Epilogue* ep, int64_t row0, int64_t col0) {
    const __m256i last = tail_mask(n - 8 * (kRegs - 1));
    const bool last_full = n == 8 * kRegs;
#define PYENGINE_ACC(R) __m256 acc##R = _mm256_setzero_ps();
    PYENGINE_ACC(0) PYENGINE_ACC(1) PYENGINE_ACC(2) PYENGINE_ACC(3) PYENGINE_ACC(4) PYENGINE_ACC(5)
    PYENGINE_ACC(6) PYENGINE_ACC(7) PYENGINE_ACC(8) PYENGINE_ACC(9) PYENGINE_ACC(10) PYENGINE_ACC(11)
    PYENGINE_ACC(12) PYENGINE_ACC(13) PYENGINE_ACC(14) PYENGINE_ACC(15)
#undef PYENGINE_ACC
#define PYENGINE_FMA(R)                                                                          \
    if constexpr (R < kRegs) {                                                                   \
        const __m256 bv = R == kRegs - 1 && !last_full ? _mm256_maskload_ps(bk + 8 * R, last)   \
                                                       : _mm256_loadu_ps(bk + 8 * R);            \
        acc##R = _mm256_fmadd_ps(av, bv, acc##R);                                                \
    }
    for (int64_t k = 0; k < K; ++k) {
        const __m256 av = _mm256_broadcast_ss(a + k);
        const float* bk = b + k * b_rs;
        PYENGINE_FMA(0) PYENGINE_FMA(1) PYENGINE_FMA(2) PYENGINE_FMA(3) PYENGINE_FMA(4) PYENGINE_FMA(5)
        PYENGINE_FMA(6) PYENGINE_FMA(7) PYENGINE_FMA(8) PYENGINE_FMA(9) PYENGINE_FMA(10) PYENGINE_FMA(11)
        PYENGINE_FMA(12) PYENGINE_FMA(13) PYENGINE_FMA(14) PYENGINE_FMA(15)
    }
#undef PYENGINE_FMA
    const bool bias = ep->bias != nullptr;
    const bool act = ep->act != Activation::None;
    const __m256i all = tail_mask(8);
#define PYENGINE_OUT(R)                                                                          \
    if constexpr (R < kRegs) {                                                                   \
        const __m256i mk = R == kRegs - 1 ? last : all;                                          \
        __m256 v = acc##R;                                                                       \
        if (bias) {                                                                              \
            v = _mm256_add_ps(v, ep->bias_per_row ? _mm256_set1_ps(ep->bias[row0])               \
                                                  : _mm256_maskload_ps(ep->bias + col0 + 8 * R, mk)); \
        }                                                                                        \
        if (act) v = activate256(v, *ep);                                                        \
        _mm256_maskstore_ps(c + 8 * R, mk, v);                                                   \
    }
    PYENGINE_OUT(0) PYENGINE_OUT(1) PYENGINE_OUT(2) PYENGINE_OUT(3) PYENGINE_OUT(4) PYENGINE_OUT(5)
    PYENGINE_OUT(6) PYENGINE_OUT(7) PYENGINE_OUT(8) PYENGINE_OUT(9) PYENGINE_OUT(10) PYENGINE_OUT(11)
    PYENGINE_OUT(12) PYENGINE_OUT(13) PYENGINE_OUT(14) PYENGINE_OUT(15)
#undef PYENGINE_OUT
}

// One wide row of C (more than 128 columns): four rows of B at a time, each read start to end,
// with the partial sums in c (L1). Four sequential streams suit the prefetcher when B is too
// big for L2.
void row_wide_avx2(int64_t K, const float* a, const float* b, int64_t b_rs, float* c, int n,
                   const Epilogue* ep, int64_t row0, int64_t col0) {
    const int64_t full = n / 8 * 8;
    const __m256i tail = tail_mask(static_cast<int>(n - full));
    for (int64_t k = 0; k < K; k += 4) {
        const int64_t kn = K - k < 4 ? K - k : 4;
        const __m256 a0 = _mm256_set1_ps(a[k]);
        const __m256 a1 = _mm256_set1_ps(kn > 1 ? a[k + 1] : 0.0f);
        const __m256 a2 = _mm256_set1_ps(kn > 2 ? a[k + 2] : 0.0f);
        const __m256 a3 = _mm256_set1_ps(kn > 3 ? a[k + 3] : 0.0f);
        const float* b0 = b + k * b_rs;
        const float* b1 = kn > 1 ? b0 + b_rs : b0;  // a1..a3 are 0 where rows run out
        const float* b2 = kn > 2 ? b1 + b_rs : b0;
        const float* b3 = kn > 3 ? b2 + b_rs : b0;
        int64_t j = 0;
        for (; j < full; j += 8) {
            __m256 v = k == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(c + j);
            v = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b0 + j), v);
            v = _mm256_fmadd_ps(a1, _mm256_loadu_ps(b1 + j), v);
            v = _mm256_fmadd_ps(a2, _mm256_loadu_ps(b2 + j), v);
            v = _mm256_fmadd_ps(a3, _mm256_loadu_ps(b3 + j), v);
            _mm256_storeu_ps(c + j, v);
        }
        if (j < n) {
            __m256 v = k == 0 ? _mm256_setzero_ps() : _mm256_maskload_ps(c + j, tail);
            v = _mm256_fmadd_ps(a0, _mm256_maskload_ps(b0 + j, tail), v);
            v = _mm256_fmadd_ps(a1, _mm256_maskload_ps(b1 + j, tail), v);
            v = _mm256_fmadd_ps(a2, _mm256_maskload_ps(b2 + j, tail), v);
            v = _mm256_fmadd_ps(a3, _mm256_maskload_ps(b3 + j, tail), v);
            _mm256_maskstore_ps(c + j, tail, v);
        }
    }
    if (ep->bias == nullptr && ep->act == Activation::None) return;
    for (int64_t j = 0; j < n; j += 8) {
        const __m256i mk = tail_mask(static_cast<int>(n - j < 8 ? n - j : 8));
        __m256 v = _mm256_maskload_ps(c + j, mk);
        if (ep->bias) {
            v = _mm256_add_ps(v, ep->bias_per_row ? _mm256_set1_ps(ep->bias[row0])
                                                  : _mm256_maskload_ps(ep->bias + col0 + j, mk));
        }
        if (ep->act != Activation::None) v = activate256(v, *ep);
        _mm256_maskstore_ps(c + j, mk, v);
    }
}

// One row of C: up to 128 columns in 16 ymm accumulators, more through row_wide_avx2.
void row_avx2(int64_t K, const float* a, const float* b, int64_t b_rs, float* c, int n,
              const Epilogue* ep, int64_t row0, int64_t col0) {
    switch ((n + 7) / 8) {
        case 1: row_regs<1>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 2: row_regs<2>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 3: row_regs<3>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 4: row_regs<4>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 5: row_regs<5>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 6: row_regs<6>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 7: row_regs<7>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 8: row_regs<8>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 9: row_regs<9>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 10: row_regs<10>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 11: row_regs<11>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 12: row_regs<12>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 13: row_regs<13>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 14: row_regs<14>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 15: row_regs<15>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        case 16: row_regs<16>(K, a, b, b_rs, c, n, ep, row0, col0); break;
        default: row_wide_avx2(K, a, b, b_rs, c, n, ep, row0, col0); break;
    }
}

}  // namespace

const GemmMicroKernel& gemm_micro_avx2() {
    static const GemmMicroKernel uk = {kMR, kNR, micro_avx2, 128, row_avx2};
    return uk;
}

void gemm_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep) {
    gemm_driver(gemm_micro_avx2(), M, N, K, A, lda, B, ldb, trans_b, C, ldc, ep);
}

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
