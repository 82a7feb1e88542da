// SPDX-License-Identifier: Apache-2.0
// Shapes, element types and non-owning tensor views.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pyengine {

// Element types of graph tensors (inputs, outputs, constants and the values between ops). The
// numbers are the .pyem tensor table's dtype codes (docs/format.md). Bool is one byte, 0 or 1.
enum class DType : uint8_t {
    Float32 = 1, Int32 = 2, Int64 = 3, UInt8 = 4, Int8 = 5, Bool = 6, Int16 = 7, UInt16 = 8,
    UInt32 = 9, UInt64 = 10, Float64 = 11
};
constexpr uint8_t kDTypeLast = 11;

constexpr size_t kMaxRank = 8;

// Bytes per element (0 for a code the format does not define). Inline: the CUDA backend,
// which links none of the graph's sources, sizes device buffers with it too.
constexpr size_t dtype_size(DType t) {
    switch (t) {
        case DType::UInt8: case DType::Int8: case DType::Bool: return 1;
        case DType::Int16: case DType::UInt16: return 2;
        case DType::Float32: case DType::Int32: case DType::UInt32: return 4;
        case DType::Int64: case DType::UInt64: case DType::Float64: return 8;
    }
    return 0;
}
// "float32", ...
const char* dtype_name(DType t);
// Every dtype's name, in format code order (the choices of a dtype attribute).
std::vector<std::string> dtype_names();
// Parses "float32" etc.; false for an unknown name.
bool dtype_from_name(const std::string& name, DType* out);
// True for codes the file format defines.
bool dtype_valid(uint8_t code);

using Shape = std::vector<int64_t>;

// Number of elements; -1 never appears in concrete shapes.
int64_t shape_numel(const Shape& s);
// "[1, 3, 224, 224]"
std::string shape_str(const Shape& s);

// Quantization of an int8/uint8 tensor (docs/format.md "Quantized tensors"): real value =
// (q - zero_point) * scale, per tensor (one entry) or per channel along `axis`.
struct QuantParams {
    std::vector<float> scale;         // each finite and > 0 (the reader checks)
    std::vector<int32_t> zero_point;  // same count as scale, inside the dtype's range
    int64_t axis = 0;
    bool per_channel() const { return scale.size() > 1; }
};

// A view of memory owned elsewhere (the mapping, the caller, or the per-call arena).
struct Tensor {
    void* data = nullptr;
    DType dtype = DType::Float32;
    Shape shape;
    // 0: plain (row-major `shape`). Otherwise the channel block c of the NCHW[c] layout of a
    // 4-D [N, C, H, W] tensor (kernels/conv_nchwc.h): stored as [N, ceil(C/c), H, W, c].
    int block = 0;
    // Scale and zero point of a quantized tensor from the file; nullptr for plain tensors.
    const QuantParams* quant = nullptr;

    float* f32() const { return static_cast<float*>(data); }
    template <class T>
    T* as() const { return static_cast<T*>(data); }
    int64_t numel() const { return shape_numel(shape); }
    // Elements stored: numel(), plus the padded channels of a blocked tensor.
    int64_t storage_numel() const { return block == 0 ? numel() : storage_numel_blocked(shape, block); }
    static int64_t storage_numel_blocked(const Shape& s, int block) {
        return s[0] * ((s[1] + block - 1) / block) * block * s[2] * s[3];
    }
    size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
    size_t itemsize() const { return dtype_size(dtype); }
};

}  // namespace pyengine
