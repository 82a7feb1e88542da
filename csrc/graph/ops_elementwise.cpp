// SPDX-License-Identifier: Apache-2.0
// Broadcasting binary ops and unary activations.
#include <cmath>

#include "common.h"
#include "graph/op.h"
#include "graph/typed_ops.h"
#include "kernels/conv_nchwc.h"
#include "kernels/elementwise.h"
#include "kernels/dispatch.h"

namespace pyengine {

namespace {

class BinaryOpNode : public Op {
public:
    explicit BinaryOpNode(BinaryOp op) : op_(op) {}

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& a = in[0];
        const Shape& b = in[1];
        const size_t rank = std::max(a.size(), b.size());
        Shape out(rank);
        for (size_t i = 0; i < rank; ++i) {
            const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
            const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
            if (da != db && da != 1 && db != 1) {
                shape_error(str("shapes ", shape_str(a), " and ", shape_str(b), " do not broadcast"));
            }
            out[i] = da == 1 ? db : da;
        }
        return {out};
    }

    // Any one numeric dtype; other than float32 runs the generic typed loop (typed_ops.h).
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return numeric_dtypes(in); }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (in[0]->dtype != DType::Float32) {
            static constexpr TypedFn kFns[] = {TypedFn::Add, TypedFn::Sub, TypedFn::Mul, TypedFn::Div};
            typed_binary(kFns[static_cast<int>(op_)], *in[0], *in[1], *out[0]);
            return;
        }
        if (out[0]->block != 0) {  // the layout pass planned one of the two blocked forms below
            const Tensor& a = *in[0];
            const Tensor& b = *in[1];
            if (a.shape == b.shape) {
                kernels().binary(op_, a.f32(), 1, b.f32(), 1, out[0]->f32(), out[0]->storage_numel());
                return;
            }
            const bool a_big = a.shape == out[0]->shape;  // else Add/Mul with b the big one
            const Tensor& big = a_big ? a : b;
            const Tensor& small = a_big ? b : a;
            const Shape& s = big.shape;
            nchwc_binary_channel(op_, big.f32(), small.f32(), s[0], s[1], s[2] * s[3], small.shape[0] == s[0],
                                 out[0]->block, out[0]->f32());
            return;
        }
        binary_broadcast(op_, in[0]->f32(), in[0]->shape, in[1]->f32(), in[1]->shape,
                         out[0]->f32(), out[0]->shape);
    }
    // Blocked, when one input is blocked already, for one 4-D shape, or for [N, C, H, W] op
    // [N or 1, C, 1, 1] (squeeze-excite; either order for Add and Mul). Never Div: the padded
    // lanes of the divisor may be 0, and padding must stay finite.
    int layout(const std::vector<Shape>& in, const std::vector<int>& in_block, int block,
               std::vector<int>* want) const override {
        auto per_channel = [](const Shape& big, const Shape& small) {
            return small.size() == 4 && (small[0] == 1 || small[0] == big[0]) && small[1] == big[1] &&
                   small[2] == 1 && small[3] == 1;
        };
        const bool commutes = op_ == BinaryOp::Add || op_ == BinaryOp::Mul;
        bool blocked = op_ != BinaryOp::Div && in[0].size() == 4 && in[1].size() == 4 &&
                       (in_block[0] != 0 || in_block[1] != 0) &&
                       (in[0] == in[1] || per_channel(in[0], in[1]) || (commutes && per_channel(in[1], in[0])));
        want->assign(2, blocked ? block : 0);
        return blocked ? block : 0;
    }
    bool lower(const std::vector<Shape>&, DeviceStep* s) const override {
        s->kind = DeviceStep::Binary;
        s->binop = op_;
        return true;
    }

private:
    BinaryOp op_;
};

class UnaryOp : public Op {
public:
    explicit UnaryOp(Epilogue ep) : ep_(ep) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return {in[0]}; }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        activation_apply(in[0]->f32(), out[0]->f32(), in[0]->storage_numel(), ep_);
    }
    // Elementwise: runs in whatever layout its input has.
    int layout(const std::vector<Shape>&, const std::vector<int>& in_block, int,
               std::vector<int>* want) const override {
        *want = in_block;
        return in_block[0];
    }
    const Epilogue* activation() const override { return &ep_; }
    bool lower(const std::vector<Shape>&, DeviceStep* s) const override {
        s->kind = DeviceStep::Unary;
        s->ep = ep_;
        return true;
    }

private:
    Epilogue ep_;
};

Epilogue epilogue_of(Activation act, float alpha = 0.0f, float beta = 0.0f) {
    Epilogue e;
    e.act = act;
    e.alpha = alpha;
    e.beta = beta;
    return e;
}

}  // namespace

std::unique_ptr<Op> make_Add(const Attrs&) { return std::make_unique<BinaryOpNode>(BinaryOp::Add); }
std::unique_ptr<Op> make_Sub(const Attrs&) { return std::make_unique<BinaryOpNode>(BinaryOp::Sub); }
std::unique_ptr<Op> make_Mul(const Attrs&) { return std::make_unique<BinaryOpNode>(BinaryOp::Mul); }
std::unique_ptr<Op> make_Div(const Attrs&) { return std::make_unique<BinaryOpNode>(BinaryOp::Div); }
std::unique_ptr<Op> make_Relu(const Attrs&) { return std::make_unique<UnaryOp>(epilogue_of(Activation::Relu)); }
std::unique_ptr<Op> make_Relu6(const Attrs&) { return std::make_unique<UnaryOp>(epilogue_of(Activation::Relu6)); }
std::unique_ptr<Op> make_Sigmoid(const Attrs&) { return std::make_unique<UnaryOp>(epilogue_of(Activation::Sigmoid)); }
std::unique_ptr<Op> make_Tanh(const Attrs&) { return std::make_unique<UnaryOp>(epilogue_of(Activation::Tanh)); }

std::unique_ptr<Op> make_Silu(const Attrs&) { return std::make_unique<UnaryOp>(epilogue_of(Activation::Silu)); }
std::unique_ptr<Op> make_HardSwish(const Attrs&) {
    return std::make_unique<UnaryOp>(epilogue_of(Activation::HardSwish, 1.0f / 6.0f, 0.5f));
}
std::unique_ptr<Op> make_HardSigmoid(const Attrs& a) {  // ONNX's defaults
    return std::make_unique<UnaryOp>(epilogue_of(Activation::HardSigmoid, a.get_float("alpha", 0.2f), a.get_float("beta", 0.5f)));
}

std::unique_ptr<Op> make_LeakyRelu(const Attrs& a) {
    return std::make_unique<UnaryOp>(epilogue_of(Activation::LeakyRelu, a.get_float("alpha", 0.01f)));
}

std::unique_ptr<Op> make_Clip(const Attrs& a) {
    const float lo = a.get_float("min", -INFINITY), hi = a.get_float("max", INFINITY);
    if (!(lo <= hi)) a.fail(str("attribute 'min' (", lo, ") must not exceed 'max' (", hi, ")"));
    return std::make_unique<UnaryOp>(epilogue_of(Activation::Clip, lo, hi));
}

}  // namespace pyengine
