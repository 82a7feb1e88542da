// SPDX-License-Identifier: Apache-2.0
#include "kernels/activation.h"

#include "kernels/dispatch.h"

namespace pyengine {

bool activation_from_name(const std::string& name, Activation* out) {
    static const struct { const char* name; Activation act; } table[] = {
        {"none", Activation::None},       {"relu", Activation::Relu},
        {"relu6", Activation::Relu6},     {"leaky_relu", Activation::LeakyRelu},
        {"sigmoid", Activation::Sigmoid}, {"tanh", Activation::Tanh},
        {"clip", Activation::Clip},       {"hard_sigmoid", Activation::HardSigmoid},
        {"hard_swish", Activation::HardSwish}, {"silu", Activation::Silu},
    };
    for (const auto& t : table) {
        if (name == t.name) { *out = t.act; return true; }
    }
    return false;
}

void activation_apply_generic(const float* x, float* y, int64_t n, const Epilogue& e) {
    for (int64_t i = 0; i < n; ++i) y[i] = activate(x[i], e);
}

void activation_apply(const float* x, float* y, int64_t n, const Epilogue& e) {
    kernels().activation_apply(x, y, n, e);
}

}  // namespace pyengine
