// SPDX-License-Identifier: Apache-2.0
// AVX-512 channel gather: the shared body with 16-channel blocks (one zmm, vpermps per part).
#include "kernels/channel_gather.h"

#if defined(__AVX512F__) && defined(__FMA__)

#include "kernels/channel_gather_body.h"

namespace pyengine {

void nchwc_gather_avx512(const NchwcGatherPart* parts, int n_parts, const float* const* srcs, float* y,
                         int64_t HW) {
    nchwc_gather_body<16>(parts, n_parts, srcs, y, HW);
}

}  // namespace pyengine

#endif  // defined(__AVX512F__) && defined(__FMA__)
