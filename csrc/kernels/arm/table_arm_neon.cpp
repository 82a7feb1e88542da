// SPDX-License-Identifier: Apache-2.0
// The NEON kernel table: the baseline on AArch64; on armv7 chosen when AT_HWCAP reports NEON.
#include "kernels/arm/kernels_arm_neon.h"
#include "kernels/dispatch.h"
#include "platform/cpu.h"

namespace pyengine {

const KernelTable* kernel_table_neon() {
    // Starts from the generic table, so a kernel with no variant here falls back to the
    // reference one; named fields, so adding a kernel never shifts a positional slot.
    static const KernelTable table = [] {
        KernelTable t = *kernel_table_generic();
        t.isa = Isa::Neon;
        t.name = "neon";
        t.gemm = gemm_arm_neon;
        t.conv2d = conv2d_arm_neon;
        t.depthwise2d = depthwise2d_arm_neon;
        t.pool2d = pool2d_arm_neon;
        t.activation_apply = activation_apply_arm_neon;
        t.binary = binary_arm_neon;
        t.softmax = softmax_arm_neon;
        t.gemm_uk = &gemm_micro_arm_neon();
        t.nchwc_block = 4;
        t.conv_nchwc = conv_nchwc_arm_neon;
        t.nchwc_oc_tile = 4;
        t.nchwc_gather = nchwc_gather_arm_neon;
        t.nchwc_binary_channel = nchwc_binary_channel_arm_neon;
        t.nchwc_affine = nchwc_affine_arm_neon;
        t.conv_winograd = conv_winograd_arm_neon;
        t.qgemm = qgemm_arm_neon;
        t.qgemm_name = "neon";
#if defined(__aarch64__)
        if (cpu_features().asimddp) {  // ARMv8.2 dot product (Jetson Xavier/Orin, Raspberry Pi 5)
            t.qgemm = qgemm_arm_neon_dot;
            t.qgemm_name = "neon-dot";
        }
#endif  // defined(__aarch64__)
        return t;
    }();
    return &table;
}

}  // namespace pyengine
