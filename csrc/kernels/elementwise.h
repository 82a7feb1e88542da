// SPDX-License-Identifier: Apache-2.0
// Binary elementwise ops with numpy broadcasting, and softmax.
#pragma once

#include <cstdint>

#include "format/tensor.h"

namespace pyengine {

enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };

// The portable inner loop: y[i] = a[i*a_step] op b[i*b_step].
void binary_generic(BinaryOp op, const float* a, int64_t a_step, const float* b, int64_t b_step,
                    float* y, int64_t n);

// y = a op b with numpy broadcasting; `out` is the broadcast shape. Uses the dispatched loop.
void binary_broadcast(BinaryOp op, const float* a, const Shape& a_shape, const float* b,
                      const Shape& b_shape, float* y, const Shape& out);

// Softmax over the middle axis of [outer, axis, inner] (numerically stable).
void softmax(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner);
void softmax_generic(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner);

}  // namespace pyengine
