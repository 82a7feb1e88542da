// SPDX-License-Identifier: Apache-2.0
// NEON channel gather: the shared body with 4-channel blocks (one q register; the lane
// permutation is a tbl on AArch64).
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/channel_gather_body.h"

namespace pyengine {

void nchwc_gather_arm_neon(const NchwcGatherPart* parts, int n_parts, const float* const* srcs, float* y,
                           int64_t HW) {
    nchwc_gather_body<4>(parts, n_parts, srcs, y, HW);
}

}  // namespace pyengine
