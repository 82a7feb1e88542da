// SPDX-License-Identifier: Apache-2.0
// The non-float32 paths of the generic elementwise ops (Add, Sub, Mul, Div, BinaryMath's
// min/max/pow/fmod/mod, Math's abs/neg/sign, Where): one template per op over every numeric
// dtype (graph/dtype_dispatch.h). The float32 paths keep their own (vector) kernels.
#pragma once

#include <cstdint>
#include <vector>

#include "format/tensor.h"

namespace pyengine {

enum class TypedFn : uint8_t {
    Add, Sub, Mul, Div, Min, Max, Pow, Mod, Fmod, Abs, Neg, Sign,
    // Integers only:
    BitAnd, BitOr, BitXor, ShiftLeft, ShiftRight, BitNot
};

// y = a fn b with numpy broadcasting; a, b and y share one numeric (non-bool) dtype. Integer Div
// truncates and Mod takes the divisor's sign (ONNX); an integer division by zero throws.
void typed_binary(TypedFn fn, const Tensor& a, const Tensor& b, const Tensor& y);
// y = fn(x) elementwise (Abs, Neg, Sign).
void typed_unary(TypedFn fn, const Tensor& x, const Tensor& y);
// y = c ? a : b with broadcasting; c bool (or float32 0 / 1), a, b and y of one dtype.
void typed_where(const Tensor& c, const Tensor& a, const Tensor& b, const Tensor& y);

// infer_dtypes for ops over one numeric dtype: every input of in[0]'s dtype, which is not bool.
std::vector<DType> numeric_dtypes(const std::vector<DType>& in);

}  // namespace pyengine
