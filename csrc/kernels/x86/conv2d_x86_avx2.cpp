// SPDX-License-Identifier: Apache-2.0
// AVX2+FMA depthwise convolution: the shared direct body compiled for AVX2, with the
// vector activation. Other convolutions use the shared driver with the AVX2 GEMM.
#include "kernels/conv2d.h"
#include "kernels/x86/avx2_math.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {
void activation_apply_avx2(const float* x, float* y, int64_t n, const Epilogue& e);
namespace {
void act_row(float* row, int64_t n, const Epilogue& e) {
    if (e.act != Activation::None) activation_apply_avx2(row, row, n, e);
}
}  // namespace
}  // namespace pyengine

#include "kernels/conv2d_body.h"

namespace pyengine {

void depthwise2d_avx2(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                      int64_t c0, int64_t c1) {
    depthwise_body(p, x, w, y, n, c0, c1);
}

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
