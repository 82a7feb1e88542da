// SPDX-License-Identifier: Apache-2.0
// NEON Winograd F(4x4, 3x3): the shared body with 4-channel blocks (one q register), GEMM
// tiles of 4 blocks x 6 tiles, and the NEON vector activations.
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/conv_winograd.h"

namespace pyengine {
namespace {
void act_row(float* row, int64_t n, const Epilogue& e) {
    if (e.act != Activation::None) activation_apply_arm_neon(row, row, n, e);
}
}  // namespace
}  // namespace pyengine

#include "kernels/conv_nchwc_body.h"
#include "kernels/conv_winograd_body.h"

namespace pyengine {

void conv_winograd_arm_neon(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                            int64_t t0, int64_t t1, int64_t tb, float* scratch) {
    wino_body<4, 4, 6>(c, x, y, n, ob0, ob1, t0, t1, tb, scratch);
}

}  // namespace pyengine
