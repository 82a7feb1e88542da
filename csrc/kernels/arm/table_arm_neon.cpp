// SPDX-License-Identifier: Apache-2.0
// The NEON kernel table: the baseline on AArch64; on armv7 chosen when AT_HWCAP reports NEON.
#include "kernels/arm/kernels_arm_neon.h"
#include "runtime/dispatch.h"

namespace pyengine {

const KernelTable* kernel_table_neon() {
    static const KernelTable table = {
        Isa::Neon, "neon", gemm_arm_neon, conv2d_arm_neon, depthwise2d_arm_neon, pool2d_arm_neon,
        activation_apply_arm_neon, binary_arm_neon, softmax_arm_neon, &gemm_micro_arm_neon(),
        4, conv_nchwc_arm_neon, 4,
    };
    return &table;
}

}  // namespace pyengine
