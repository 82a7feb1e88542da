// SPDX-License-Identifier: Apache-2.0
// erf and GELU over float arrays: a branch-free rational approximation (Eigen's / XLA's fast
// float erf, a few ulp from std::erf) that every ISA's compiler vectorizes from the same body.
#pragma once

#include <cstdint>

namespace pyengine {

// y[i] = erf(x[i]), or with gelu, x[i] / 2 · (1 + erf(x[i] / √2)) (ONNX Gelu, approximate "none").
void erf_apply(const float* x, float* y, int64_t n, bool gelu);
void erf_apply_generic(const float* x, float* y, int64_t n, bool gelu);

}  // namespace pyengine
