// SPDX-License-Identifier: Apache-2.0
// The erf / GELU loop shared by the generic and the vector variants (kernels/erf.h). Included by
// one source file per ISA, which compiles it with that ISA's flags: plain arithmetic with min/max
// clamps and no branches or library calls, so the compiler vectorizes it at any width.
#pragma once

#include <cstdint>

// The clamps are compares; GCC if-converts (so vectorizes) them only without trapping math.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif  // defined(__GNUC__) && !defined(__clang__)

namespace pyengine {
namespace erf_body {
// Internal linkage: each ISA's file keeps its own copy (no weak symbol the linker could share).
namespace {

inline float fast_erf(float a) {
    // erf(x) = x · P(x²) / Q(x²) on [-4, 4]; |erf| beyond 4 is 1 to float precision.
    const float x = a < -4.0f ? -4.0f : (a > 4.0f ? 4.0f : a);
    const float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return x * p / q;
}

inline void run(const float* x, float* y, int64_t n, bool gelu) {
    if (gelu) {
        for (int64_t i = 0; i < n; ++i) {
            const float v = x[i];
            y[i] = 0.5f * v * (1.0f + fast_erf(v * 0.70710678118654752f));
        }
    } else {
        for (int64_t i = 0; i < n; ++i) y[i] = fast_erf(x[i]);
    }
}

}  // namespace
}  // namespace erf_body
}  // namespace pyengine

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif  // defined(__GNUC__) && !defined(__clang__)
