// SPDX-License-Identifier: Apache-2.0
// Attribute parsing and weight preparation shared by the quantized ops.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "graph/op.h"
#include "kernels/qgemm.h"

namespace pyengine {

// A per-tensor or per-axis quantization from node attributes: `scale` (number or list, each
// > 0), `zero_point` (integer or list, default 0), `axis` (1), `dtype` ("uint8" or "int8").
struct AxisQuant {
    std::vector<float> scale;
    std::vector<int32_t> zero_point;
    int64_t axis = 1;
    int32_t lo = 0, hi = 255;
};
AxisQuant get_axis_quant(const Attrs& a);

// One activation's quantization: `<prefix>_scale`, `<prefix>_zero_point`, `<prefix>_dtype`.
struct ActQuant {
    bool present = false;
    float scale = 1.0f;
    int32_t zero_point = 0;
    int32_t lo = 0, hi = 255;
    // Added to the codes to make them u8 (128 for int8, 0 for uint8).
    int32_t shift() const { return lo < 0 ? 128 : 0; }
};
ActQuant get_act_quant(const Attrs& a, const std::string& prefix, bool required);

// The fused activation of a quantized op as a clamp of the real value: none, relu, relu6 or
// clip (+ min, max). Fills lo, hi.
void get_quant_activation(const Attrs& a, float* lo, float* hi);

// Constant int8 weights [N, K] (rows = output channels) ready for the GEMM: zero point removed,
// packed, with per-column sums and the epilogue's scales.
struct QuantWeights {
    int64_t K = 0, N = 0;
    std::vector<int8_t> packed;    // qgemm_pack_b layout
    std::vector<int32_t> wsum;     // [N]
    std::vector<float> scale;      // [N]: x_scale * w_scale[n]
    std::vector<int32_t> bias;     // [N] or empty
    std::vector<int8_t> centered;  // [N, K]: weights minus zero point (the depthwise path reads it)
};
// From weight tensor `w` (int8/uint8 with quantization parameters, channel axis `axis`) read as
// the [N, K] matrix w(n, k) = data[n * stride_n + k * stride_k]; `bias` is int32 (in units of
// x_scale * w_scale) or float32, or nullptr. Throws ModelFormatError naming `node` when the
// weight is not constant, has no parameters, or does not fit int8 once centered.
QuantWeights prepare_quant_weights(const std::string& node, const Tensor* w, int64_t axis, int64_t N, int64_t K,
                                   int64_t stride_n, int64_t stride_k, const Tensor* bias, float x_scale);

// The epilogue for weights `qw` from input x, output y and the activation clamp.
QEpilogue make_qepilogue(const QuantWeights& qw, const ActQuant& x, const ActQuant& y, float lo, float hi);

}  // namespace pyengine
