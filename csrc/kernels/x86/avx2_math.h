// SPDX-License-Identifier: Apache-2.0
// AVX2+FMA vector helpers shared by the *_x86_avx2.cpp files and the AVX-512 GEMM's epilogue
// (include only from x86 kernel files: everything here has internal linkage, so each file's copy
// is compiled for that file's instruction set).
#pragma once

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <cstdint>

#include "kernels/activation.h"

namespace pyengine {
namespace {

// exp(x) for 8 floats (Cephes polynomial, relative error ~2e-7; clamps to +-88.4).
inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    const __m256 x2 = _mm256_mul_ps(x, x);
    y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_cvttps_epi32(fx);
    e = _mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline __m256 sigmoid256(__m256 v) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), v))));
}

// tanh(v) = 1 - 2 / (exp(2v) + 1); exact at 0 and saturates cleanly.
inline __m256 tanh256(__m256 v) {
    const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
    const __m256 e = exp256(_mm256_mul_ps(v, two));
    __m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
    // Near 0 the subtraction loses relative precision; there tanh(v) ~ v - v^3/3.
    const __m256 small = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), _mm256_set1_ps(0.0625f), _CMP_LT_OQ);
    const __m256 v2 = _mm256_mul_ps(v, v);
    __m256 p = _mm256_fmadd_ps(v2, _mm256_set1_ps(2.0f / 15.0f), _mm256_set1_ps(-1.0f / 3.0f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, v2), v, v);
    return _mm256_blendv_ps(t, p, small);
}

// The activation of `e` on 8 floats.
inline __m256 activate256(__m256 v, const Epilogue& e) {
    switch (e.act) {
        case Activation::None: return v;
        case Activation::Relu: return _mm256_max_ps(v, _mm256_setzero_ps());
        case Activation::Relu6:
            return _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
        case Activation::LeakyRelu: {
            const __m256 neg = _mm256_mul_ps(v, _mm256_set1_ps(e.alpha));
            return _mm256_blendv_ps(v, neg, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
        }
        case Activation::Sigmoid: return sigmoid256(v);
        case Activation::Tanh: return tanh256(v);
        case Activation::Clip:
            return _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(e.alpha)), _mm256_set1_ps(e.beta));
        case Activation::HardSigmoid:
        case Activation::HardSwish: {
            __m256 t = _mm256_fmadd_ps(v, _mm256_set1_ps(e.alpha), _mm256_set1_ps(e.beta));
            t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
            return e.act == Activation::HardSwish ? _mm256_mul_ps(v, t) : t;
        }
        case Activation::Silu: return _mm256_mul_ps(v, sigmoid256(v));
    }
    return v;
}

// Lane mask with the first n (0..8) lanes set, for maskload/maskstore.
inline __m256i tail_mask(int n) {
    static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + 8 - (n < 0 ? 0 : (n > 8 ? 8 : n))));
}

}  // namespace
}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
