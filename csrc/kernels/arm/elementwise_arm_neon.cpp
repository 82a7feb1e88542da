// SPDX-License-Identifier: Apache-2.0
// Binary elementwise ops and softmax.
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/arm/neon_math.h"

namespace pyengine {

namespace {

struct VAdd {
    float32x4_t operator()(float32x4_t a, float32x4_t b) const { return vaddq_f32(a, b); }
    float operator()(float a, float b) const { return a + b; }
};
struct VSub {
    float32x4_t operator()(float32x4_t a, float32x4_t b) const { return vsubq_f32(a, b); }
    float operator()(float a, float b) const { return a - b; }
};
struct VMul {
    float32x4_t operator()(float32x4_t a, float32x4_t b) const { return vmulq_f32(a, b); }
    float operator()(float a, float b) const { return a * b; }
};
#if defined(__aarch64__)
struct VDiv {  // vdivq_f32 is correctly rounded, like the scalar division
    float32x4_t operator()(float32x4_t a, float32x4_t b) const { return vdivq_f32(a, b); }
    float operator()(float a, float b) const { return a / b; }
};
#endif  // defined(__aarch64__)

// Steps are 0 (a broadcast scalar) or 1; each combination gets its own loop.
template <class Op>
void binary_loop(const Op& op, const float* a, int64_t as, const float* b, int64_t bs, float* y,
                 int64_t n) {
    int64_t i = 0;
    if (as != 0 && bs != 0) {
        for (; i + 8 <= n; i += 8) {
            vst1q_f32(y + i, op(vld1q_f32(a + i), vld1q_f32(b + i)));
            vst1q_f32(y + i + 4, op(vld1q_f32(a + i + 4), vld1q_f32(b + i + 4)));
        }
        for (; i + 4 <= n; i += 4) vst1q_f32(y + i, op(vld1q_f32(a + i), vld1q_f32(b + i)));
    } else if (as != 0) {
        const float32x4_t vb = vdupq_n_f32(b[0]);
        for (; i + 4 <= n; i += 4) vst1q_f32(y + i, op(vld1q_f32(a + i), vb));
    } else if (bs != 0) {
        const float32x4_t va = vdupq_n_f32(a[0]);
        for (; i + 4 <= n; i += 4) vst1q_f32(y + i, op(va, vld1q_f32(b + i)));
    }
    for (; i < n; ++i) y[i] = op(a[i * as], b[i * bs]);
}

// Softmax over `axis` contiguous values (inner == 1, the usual last-axis case).
void softmax_row(const float* x, float* y, int64_t axis) {
    using namespace neon;
    float32x4_t m4 = vdupq_n_f32(x[0]);
    int64_t a = 0;
    for (; a + 4 <= axis; a += 4) m4 = vmaxq_f32(m4, vld1q_f32(x + a));
    float m = hmax(m4);
    for (; a < axis; ++a) m = x[a] > m ? x[a] : m;
    const float32x4_t vm = vdupq_n_f32(m);
    float32x4_t s4 = vdupq_n_f32(0.0f);
    a = 0;
    for (; a + 4 <= axis; a += 4) {
        const float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + a), vm));
        vst1q_f32(y + a, e);
        s4 = vaddq_f32(s4, e);
    }
    float s = hsum(s4);
    if (a < axis) {  // the tail through a padded vector, so it uses the same exp
        float t[4] = {m, m, m, m};
        for (int64_t j = a; j < axis; ++j) t[j - a] = x[j];
        vst1q_f32(t, exp4(vsubq_f32(vld1q_f32(t), vm)));
        for (int64_t j = a; j < axis; ++j) { y[j] = t[j - a]; s += t[j - a]; }
    }
    const float32x4_t inv = vdupq_n_f32(1.0f / s);
    a = 0;
    for (; a + 4 <= axis; a += 4) vst1q_f32(y + a, vmulq_f32(vld1q_f32(y + a), inv));
    for (; a < axis; ++a) y[a] *= 1.0f / s;
}

// Softmax over a strided axis: four neighbouring inner positions at a time.
void softmax_strided(const float* x, float* y, int64_t axis, int64_t inner) {
    using namespace neon;
    int64_t i = 0;
    for (; i + 4 <= inner; i += 4) {
        float32x4_t m = vld1q_f32(x + i);
        for (int64_t a = 1; a < axis; ++a) m = vmaxq_f32(m, vld1q_f32(x + a * inner + i));
        float32x4_t s = vdupq_n_f32(0.0f);
        for (int64_t a = 0; a < axis; ++a) {
            const float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + a * inner + i), m));
            vst1q_f32(y + a * inner + i, e);
            s = vaddq_f32(s, e);
        }
        const float32x4_t inv = divide(vdupq_n_f32(1.0f), s);
        for (int64_t a = 0; a < axis; ++a) {
            vst1q_f32(y + a * inner + i, vmulq_f32(vld1q_f32(y + a * inner + i), inv));
        }
    }
    for (; i < inner; ++i) {  // remaining positions one lane at a time
        float m = x[i];
        for (int64_t a = 1; a < axis; ++a) m = x[a * inner + i] > m ? x[a * inner + i] : m;
        float s = 0.0f;
        for (int64_t a = 0; a < axis; ++a) {
            const float e = vgetq_lane_f32(exp4(vdupq_n_f32(x[a * inner + i] - m)), 0);
            y[a * inner + i] = e;
            s += e;
        }
        const float inv = 1.0f / s;
        for (int64_t a = 0; a < axis; ++a) y[a * inner + i] *= inv;
    }
}

}  // namespace

void binary_arm_neon(BinaryOp op, const float* a, int64_t as, const float* b, int64_t bs,
                     float* y, int64_t n) {
    switch (op) {
        case BinaryOp::Add: binary_loop(VAdd{}, a, as, b, bs, y, n); return;
        case BinaryOp::Sub: binary_loop(VSub{}, a, as, b, bs, y, n); return;
        case BinaryOp::Mul: binary_loop(VMul{}, a, as, b, bs, y, n); return;
        case BinaryOp::Div:
#if defined(__aarch64__)
            binary_loop(VDiv{}, a, as, b, bs, y, n);
#else
            // armv7 NEON has no divide; the VFP one keeps results exact.
            for (int64_t i = 0; i < n; ++i) y[i] = a[i * as] / b[i * bs];
#endif  // defined(__aarch64__)
            return;
    }
}

void softmax_arm_neon(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner) {
    if (axis <= 0 || inner <= 0) return;
    for (int64_t o = 0; o < outer; ++o) {
        const float* xo = x + o * axis * inner;
        float* yo = y + o * axis * inner;
        if (inner == 1) {
            softmax_row(xo, yo, axis);
        } else {
            softmax_strided(xo, yo, axis, inner);
        }
    }
}

}  // namespace pyengine
