// SPDX-License-Identifier: Apache-2.0
// int8 ops: QuantizeLinear, DequantizeLinear, QLinearConv2D and QLinearDense (docs/format.md
// "Quantized ops"). Values between nodes stay float32: a quantized op reads float activations,
// quantizes them with its input scale (exact when the producer requantized onto the same grid),
// runs the int8 kernels with int32 accumulation, and writes the requantized values back as
// float. Ops without an int8 kernel (pooling, Add, Concat, ...) therefore run in float on
// values that lie on the int8 grid, as between a DequantizeLinear and a QuantizeLinear.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"
#include "format/quant_params.h"
#include "graph/conv_geometry.h"
#include "graph/op.h"
#include "graph/quant_common.h"
#include "kernels/qgemm.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

// ---- QuantizeLinear / DequantizeLinear ----
// The codes travel as float32 values (exact: every int8/uint8 value is a float).
class QuantizeOp : public Op {
public:
    QuantizeOp(const Attrs& a, bool quantize) : quantize_(quantize), q_(get_axis_quant(a)) {}

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        if (q_.scale.size() > 1) {
            const int64_t axis = normalize_axis(q_.axis, in[0].size(), quantize_ ? "QuantizeLinear" : "DequantizeLinear");
            if (in[0][static_cast<size_t>(axis)] != static_cast<int64_t>(q_.scale.size())) {
                shape_error(str(quantize_ ? "QuantizeLinear" : "DequantizeLinear", " has ", q_.scale.size(),
                                " scales but its input ", shape_str(in[0]), " has ", in[0][static_cast<size_t>(axis)],
                                " along axis ", q_.axis));
            }
        }
        return {in[0]};
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        int64_t outer = 1, channels = 1, inner = in[0]->numel();
        if (q_.scale.size() > 1) {
            const auto axis = static_cast<size_t>(normalize_axis(q_.axis, s.size(), "quantization"));
            outer = 1;
            for (size_t d = 0; d < axis; ++d) outer *= s[d];
            channels = s[axis];
            inner = channels == 0 || outer == 0 ? 0 : in[0]->numel() / (outer * channels);
        }
        const float* x = in[0]->f32();
        float* y = out[0]->f32();
        for (int64_t o = 0; o < outer; ++o) {
            for (int64_t c = 0; c < channels; ++c) {
                const size_t i = q_.scale.size() > 1 ? static_cast<size_t>(c) : 0;
                const float scale = q_.scale[i];
                const int32_t zp = q_.zero_point[i];
                const int64_t base = (o * channels + c) * inner;
                if (quantize_) {
                    // Through the dispatched kernel the quantized ops use (so the edge tests
                    // cover it), as u8 codes shifted by 128 for int8.
                    const int32_t shift = q_.lo < 0 ? 128 : 0;
                    thread_local std::vector<uint8_t> codes;
                    if (codes.size() < static_cast<size_t>(inner)) codes.resize(static_cast<size_t>(inner));
                    kernels().quantize_u8(x + base, inner, scale, zp, q_.lo, q_.hi, shift, codes.data());
                    const uint8_t* code = codes.data();
                    for (int64_t j = 0; j < inner; ++j) y[base + j] = static_cast<float>(int32_t(code[j]) - shift);
                } else {
                    for (int64_t j = 0; j < inner; ++j) y[base + j] = (x[base + j] - static_cast<float>(zp)) * scale;
                }
            }
        }
    }

private:
    bool quantize_;
    AxisQuant q_;
};

}  // namespace

std::unique_ptr<Op> make_QuantizeLinear(const Attrs& a) { return std::make_unique<QuantizeOp>(a, true); }
std::unique_ptr<Op> make_DequantizeLinear(const Attrs& a) { return std::make_unique<QuantizeOp>(a, false); }

}  // namespace pyengine
