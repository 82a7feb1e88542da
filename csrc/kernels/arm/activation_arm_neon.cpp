// SPDX-License-Identifier: Apache-2.0
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/arm/neon_math.h"

namespace pyengine {

void activation_apply_arm_neon(const float* x, float* y, int64_t n, const Epilogue& e) {
    neon::with_activation(e, [&](const auto& act) { neon::apply_row(x, y, n, 0.0f, act); });
}

}  // namespace pyengine
