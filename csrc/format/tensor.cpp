// SPDX-License-Identifier: Apache-2.0
#include "format/tensor.h"

#include <sstream>

namespace pyengine {

namespace {
struct DTypeInfo {
    DType type;
    const char* name;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::Float32, "float32"}, {DType::Int32, "int32"},   {DType::Int64, "int64"},
    {DType::UInt8, "uint8"},     {DType::Int8, "int8"},     {DType::Bool, "bool"},
    {DType::Int16, "int16"},     {DType::UInt16, "uint16"}, {DType::UInt32, "uint32"},
    {DType::UInt64, "uint64"},   {DType::Float64, "float64"},
};
}  // namespace

const char* dtype_name(DType t) {
    for (const auto& d : kDTypes) if (d.type == t) return d.name;
    return "unknown";
}

std::vector<std::string> dtype_names() {
    std::vector<std::string> names;
    for (const auto& d : kDTypes) names.emplace_back(d.name);
    return names;
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
