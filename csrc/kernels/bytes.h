// SPDX-License-Identifier: Apache-2.0
// Data movement for tensors of any element type (elements of `elem` bytes, copied bit for bit):
// the non-float32 paths of Transpose and Concat. The float32 paths keep their own kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "format/tensor.h"

namespace pyengine {

// y = x transposed by `perm` (y.shape[i] = x.shape[perm[i]]).
void transpose_bytes(const void* x, size_t elem, const Shape& x_shape, const std::vector<int64_t>& perm, void* y);
// y = the inputs one after another along an axis: xs[i] is [outer, axis_sizes[i], inner].
void concat_bytes(const std::vector<const void*>& xs, size_t elem, const std::vector<int64_t>& axis_sizes,
                  int64_t outer, int64_t inner, void* y);

}  // namespace pyengine
