// SPDX-License-Identifier: Apache-2.0
// AVX-512 depthwise convolution: the shared direct body compiled with -mavx512f (16 lanes), with
// the AVX2 vector activation.
#include "kernels/conv2d.h"

#if defined(__AVX512F__) && defined(__FMA__)

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

void depthwise2d_avx512(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                        int64_t c0, int64_t c1) {
    depthwise_body(p, x, w, y, n, c0, c1);
}

}  // namespace pyengine

#endif  // defined(__AVX512F__) && defined(__FMA__)
