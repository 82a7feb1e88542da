// SPDX-License-Identifier: Apache-2.0
#include "format/quant_params.h"

#include <cmath>

#include "common.h"

namespace pyengine {

std::unordered_map<std::string, QuantParams> parse_quantization(
    const json::Value& graph, const std::function<bool(const std::string&, DType*, Shape*)>& lookup) {
    std::unordered_map<std::string, QuantParams> out;
    const json::Value* section = graph.find("quantization");
    if (section == nullptr) return out;
    if (!section->is_object()) throw ModelFormatError("'quantization' must be an object of tensor name -> parameters");
    for (const auto& m : section->members()) {
        const std::string& name = m.first;
        auto fail = [&](const std::string& what) {
            throw ModelFormatError(str("quantization of tensor '", name, "': ", what));
        };
        DType dtype{};
        Shape shape;
        if (!lookup(name, &dtype, &shape)) fail("no tensor of that name is in the tensor table");
        if (dtype != DType::Int8 && dtype != DType::UInt8) {
            fail(str("the tensor is ", dtype_name(dtype), "; only int8 and uint8 tensors are quantized"));
        }
        const json::Value& q = m.second;
        if (!q.is_object()) fail("parameters must be an object with 'scale', 'zero_point' and 'axis'");
        for (const auto& key : q.members()) {
            if (key.first != "scale" && key.first != "zero_point" && key.first != "axis") {
                fail(str("unknown key '", key.first, "'"));
            }
        }
        QuantParams p;
        const json::Value* axis = q.find("axis");
        if (axis != nullptr) {
            if (!axis->is_integer()) fail(str("'axis' must be an integer, got ", axis->dump()));
            p.axis = axis->as_int();
        }
        const json::Value* scale = q.find("scale");
        if (scale == nullptr) fail("'scale' is required");
        std::vector<const json::Value*> scales;
        if (scale->is_array()) {
            for (const auto& s : scale->items()) scales.push_back(&s);
        } else {
            scales.push_back(scale);
        }
        for (size_t i = 0; i < scales.size(); ++i) {
            const json::Value* s = scales[i];
            if (!s->is_number() || !std::isfinite(s->as_number()) || !(s->as_number() > 0) ||
                !std::isfinite(static_cast<float>(s->as_number())) || static_cast<float>(s->as_number()) <= 0.0f) {
                fail(str("scale[", i, "] is ", s->dump(), "; every scale must be a finite number > 0"));
            }
            p.scale.push_back(static_cast<float>(s->as_number()));
        }
        if (p.scale.empty()) fail("'scale' is an empty list");
        int32_t lo = 0, hi = 0;
        quant_range(dtype, &lo, &hi);
        const json::Value* zp = q.find("zero_point");
        std::vector<const json::Value*> zps;
        if (zp != nullptr && zp->is_array()) {
            for (const auto& z : zp->items()) zps.push_back(&z);
        } else if (zp != nullptr) {
            zps.push_back(zp);
        }
        for (size_t i = 0; i < zps.size(); ++i) {
            if (!zps[i]->is_integer() || zps[i]->as_int() < lo || zps[i]->as_int() > hi) {
                fail(str("zero_point[", i, "] is ", zps[i]->dump(), "; expected an integer in [", lo, ", ", hi,
                         "] for ", dtype_name(dtype)));
            }
            p.zero_point.push_back(static_cast<int32_t>(zps[i]->as_int()));
        }
        if (p.zero_point.empty()) p.zero_point.assign(p.scale.size(), 0);
        if (p.zero_point.size() != p.scale.size()) {
            fail(str("'zero_point' has ", p.zero_point.size(), " entries but 'scale' has ", p.scale.size()));
        }
        if (p.per_channel()) {
            const int64_t rank = static_cast<int64_t>(shape.size());
            if (p.axis < 0) p.axis += rank;
            if (p.axis < 0 || p.axis >= rank) fail(str("'axis' is out of range for the tensor's shape ", shape_str(shape)));
            if (shape[static_cast<size_t>(p.axis)] != static_cast<int64_t>(p.scale.size())) {
                fail(str("'scale' has ", p.scale.size(), " entries; expected 1 or ", shape[static_cast<size_t>(p.axis)],
                         " (dimension ", p.axis, " of ", shape_str(shape), ")"));
            }
        }
        out.emplace(name, std::move(p));
    }
    return out;
}

}  // namespace pyengine
