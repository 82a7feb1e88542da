// SPDX-License-Identifier: Apache-2.0
// AVX2 per-channel blocked kernels: the shared body with 8-channel blocks.
#include "kernels/nchwc_channel.h"

#if defined(__AVX2__) && defined(__FMA__)

#include "kernels/nchwc_channel_body.h"

namespace pyengine {

void nchwc_binary_channel_avx2(BinaryOp op, const float* a, const float* v, float* y, int64_t HW) {
    nchwc_binary_channel_body<8>(op, a, v, y, HW);
}

void nchwc_affine_avx2(const float* x, const float* scale, const float* shift, float* y, int64_t HW) {
    nchwc_affine_body<8>(x, scale, shift, y, HW);
}

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
