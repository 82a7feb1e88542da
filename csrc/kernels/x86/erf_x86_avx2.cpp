// SPDX-License-Identifier: Apache-2.0
// AVX2+FMA erf / GELU: the shared body (kernels/erf_body.h) compiled for 8-wide vectors.
#include "kernels/erf.h"
#include "kernels/erf_body.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {

void erf_apply_avx2(const float* x, float* y, int64_t n, bool gelu) { erf_body::run(x, y, n, gelu); }

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
