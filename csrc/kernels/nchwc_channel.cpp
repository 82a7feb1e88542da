// SPDX-License-Identifier: Apache-2.0
// The generic per-channel blocked kernels for blocks 4, 8 and 16.
#include "kernels/nchwc_channel.h"

#include "kernels/nchwc_channel_body.h"

namespace pyengine {

namespace {
template <int CB>
void binary_generic(BinaryOp op, const float* a, const float* v, float* y, int64_t HW) {
    nchwc_binary_channel_body<CB>(op, a, v, y, HW);
}
template <int CB>
void affine_generic(const float* x, const float* s, const float* t, float* y, int64_t HW) {
    nchwc_affine_body<CB>(x, s, t, y, HW);
}
}  // namespace

NchwcBinaryChannelKernel nchwc_binary_channel_generic(int cb) {
    switch (cb) {
        case 4: return binary_generic<4>;
        case 8: return binary_generic<8>;
        case 16: return binary_generic<16>;
        default: return nullptr;
    }
}

NchwcAffineKernel nchwc_affine_generic(int cb) {
    switch (cb) {
        case 4: return affine_generic<4>;
        case 8: return affine_generic<8>;
        case 16: return affine_generic<16>;
        default: return nullptr;
    }
}

}  // namespace pyengine
