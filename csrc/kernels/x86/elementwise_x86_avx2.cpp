// SPDX-License-Identifier: Apache-2.0
// AVX2+FMA elementwise kernels: binary ops, activations, softmax.
#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/x86/avx2_math.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {

namespace {

template <BinaryOp kOp>
inline __m256 apply(__m256 a, __m256 b) {
    if (kOp == BinaryOp::Add) return _mm256_add_ps(a, b);
    if (kOp == BinaryOp::Sub) return _mm256_sub_ps(a, b);
    if (kOp == BinaryOp::Mul) return _mm256_mul_ps(a, b);
    return _mm256_div_ps(a, b);
}

template <BinaryOp kOp>
inline float apply1(float a, float b) {
    if (kOp == BinaryOp::Add) return a + b;
    if (kOp == BinaryOp::Sub) return a - b;
    if (kOp == BinaryOp::Mul) return a * b;
    return a / b;
}

template <BinaryOp kOp>
void binary_loop(const float* a, int64_t as, const float* b, int64_t bs, float* y, int64_t n) {
    int64_t i = 0;
    if (as == 1 && bs == 1) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, apply<kOp>(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    } else if (as == 1 && bs == 0) {
        const __m256 bv = _mm256_set1_ps(b[0]);
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, apply<kOp>(_mm256_loadu_ps(a + i), bv));
    } else if (as == 0 && bs == 1) {
        const __m256 av = _mm256_set1_ps(a[0]);
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, apply<kOp>(av, _mm256_loadu_ps(b + i)));
    }
    for (; i < n; ++i) y[i] = apply1<kOp>(a[i * as], b[i * bs]);
}

}  // namespace

void binary_avx2(BinaryOp op, const float* a, int64_t as, const float* b, int64_t bs, float* y, int64_t n) {
    switch (op) {
        case BinaryOp::Add: binary_loop<BinaryOp::Add>(a, as, b, bs, y, n); break;
        case BinaryOp::Sub: binary_loop<BinaryOp::Sub>(a, as, b, bs, y, n); break;
        case BinaryOp::Mul: binary_loop<BinaryOp::Mul>(a, as, b, bs, y, n); break;
        case BinaryOp::Div: binary_loop<BinaryOp::Div>(a, as, b, bs, y, n); break;
    }
}

void activation_apply_avx2(const float* x, float* y, int64_t n, const Epilogue& e) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, activate256(_mm256_loadu_ps(x + i), e));
    if (i < n) {  // the tail through the same vector code, so every element gets the same math
        const __m256i m = tail_mask(static_cast<int>(n - i));
        _mm256_maskstore_ps(y + i, m, activate256(_mm256_maskload_ps(x + i, m), e));
    }
}

void softmax_avx2(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner) {
    if (inner == 1) {
        for (int64_t o = 0; o < outer; ++o) {
            const float* xp = x + o * axis;
            float* yp = y + o * axis;
            const int64_t full = axis / 8 * 8;
            const __m256i tm = tail_mask(static_cast<int>(axis - full));
            const __m256 ninf = _mm256_set1_ps(-INFINITY);
            __m256 mv = ninf;
            for (int64_t a = 0; a < full; a += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(xp + a));
            if (full < axis) mv = _mm256_max_ps(mv, _mm256_blendv_ps(ninf, _mm256_maskload_ps(xp + full, tm), _mm256_castsi256_ps(tm)));
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
            const __m256 m = _mm256_set1_ps(_mm_cvtss_f32(m4));
            __m256 sv = _mm256_setzero_ps();
            for (int64_t a = 0; a < full; a += 8) {
                const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(xp + a), m));
                _mm256_storeu_ps(yp + a, e);
                sv = _mm256_add_ps(sv, e);
            }
            if (full < axis) {
                __m256 e = exp256(_mm256_sub_ps(_mm256_maskload_ps(xp + full, tm), m));
                e = _mm256_and_ps(e, _mm256_castsi256_ps(tm));
                _mm256_maskstore_ps(yp + full, tm, e);
                sv = _mm256_add_ps(sv, e);
            }
            __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(sv), _mm256_extractf128_ps(sv, 1));
            s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
            const __m256 inv = _mm256_set1_ps(1.0f / _mm_cvtss_f32(s4));
            for (int64_t a = 0; a < full; a += 8) _mm256_storeu_ps(yp + a, _mm256_mul_ps(_mm256_loadu_ps(yp + a), inv));
            if (full < axis) _mm256_maskstore_ps(yp + full, tm, _mm256_mul_ps(_mm256_maskload_ps(yp + full, tm), inv));
        }
        return;
    }
    // Softmax over a strided axis: vectorize across `inner`, 8 columns (or a masked tail) at once.
    for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; i += 8) {
            const __m256i tm = tail_mask(static_cast<int>(inner - i < 8 ? inner - i : 8));
            const float* xp = x + o * axis * inner + i;
            float* yp = y + o * axis * inner + i;
            __m256 m = _mm256_maskload_ps(xp, tm);
            for (int64_t a = 1; a < axis; ++a) m = _mm256_max_ps(m, _mm256_maskload_ps(xp + a * inner, tm));
            __m256 s = _mm256_setzero_ps();
            for (int64_t a = 0; a < axis; ++a) {
                const __m256 e = exp256(_mm256_sub_ps(_mm256_maskload_ps(xp + a * inner, tm), m));
                _mm256_maskstore_ps(yp + a * inner, tm, e);
                s = _mm256_add_ps(s, e);
            }
            const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
            for (int64_t a = 0; a < axis; ++a) {
                _mm256_maskstore_ps(yp + a * inner, tm, _mm256_mul_ps(_mm256_maskload_ps(yp + a * inner, tm), inv));
            }
        }
    }
}

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
