// SPDX-License-Identifier: Apache-2.0
#include "graph/tensor.h"

#include <sstream>

namespace pyengine {

size_t dtype_size(DType t) {
    switch (t) {
        case DType::Float32: return 4;
        case DType::Int32: return 4;
        case DType::Int64: return 8;
        case DType::UInt8: return 1;
        case DType::Int8: return 1;
    }
    return 0;
}

const char* dtype_name(DType t) {
    switch (t) {
        case DType::Float32: return "float32";
        case DType::Int32: return "int32";
        case DType::Int64: return "int64";
        case DType::UInt8: return "uint8";
        case DType::Int8: return "int8";
    }
    return "unknown";
}

bool dtype_from_name(const std::string& name, DType* out) {
    for (DType t : {DType::Float32, DType::Int32, DType::Int64, DType::UInt8, DType::Int8}) {
        if (name == dtype_name(t)) { *out = t; return true; }
    }
    return false;
}

bool dtype_valid(uint8_t code) { return code >= 1 && code <= 5; }

int64_t shape_numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

std::string shape_str(const Shape& s) {
    std::ostringstream os;
    os << '[';
    for (size_t i = 0; i < s.size(); ++i) {
        if (i) os << ", ";
        os << s[i];
    }
    os << ']';
    return os.str();
}

}  // namespace pyengine
