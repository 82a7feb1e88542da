// SPDX-License-Identifier: Apache-2.0
// NEON blocked convolution: the shared body with 4-channel blocks (one q register), tiles of
// 4 blocks x 6 pixels, and the NEON vector activations.
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/conv_nchwc.h"

namespace pyengine {
namespace {
void act_row(float* row, int64_t n, const Epilogue& e) {
    if (e.act != Activation::None) activation_apply_arm_neon(row, row, n, e);
}
}  // namespace
}  // namespace pyengine

#include "kernels/conv_nchwc_body.h"

namespace pyengine {

void conv_nchwc_arm_neon(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                         int64_t q0, int64_t q1) {
    nchwc_conv_body<4, 4, 6>(c, x, y, n, ob0, ob1, q0, q1);
}

}  // namespace pyengine
