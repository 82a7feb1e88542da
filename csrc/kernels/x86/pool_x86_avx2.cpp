// SPDX-License-Identifier: Apache-2.0
// AVX2 pooling: the shared vectorizable body compiled with -mavx2 -mfma.
#include "kernels/pool_body.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {

void pool2d_avx2(const Pool2DParams& p, const float* x, float* y) { pool_body(p, x, y); }

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
