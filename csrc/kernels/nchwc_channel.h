// SPDX-License-Identifier: Apache-2.0
// Per-channel ops on one block of a blocked NCHW[c] image (kernels/conv_nchwc.h): a binary op
// with a per-channel operand (squeeze-excite's Mul, a broadcast Add) and a per-channel affine
// map (an unfolded BatchNorm). The drivers nchwc_binary_channel and nchwc_channel_affine split
// a tensor into blocks; these kernels do one block's HW pixels with the block as the vector.
#pragma once

#include <cstdint>

#include "kernels/elementwise.h"

namespace pyengine {

// y[i][l] = a[i][l] op v[l] for HW pixels i of one block (lanes l < the block).
using NchwcBinaryChannelKernel = void (*)(BinaryOp op, const float* a, const float* v, float* y, int64_t HW);
// y[i][l] = x[i][l] * scale[l] + shift[l] for HW pixels of one block.
using NchwcAffineKernel = void (*)(const float* x, const float* scale, const float* shift, float* y, int64_t HW);

// The portable kernels for block cb (4, 8 or 16); nullptr for any other block.
NchwcBinaryChannelKernel nchwc_binary_channel_generic(int cb);
NchwcAffineKernel nchwc_affine_generic(int cb);

}  // namespace pyengine
