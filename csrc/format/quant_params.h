// SPDX-License-Identifier: Apache-2.0
// The graph's "quantization" section: scale and zero point of int8/uint8 tensors.
#pragma once

#include <functional>
#include <string>
#include <unordered_map>

#include "format/json.h"
#include "format/tensor.h"

namespace pyengine {

// Parses graph["quantization"] (absent: empty). `lookup` gives a tensor's dtype and shape by
// name (false: no such tensor). Throws ModelFormatError naming the tensor for a scale that is
// zero, negative or not finite, a zero point outside the dtype's range, a count that is neither
// 1 nor the size of `axis`, or a tensor that is missing or not int8/uint8.
std::unordered_map<std::string, QuantParams> parse_quantization(
    const json::Value& graph, const std::function<bool(const std::string&, DType*, Shape*)>& lookup);

// The range of a quantized dtype: [-128, 127] for int8, [0, 255] for uint8.
inline void quant_range(DType t, int32_t* lo, int32_t* hi) {
    *lo = t == DType::Int8 ? -128 : 0;
    *hi = t == DType::Int8 ? 127 : 255;
}

}  // namespace pyengine
