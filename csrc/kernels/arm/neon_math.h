// SPDX-License-Identifier: Apache-2.0
// NEON building blocks shared by the *_arm_neon.cpp kernels; only those files include it.
//
// On armv7 those files alone are compiled with -mfpu=neon, and the rest of the library runs on
// CPUs without NEON. An inline function or template with external linkage used here could have
// its out-of-line copy (built with NEON) picked by the linker for baseline code too, so this
// header gives everything internal linkage and the NEON files use no std:: algorithms or
// containers and never call activate() from kernels/activation.h.
#pragma once

#include <arm_neon.h>

#include <cstdint>
#include <cstdlib>
#include <new>

#include "kernels/activation.h"

namespace pyengine {
namespace neon {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// acc + a * b (fused on AArch64; armv7 NEON has only the separately rounded form).
inline float32x4_t madd(float32x4_t acc, float32x4_t a, float32x4_t b) {
#if defined(__aarch64__)
    return vfmaq_f32(acc, a, b);
#else
    return vmlaq_f32(acc, a, b);
#endif  // defined(__aarch64__)
}

// a / b: exact on AArch64; on armv7 (no vector divide) a reciprocal estimate refined twice by
// Newton-Raphson, within 2 ulp of the quotient.
inline float32x4_t divide(float32x4_t a, float32x4_t b) {
#if defined(__aarch64__)
    return vdivq_f32(a, b);
#else
    float32x4_t r = vrecpeq_f32(b);
    r = vmulq_f32(vrecpsq_f32(b, r), r);
    r = vmulq_f32(vrecpsq_f32(b, r), r);
    return vmulq_f32(a, r);
#endif  // defined(__aarch64__)
}

inline float hmax(float32x4_t v) {
#if defined(__aarch64__)
    return vmaxvq_f32(v);
#else
    float32x2_t m = vpmax_f32(vget_low_f32(v), vget_high_f32(v));
    m = vpmax_f32(m, m);
    return vget_lane_f32(m, 0);
#endif  // defined(__aarch64__)
}

inline float hsum(float32x4_t v) {
#if defined(__aarch64__)
    return vaddvq_f32(v);
#else
    float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    s = vpadd_f32(s, s);
    return vget_lane_f32(s, 0);
#endif  // defined(__aarch64__)
}

inline float32x4_t floor4(float32x4_t x) {
#if defined(__aarch64__)
    return vrndmq_f32(x);
#else
    // Truncation rounds toward zero; step down where that went up (negative non-integers).
    float32x4_t t = vcvtq_f32_s32(vcvtq_s32_f32(x));
    uint32x4_t up = vcgtq_f32(t, x);
    return vsubq_f32(t, vreinterpretq_f32_u32(vandq_u32(up, vreinterpretq_u32_f32(vdupq_n_f32(1.0f)))));
#endif  // defined(__aarch64__)
}

// e^x, the Cephes single-precision polynomial (about 1 ulp). Inputs are clamped to the range
// where the result is a normal float: below it gives ~1.2e-38 instead of a denormal or zero.
inline float32x4_t exp4(float32x4_t x) {
    x = vminq_f32(x, vdupq_n_f32(88.37f));
    x = vmaxq_f32(x, vdupq_n_f32(-87.33654f));
    // x = n ln2 + r with |r| <= ln2/2; ln2 split in two for an exact product.
    float32x4_t n = floor4(madd(vdupq_n_f32(0.5f), x, vdupq_n_f32(1.44269504088896341f)));
    x = vsubq_f32(x, vmulq_f32(n, vdupq_n_f32(0.693359375f)));
    x = vsubq_f32(x, vmulq_f32(n, vdupq_n_f32(-2.12194440e-4f)));
    float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
    y = madd(vdupq_n_f32(1.3981999507e-3f), y, x);
    y = madd(vdupq_n_f32(8.3334519073e-3f), y, x);
    y = madd(vdupq_n_f32(4.1665795894e-2f), y, x);
    y = madd(vdupq_n_f32(1.6666665459e-1f), y, x);
    y = madd(vdupq_n_f32(5.0000001201e-1f), y, x);
    y = madd(vaddq_f32(x, vdupq_n_f32(1.0f)), y, vmulq_f32(x, x));
    // 2^n built in the exponent field; n lies in [-126, 127] after the clamp.
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(e));
}

inline float32x4_t sigmoid4(float32x4_t x) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    return divide(one, vaddq_f32(one, exp4(vnegq_f32(x))));
}

// tanh: an odd polynomial near zero (where 1 - 2/(e^2x + 1) would cancel), Cephes tanhf.
inline float32x4_t tanh4(float32x4_t x) {
    const float32x4_t ax = vabsq_f32(x);
    const float32x4_t z = vmulq_f32(x, x);
    float32x4_t p = vdupq_n_f32(-5.70498872745e-3f);
    p = madd(vdupq_n_f32(2.06390887954e-2f), p, z);
    p = madd(vdupq_n_f32(-5.37397155531e-2f), p, z);
    p = madd(vdupq_n_f32(1.33314422036e-1f), p, z);
    p = madd(vdupq_n_f32(-3.33332819422e-1f), p, z);
    const float32x4_t small = madd(x, vmulq_f32(p, z), x);
    // |x| >= 9 is +-1 in float; the clamp keeps e^2x finite.
    const float32x4_t e = exp4(vmulq_f32(vminq_f32(ax, vdupq_n_f32(9.0f)), vdupq_n_f32(2.0f)));
    const float32x4_t one = vdupq_n_f32(1.0f);
    float32x4_t large = vsubq_f32(one, divide(vdupq_n_f32(2.0f), vaddq_f32(e, one)));
    // Give `large` the sign of x.
    const uint32x4_t sign = vandq_u32(vreinterpretq_u32_f32(x), vdupq_n_u32(0x80000000u));
    large = vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(large), sign));
    return vbslq_f32(vcltq_f32(ax, vdupq_n_f32(0.625f)), small, large);
}

// One functor per activation, with the same comparisons as activate() so NaN and the
// boundaries behave alike.
struct ActNone {
    float32x4_t operator()(float32x4_t v) const { return v; }
};
struct ActRelu {
    float32x4_t operator()(float32x4_t v) const {
        return vbslq_f32(vcgtq_f32(v, vdupq_n_f32(0.0f)), v, vdupq_n_f32(0.0f));
    }
};
struct ActRelu6 {
    float32x4_t operator()(float32x4_t v) const {
        v = vbslq_f32(vcltq_f32(v, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f), v);
        return vbslq_f32(vcgtq_f32(v, vdupq_n_f32(6.0f)), vdupq_n_f32(6.0f), v);
    }
};
struct ActLeakyRelu {
    float32x4_t alpha;
    float32x4_t operator()(float32x4_t v) const {
        return vbslq_f32(vcgeq_f32(v, vdupq_n_f32(0.0f)), v, vmulq_f32(v, alpha));
    }
};
struct ActSigmoid {
    float32x4_t operator()(float32x4_t v) const { return sigmoid4(v); }
};
struct ActTanh {
    float32x4_t operator()(float32x4_t v) const { return tanh4(v); }
};
struct ActClip {
    float32x4_t lo, hi;
    float32x4_t operator()(float32x4_t v) const {
        v = vbslq_f32(vcltq_f32(v, lo), lo, v);
        return vbslq_f32(vcgtq_f32(v, hi), hi, v);
    }
};

struct ActHardSigmoid {
    float32x4_t alpha, beta;
    bool swish;  // HardSwish: v * hard_sigmoid(v)
    float32x4_t operator()(float32x4_t v) const {
        float32x4_t t = madd(beta, alpha, v);
        t = vbslq_f32(vcltq_f32(t, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f), t);
        t = vbslq_f32(vcgtq_f32(t, vdupq_n_f32(1.0f)), vdupq_n_f32(1.0f), t);
        return swish ? vmulq_f32(v, t) : t;
    }
};
struct ActSilu {
    float32x4_t operator()(float32x4_t v) const { return vmulq_f32(v, sigmoid4(v)); }
};

// Calls f with the functor for e.act, so the activation is chosen once, outside the loops.
template <class F>
inline void with_activation(const Epilogue& e, F&& f) {
    switch (e.act) {
        case Activation::None: f(ActNone{}); return;
        case Activation::Relu: f(ActRelu{}); return;
        case Activation::Relu6: f(ActRelu6{}); return;
        case Activation::LeakyRelu: f(ActLeakyRelu{vdupq_n_f32(e.alpha)}); return;
        case Activation::Sigmoid: f(ActSigmoid{}); return;
        case Activation::Tanh: f(ActTanh{}); return;
        case Activation::Clip: f(ActClip{vdupq_n_f32(e.alpha), vdupq_n_f32(e.beta)}); return;
        case Activation::HardSigmoid:
        case Activation::HardSwish:
            f(ActHardSigmoid{vdupq_n_f32(e.alpha), vdupq_n_f32(e.beta), e.act == Activation::HardSwish});
            return;
        case Activation::Silu: f(ActSilu{}); return;
    }
    f(ActNone{});
}

// y[i] = act(x[i] + bias) for n elements; the tail goes through a padded vector so every
// element gets the same arithmetic.
template <class Act>
inline void apply_row(const float* x, float* y, int64_t n, float bias, const Act& act) {
    const float32x4_t b = vdupq_n_f32(bias);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, act(vaddq_f32(vld1q_f32(x + i), b)));
    if (i < n) {
        float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t j = i; j < n; ++j) t[j - i] = x[j];
        vst1q_f32(t, act(vaddq_f32(vld1q_f32(t), b)));
        for (int64_t j = i; j < n; ++j) y[j] = t[j - i];
    }
}

// A malloc'ed scratch buffer (std::vector would instantiate shared templates in NEON code).
struct Scratch {
    float* p;
    explicit Scratch(int64_t n) : p(static_cast<float*>(std::malloc(static_cast<size_t>(n > 0 ? n : 1) * sizeof(float)))) {
        if (p == nullptr) throw std::bad_alloc();
    }
    ~Scratch() { std::free(p); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
};

}  // namespace
}  // namespace neon
}  // namespace pyengine
