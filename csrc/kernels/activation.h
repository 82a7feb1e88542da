// SPDX-License-Identifier: Apache-2.0
// Activations that ops apply on their own or fuse into the epilogue of GEMM and convolution.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace pyengine {

// HardSigmoid: clamp(alpha * v + beta, 0, 1); HardSwish: v * that with alpha = 1/6, beta = 1/2
// (MobileNetV3); Silu: v * sigmoid(v) (EfficientNet's swish).
enum class Activation : uint8_t { None, Relu, Relu6, LeakyRelu, Sigmoid, Tanh, Clip, HardSigmoid, HardSwish, Silu };

// What a kernel applies to each output element after the sum: bias, then activation.
struct Epilogue {
    const float* bias = nullptr;  // one per output channel / column, or nullptr
    bool bias_per_row = false;    // GEMM: bias indexed by the row of C (NCHW convolution)
    Activation act = Activation::None;
    float alpha = 0.0f;  // LeakyRelu slope; Clip minimum; HardSigmoid/HardSwish slope
    float beta = 0.0f;   // Clip maximum; HardSigmoid/HardSwish offset
};

// Parses "none", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "clip", "hard_sigmoid",
// "hard_swish", "silu"; false if unknown.
bool activation_from_name(const std::string& name, Activation* out);

inline float activate(float v, const Epilogue& e) {
    switch (e.act) {
        case Activation::None: return v;
        case Activation::Relu: return v > 0.0f ? v : 0.0f;
        case Activation::Relu6: return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
        case Activation::LeakyRelu: return v >= 0.0f ? v : v * e.alpha;
        case Activation::Sigmoid: return 1.0f / (1.0f + std::exp(-v));
        case Activation::Tanh: return std::tanh(v);
        case Activation::Clip: return v < e.alpha ? e.alpha : (v > e.beta ? e.beta : v);
        case Activation::HardSigmoid:
        case Activation::HardSwish: {
            float t = e.alpha * v + e.beta;
            t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
            return e.act == Activation::HardSwish ? v * t : t;
        }
        case Activation::Silu: return v / (1.0f + std::exp(-v));
    }
    return v;
}

// y[i] = act(x[i]) for n elements (x may equal y).
void activation_apply(const float* x, float* y, int64_t n, const Epilogue& e);
// The portable reference.
void activation_apply_generic(const float* x, float* y, int64_t n, const Epilogue& e);

}  // namespace pyengine
