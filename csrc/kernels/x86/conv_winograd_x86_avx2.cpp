// SPDX-License-Identifier: Apache-2.0
// AVX2 Winograd F(4x4, 3x3): the shared body with 8-channel blocks, GEMM tiles of 2 blocks
// x 6 tiles (12 ymm accumulators), and the AVX2 vector activations.
#include "kernels/conv_winograd.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {
void activation_apply_avx2(const float* x, float* y, int64_t n, const Epilogue& e);
namespace {
void act_row(float* row, int64_t n, const Epilogue& e) {
    if (e.act != Activation::None) activation_apply_avx2(row, row, n, e);
}
}  // namespace
}  // namespace pyengine

#include "kernels/conv_nchwc_body.h"
#include "kernels/conv_winograd_body.h"

namespace pyengine {

void conv_winograd_avx2(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                          int64_t t0, int64_t t1, int64_t tb, float* scratch) {
    wino_body<8, 2, 6>(c, x, y, n, ob0, ob1, t0, t1, tb, scratch);
}

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
