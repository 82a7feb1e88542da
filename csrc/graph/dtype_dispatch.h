// SPDX-License-Identifier: Apache-2.0
// The one place typed kernels pick their C++ element type from a DType: dispatch_dtype(t, f)
// calls f(T{}) with T the element type of `t` (bool for Bool), so a kernel is written once as
// a template and instantiated for every dtype it is asked to take.
#pragma once

#include <cstdint>

#include "common.h"
#include "format/tensor.h"

namespace pyengine {

template <class F>
decltype(auto) dispatch_dtype(DType t, F&& f) {
    switch (t) {
        case DType::Float32: return f(float{});
        case DType::Int32: return f(int32_t{});
        case DType::Int64: return f(int64_t{});
        case DType::UInt8: return f(uint8_t{});
        case DType::Int8: return f(int8_t{});
        case DType::Bool: return f(bool{});
        case DType::Int16: return f(int16_t{});
        case DType::UInt16: return f(uint16_t{});
        case DType::UInt32: return f(uint32_t{});
        case DType::UInt64: return f(uint64_t{});
        case DType::Float64: return f(double{});
    }
    throw InvalidArgument(str("no kernel for dtype code ", static_cast<int>(t)));
}

// True for the floating-point dtypes.
inline bool dtype_is_float(DType t) { return t == DType::Float32 || t == DType::Float64; }

}  // namespace pyengine
