// SPDX-License-Identifier: Apache-2.0
// Data movement and reductions: transpose, concat, pad, mean, batch norm.
#pragma once

#include <cstdint>
#include <vector>

#include "format/tensor.h"

namespace pyengine {

// y = x transposed by `perm` (y.shape[i] = x.shape[perm[i]]).
void transpose(const float* x, const Shape& x_shape, const std::vector<int64_t>& perm, float* y);

// Concatenates along an axis: each input is [outer, sizes[i] * inner]; y is [outer, sum * inner].
void concat(const std::vector<const float*>& xs, const std::vector<int64_t>& axis_sizes,
            int64_t outer, int64_t inner, float* y);

enum class PadMode : uint8_t { Constant, Reflect, Edge };

// Pads each dimension d by begin[d] before and end[d] after.
void pad(const float* x, const Shape& x_shape, const std::vector<int64_t>& begin,
         const std::vector<int64_t>& end, PadMode mode, float value, float* y);

// Mean over `axes` (sorted, unique); y has the reduced dims removed or kept as 1 (same data).
void reduce_mean(const float* x, const Shape& x_shape, const std::vector<int64_t>& axes, float* y);

// y = x * scale[c] + shift[c] where c indexes the middle axis of [outer, channels, inner].
void channel_affine(const float* x, const float* scale, const float* shift, int64_t outer,
                    int64_t channels, int64_t inner, float* y);

}  // namespace pyengine
