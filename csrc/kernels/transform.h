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

// Wrap (ONNX's: the other end's elements) is host-only; the device kernels take the first three.
enum class PadMode : uint8_t { Constant, Reflect, Edge, Wrap };

// Pads each dimension d by begin[d] before and end[d] after (negative amounts crop).
void pad(const float* x, const Shape& x_shape, const std::vector<int64_t>& begin,
         const std::vector<int64_t>& end, PadMode mode, float value, float* y);
// The same for elements of `elem` bytes (1, 2, 4 or 8) of any type; `value` points at one.
void pad_bytes(const void* x, size_t elem, const Shape& x_shape, const std::vector<int64_t>& begin,
               const std::vector<int64_t>& end, PadMode mode, const void* value, void* y);

// Mean over `axes` (sorted, unique); y has the reduced dims removed or kept as 1 (same data).
void reduce_mean(const float* x, const Shape& x_shape, const std::vector<int64_t>& axes, float* y);

// y = x * scale[c] + shift[c] where c indexes the middle axis of [outer, channels, inner].
void channel_affine(const float* x, const float* scale, const float* shift, int64_t outer,
                    int64_t channels, int64_t inner, float* y);

}  // namespace pyengine
