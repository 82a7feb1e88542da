// SPDX-License-Identifier: Apache-2.0
// The AVX-512F GEMM micro-kernel: 12x32 tile, 24 zmm accumulators. Same driver as every ISA;
// the other kernels of the avx512 table are the AVX2 ones (they are memory-bound).
#include "kernels/gemm.h"

#if defined(__AVX512F__) && defined(__FMA__)
// GCC 12's _mm512_max_ps/_mm512_min_ps start from _mm512_undefined_ps(), which trips a
// false -Wmaybe-uninitialized (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "kernels/x86/avx2_math.h"

namespace pyengine {

namespace {

constexpr int kMR = 12, kNR = 32;

__attribute__((always_inline)) inline __m512 act512(__m512 v, const Epilogue& e) {
    switch (e.act) {
        case Activation::None: return v;
        case Activation::Relu: return _mm512_max_ps(v, _mm512_setzero_ps());
        case Activation::Relu6: return _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0f));
        case Activation::Clip: return _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(e.alpha)), _mm512_set1_ps(e.beta));
        case Activation::LeakyRelu: {
            const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
            return _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(e.alpha));
        }
        case Activation::HardSigmoid:
        case Activation::HardSwish: {
            __m512 t = _mm512_fmadd_ps(v, _mm512_set1_ps(e.alpha), _mm512_set1_ps(e.beta));
            t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), _mm512_set1_ps(1.0f));
            return e.act == Activation::HardSwish ? _mm512_mul_ps(v, t) : t;
        }
        default: break;
    }
    // Sigmoid, tanh and SiLU: the AVX2 code on each half (avx2_math.h has internal linkage, so this
    // file's copy is its own; libm per lane cost ~10 ns an element, more than the GEMM itself).
    const __m256 lo = activate256(_mm512_castps512_ps256(v), e);
    const __m256 hi = activate256(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)), e);
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
}

inline __mmask16 lane_mask(int lanes) {
    return lanes >= 16 ? __mmask16(0xFFFF) : (lanes <= 0 ? __mmask16(0) : __mmask16((1u << lanes) - 1));
}

// How one tile's rows leave the registers: C added (later K blocks), bias, activation, tail.
struct TileOut {
    bool accumulate, bias, bias_per_row, act;
    __mmask16 m0, m1;  // the columns of C that exist
    __m512 col_bias0, col_bias1;
    const Epilogue* ep;
    int64_t row0;

    TileOut(int n, bool accumulate_c, const Epilogue* e, int64_t r0, int64_t col0)
        : accumulate(accumulate_c), bias(e != nullptr && e->bias != nullptr),
          bias_per_row(bias && e->bias_per_row), act(e != nullptr && e->act != Activation::None),
          m0(lane_mask(n)), m1(lane_mask(n - 16)), col_bias0(_mm512_setzero_ps()),
          col_bias1(_mm512_setzero_ps()), ep(e), row0(r0) {
        if (bias && !bias_per_row) {
            col_bias0 = _mm512_maskz_loadu_ps(m0, e->bias + col0);
            col_bias1 = _mm512_maskz_loadu_ps(m1, e->bias + col0 + 16);
        }
    }

    __attribute__((always_inline)) void store(float* ci, int i, __m512 v0, __m512 v1) const {
        if (accumulate) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
        }
        if (bias) {
            const __m512 b0 = bias_per_row ? _mm512_set1_ps(ep->bias[row0 + i]) : col_bias0;
            const __m512 b1 = bias_per_row ? b0 : col_bias1;
            v0 = _mm512_add_ps(v0, b0);
            v1 = _mm512_add_ps(v1, b1);
        }
        if (act) {
            v0 = act512(v0, *ep);
            v1 = act512(v1, *ep);
        }
        _mm512_mask_storeu_ps(ci, m0, v0);
        _mm512_mask_storeu_ps(ci + 16, m1, v1);
    }
};

// One M x 32 tile. Every accumulator is a named local, not an array element, so that the
// compiler keeps all of them in registers through the k loop (an array of __m512, which may
// alias the float loads, ends up stored to the stack on every iteration).
#define PYENGINE_ROW(I, ACC)                                  \
    if constexpr (M > I) {                                    \
        const __m512 av = _mm512_set1_ps(ak[I * a_rs]);       \
        ACC##I##_0 = _mm512_fmadd_ps(av, b0, ACC##I##_0);     \
        ACC##I##_1 = _mm512_fmadd_ps(av, b1, ACC##I##_1);     \
    }
#define PYENGINE_STEP(AK, BK, ACC)                                                              \
    do {                                                                                        \
        const float* ak = (AK);                                                                 \
        const __m512 b0 = kFullB ? _mm512_loadu_ps(BK) : _mm512_maskz_loadu_ps(l0, BK);     \
        const __m512 b1 = kFullB ? _mm512_loadu_ps((BK) + 16) : _mm512_maskz_loadu_ps(l1, (BK) + 16); \
        PYENGINE_ROW(0, ACC) PYENGINE_ROW(1, ACC) PYENGINE_ROW(2, ACC) PYENGINE_ROW(3, ACC)     \
        PYENGINE_ROW(4, ACC) PYENGINE_ROW(5, ACC) PYENGINE_ROW(6, ACC) PYENGINE_ROW(7, ACC)     \
        PYENGINE_ROW(8, ACC) PYENGINE_ROW(9, ACC) PYENGINE_ROW(10, ACC) PYENGINE_ROW(11, ACC)   \
    } while (0)
#define PYENGINE_STORE(I) \
    if constexpr (M > I) out.store(c + I * ldc, I, _mm512_add_ps(c##I##_0, e##I##_0), _mm512_add_ps(c##I##_1, e##I##_1));

template <int M, bool kPacked, bool kFullB>
void kernel(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
            bool b_padded, float* c, int64_t ldc, int n, bool accumulate_c, const Epilogue* ep,
            int64_t row0, int64_t col0) {
    // Packed panels are zero-padded and may be read in full; otherwise only the n columns.
    const __mmask16 l0 = b_padded ? __mmask16(0xFFFF) : lane_mask(n);
    const __mmask16 l1 = b_padded ? __mmask16(0xFFFF) : lane_mask(n - 16);
    if (kPacked) {
        a_rs = 1;
        a_cs = kMR;
    }
    // c: the sums; e: a second set for odd k when M <= 2 (zero otherwise).
    __m512 c0_0 = _mm512_setzero_ps(), c0_1 = c0_0, e0_0 = c0_0, e0_1 = c0_0;
    __m512 c1_0 = c0_0, c1_1 = c0_0, e1_0 = c0_0, e1_1 = c0_0;
    __m512 c2_0 = c0_0, c2_1 = c0_0, e2_0 = c0_0, e2_1 = c0_0;
    __m512 c3_0 = c0_0, c3_1 = c0_0, e3_0 = c0_0, e3_1 = c0_0;
    __m512 c4_0 = c0_0, c4_1 = c0_0, e4_0 = c0_0, e4_1 = c0_0;
    __m512 c5_0 = c0_0, c5_1 = c0_0, e5_0 = c0_0, e5_1 = c0_0;
    __m512 c6_0 = c0_0, c6_1 = c0_0, e6_0 = c0_0, e6_1 = c0_0;
    __m512 c7_0 = c0_0, c7_1 = c0_0, e7_0 = c0_0, e7_1 = c0_0;
    __m512 c8_0 = c0_0, c8_1 = c0_0, e8_0 = c0_0, e8_1 = c0_0;
    __m512 c9_0 = c0_0, c9_1 = c0_0, e9_0 = c0_0, e9_1 = c0_0;
    __m512 c10_0 = c0_0, c10_1 = c0_0, e10_0 = c0_0, e10_1 = c0_0;
    __m512 c11_0 = c0_0, c11_1 = c0_0, e11_0 = c0_0, e11_1 = c0_0;
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
    PYENGINE_STORE(6) PYENGINE_STORE(7) PYENGINE_STORE(8) PYENGINE_STORE(9) PYENGINE_STORE(10) PYENGINE_STORE(11)
}
#undef PYENGINE_ROW
#undef PYENGINE_STEP
#undef PYENGINE_STORE

template <int M>
void tile(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
          bool b_padded, float* c, int64_t ldc, int n, bool accumulate_c, const Epilogue* ep,
          int64_t row0, int64_t col0) {
    const bool packed = a_rs == 1 && a_cs == kMR;
    // A whole 32-column row of B can be loaded without a mask (padded panel, or n == 32).
    const bool full_b = b_padded || n == kNR;
    if (packed && full_b) kernel<M, true, true>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0);
    else if (full_b) kernel<M, false, true>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0);
    else if (packed) kernel<M, true, false>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0);
    else kernel<M, false, false>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0);
}

void micro_avx512(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                int64_t b_rs, bool b_padded, float* c, int64_t ldc, int m, int n,
                bool accumulate_c, const Epilogue* ep, int64_t row0, int64_t col0) {
    switch (m) {
        case 1: tile<1>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 2: tile<2>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 3: tile<3>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 4: tile<4>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 5: tile<5>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 6: tile<6>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 7: tile<7>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 8: tile<8>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 9: tile<9>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 10: tile<10>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        case 11: tile<11>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
        default: tile<12>(kc, a, a_rs, a_cs, b, b_rs, b_padded, c, ldc, n, accumulate_c, ep, row0, col0); break;
    }
}

// One wide row of C (more than 256 columns): four rows of B at a time, each read start to end,
// with the partial sums in c (L1). Four sequential streams suit the prefetcher when B is too
// big for L2, where 1 KB runs 4 KB apart would not.
void row_wide_avx512(int64_t K, const float* a, const float* b, int64_t b_rs, float* c, int n,
                     const Epilogue* ep, int64_t row0, int64_t col0) {
    const int64_t full = n / 16 * 16;
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - full)) - 1);
    int64_t k = 0;
    for (; k < K; k += 4) {
        const int64_t kn = K - k < 4 ? K - k : 4;
        const __m512 a0 = _mm512_set1_ps(a[k]);
        const __m512 a1 = _mm512_set1_ps(kn > 1 ? a[k + 1] : 0.0f);
        const __m512 a2 = _mm512_set1_ps(kn > 2 ? a[k + 2] : 0.0f);
        const __m512 a3 = _mm512_set1_ps(kn > 3 ? a[k + 3] : 0.0f);
        const float* b0 = b + k * b_rs;
        const float* b1 = kn > 1 ? b0 + b_rs : b0;  // a1..a3 are 0 where rows run out
        const float* b2 = kn > 2 ? b1 + b_rs : b0;
        const float* b3 = kn > 3 ? b2 + b_rs : b0;
        for (int64_t j = 0; j <= full; j += 16) {
            const __mmask16 mk = j < full ? __mmask16(0xFFFF) : tail;
            if (mk == 0) break;
            __m512 v = k == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk, c + j);
            v = _mm512_fmadd_ps(a0, _mm512_maskz_loadu_ps(mk, b0 + j), v);
            v = _mm512_fmadd_ps(a1, _mm512_maskz_loadu_ps(mk, b1 + j), v);
            v = _mm512_fmadd_ps(a2, _mm512_maskz_loadu_ps(mk, b2 + j), v);
            v = _mm512_fmadd_ps(a3, _mm512_maskz_loadu_ps(mk, b3 + j), v);
            _mm512_mask_storeu_ps(c + j, mk, v);
        }
    }
    if (ep->bias == nullptr && ep->act == Activation::None) return;
    for (int64_t j = 0; j <= full; j += 16) {
        const __mmask16 mk = j < full ? __mmask16(0xFFFF) : tail;
        if (mk == 0) break;
        __m512 v = _mm512_maskz_loadu_ps(mk, c + j);
        if (ep->bias) {
            v = _mm512_add_ps(v, ep->bias_per_row ? _mm512_set1_ps(ep->bias[row0])
                                                  : _mm512_maskz_loadu_ps(mk, ep->bias + col0 + j));
        }
        if (ep->act != Activation::None) v = act512(v, *ep);
        _mm512_mask_storeu_ps(c + j, mk, v);
    }
}

// One row of C with kRegs zmm accumulators (16 * kRegs columns at most; the last is masked).
// kRegs is a template argument so that the k loop has no per-register branches.
template <int kRegs>
void row_regs(int64_t K, const float* a, const float* b, int64_t b_rs, float* c, int n,
              const Epilogue* ep, int64_t row0, int64_t col0) {
    const __mmask16 last = lane_mask(n - 16 * (kRegs - 1));
#define PYENGINE_MASK(R) (R == kRegs - 1 ? last : __mmask16(0xFFFF))
#define PYENGINE_ACC(R) __m512 acc##R = _mm512_setzero_ps();
    PYENGINE_ACC(0) PYENGINE_ACC(1) PYENGINE_ACC(2) PYENGINE_ACC(3) PYENGINE_ACC(4) PYENGINE_ACC(5)
    PYENGINE_ACC(6) PYENGINE_ACC(7) PYENGINE_ACC(8) PYENGINE_ACC(9) PYENGINE_ACC(10) PYENGINE_ACC(11)
    PYENGINE_ACC(12) PYENGINE_ACC(13) PYENGINE_ACC(14) PYENGINE_ACC(15)
#undef PYENGINE_ACC
#define PYENGINE_FMA(R)                                                                          \
    if constexpr (R < kRegs) {                                                                   \
        const __m512 bv = R == kRegs - 1 ? _mm512_maskz_loadu_ps(last, bk + 16 * R)             \
                                         : _mm512_loadu_ps(bk + 16 * R);                         \
        acc##R = _mm512_fmadd_ps(av, bv, acc##R);                                                \
    }
    for (int64_t k = 0; k < K; ++k) {
        const __m512 av = _mm512_set1_ps(a[k]);
        const float* bk = b + k * b_rs;
        PYENGINE_FMA(0) PYENGINE_FMA(1) PYENGINE_FMA(2) PYENGINE_FMA(3) PYENGINE_FMA(4) PYENGINE_FMA(5)
        PYENGINE_FMA(6) PYENGINE_FMA(7) PYENGINE_FMA(8) PYENGINE_FMA(9) PYENGINE_FMA(10) PYENGINE_FMA(11)
        PYENGINE_FMA(12) PYENGINE_FMA(13) PYENGINE_FMA(14) PYENGINE_FMA(15)
    }
#undef PYENGINE_FMA
    const bool bias = ep->bias != nullptr;
    const bool act = ep->act != Activation::None;
#define PYENGINE_OUT(R)                                                                          \
    if constexpr (R < kRegs) {                                                                   \
        __m512 v = acc##R;                                                                       \
        if (bias) {                                                                              \
            v = _mm512_add_ps(v, ep->bias_per_row                                                \
                                     ? _mm512_set1_ps(ep->bias[row0])                            \
                                     : _mm512_maskz_loadu_ps(PYENGINE_MASK(R), ep->bias + col0 + 16 * R)); \
        }                                                                                        \
        if (act) v = act512(v, *ep);                                                             \
        _mm512_mask_storeu_ps(c + 16 * R, PYENGINE_MASK(R), v);                                  \
    }
    PYENGINE_OUT(0) PYENGINE_OUT(1) PYENGINE_OUT(2) PYENGINE_OUT(3) PYENGINE_OUT(4) PYENGINE_OUT(5)
    PYENGINE_OUT(6) PYENGINE_OUT(7) PYENGINE_OUT(8) PYENGINE_OUT(9) PYENGINE_OUT(10) PYENGINE_OUT(11)
    PYENGINE_OUT(12) PYENGINE_OUT(13) PYENGINE_OUT(14) PYENGINE_OUT(15)
#undef PYENGINE_OUT
#undef PYENGINE_MASK
}

// One row of C: up to 256 columns in registers, more through row_wide_avx512.
void row_avx512(int64_t K, const float* a, const float* b, int64_t b_rs, float* c, int n,
                const Epilogue* ep, int64_t row0, int64_t col0) {
    switch ((n + 15) / 16) {
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
        default: row_wide_avx512(K, a, b, b_rs, c, n, ep, row0, col0); break;
    }
}

}  // namespace

const GemmMicroKernel& gemm_micro_avx512() {
    static const GemmMicroKernel uk = {kMR, kNR, micro_avx512, 256, row_avx512};
    return uk;
}

void gemm_avx512(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep) {
    gemm_driver(gemm_micro_avx512(), M, N, K, A, lda, B, ldb, trans_b, C, ldc, ep);
}

}  // namespace pyengine

#endif  // defined(__AVX512F__) && defined(__FMA__)
