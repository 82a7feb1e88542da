// SPDX-License-Identifier: Apache-2.0
// The generic kernel table: portable reference kernels, always built.
#include "kernels/gemm.h"
#include "runtime/dispatch.h"

namespace pyengine {

const KernelTable* kernel_table_generic() {
    static const KernelTable table = {
        Isa::Generic, "generic", gemm_generic, conv2d_generic, depthwise2d_generic, pool2d_generic,
        activation_apply_generic, binary_generic, softmax_generic, &gemm_micro_generic(),
        8, conv_nchwc_generic(8), 2,
    };
    return &table;
}

}  // namespace pyengine
