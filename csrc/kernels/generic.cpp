// SPDX-License-Identifier: Apache-2.0
// The generic kernel table: portable reference kernels, always built.
#include "kernels/gemm.h"
#include "kernels/qgemm.h"
#include "kernels/dispatch.h"

namespace pyengine {

const KernelTable* kernel_table_generic() {
    // Named fields, so that adding a kernel never shifts a positional slot.
    static const KernelTable table = [] {
        KernelTable t{};
        t.isa = Isa::Generic;
        t.name = "generic";
        t.gemm = gemm_generic;
        t.conv2d = conv2d_generic;
        t.depthwise2d = depthwise2d_generic;
        t.pool2d = pool2d_generic;
        t.activation_apply = activation_apply_generic;
        t.binary = binary_generic;
        t.softmax = softmax_generic;
        t.erf_apply = erf_apply_generic;
        t.gemm_uk = &gemm_micro_generic();
        t.nchwc_block = 8;
        t.conv_nchwc = conv_nchwc_generic(8);
        t.nchwc_oc_tile = 2;
        t.nchwc_gather = nchwc_gather_generic(8);
        t.nchwc_binary_channel = nchwc_binary_channel_generic(8);
        t.nchwc_affine = nchwc_affine_generic(8);
        t.conv_winograd = conv_winograd_generic(8);
        t.qgemm = qgemm_generic;
        t.qgemm_name = "generic";
        t.quantize_u8 = quantize_u8;
        t.qepilogue = qepilogue;
        t.qepilogue_codes = qepilogue_codes;
        t.qdw_row = qdw_row;
        t.qdw3x3s1 = nullptr;
        t.quantize_u8_rows = quantize_u8_rows;
        return t;
    }();
    return &table;
}

}  // namespace pyengine
