// SPDX-License-Identifier: Apache-2.0
// NEON per-channel blocked kernels: the shared body with 4-channel blocks (one q register).
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/nchwc_channel_body.h"

namespace pyengine {

void nchwc_binary_channel_arm_neon(BinaryOp op, const float* a, const float* v, float* y, int64_t HW) {
    nchwc_binary_channel_body<4>(op, a, v, y, HW);
}

void nchwc_affine_arm_neon(const float* x, const float* scale, const float* shift, float* y, int64_t HW) {
    nchwc_affine_body<4>(x, scale, shift, y, HW);
}

}  // namespace pyengine
