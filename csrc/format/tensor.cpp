// SPDX-License-Identifier: Apache-2.0
#include "format/tensor.h"

#include <sstream>

namespace pyengine {

namespace {
struct DTypeInfo {
    DType type;
    size_t size;
    const char* name;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::Float32, 4, "float32"}, {DType::Int32, 4, "int32"},   {DType::Int64, 8, "int64"},
    {DType::UInt8, 1, "uint8"},     {DType::Int8, 1, "int8"},     {DType::Bool, 1, "bool"},
    {DType::Int16, 2, "int16"},     {DType::UInt16, 2, "uint16"}, {DType::UInt32, 4, "uint32"},
    {DType::UInt64, 8, "uint64"},   {DType::Float64, 8, "float64"},
};
}  // namespace

size_t dtype_size(DType t) {
    for (const auto& d : kDTypes) if (d.type == t) return d.size;
    return 0;
}

const char* dtype_name(DType t) {
    for (const auto& d : kDTypes) if (d.type == t) return d.name;
    return "unknown";
}

bool dtype_from_name(const std::string& name, DType* out) {
    for (const auto& d : kDTypes) {
        if (name == d.name) { *out = d.type; return true; }
    }
    return false;
}

bool dtype_valid(uint8_t code) { return code >= 1 && code <= kDTypeLast; }

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
