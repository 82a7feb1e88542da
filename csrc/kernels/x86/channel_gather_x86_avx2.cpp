// SPDX-License-Identifier: Apache-2.0
// AVX2 channel gather: the shared body with 8-channel blocks (one ymm, vpermps per part).
#include "kernels/channel_gather.h"

#if defined(__AVX2__) && defined(__FMA__)

#include "kernels/channel_gather_body.h"

namespace pyengine {

void nchwc_gather_avx2(const NchwcGatherPart* parts, int n_parts, const float* const* srcs, float* y, int64_t HW) {
    nchwc_gather_body<8>(parts, n_parts, srcs, y, HW);
}

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
