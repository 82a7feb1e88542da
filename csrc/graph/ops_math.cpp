// SPDX-License-Identifier: Apache-2.0
// Generic elementwise math, broadcasting binaries, reductions, LayerNorm, LogSoftmax and batched
// MatMul: the ops the ONNX importer maps Exp, Erf, Pow, Min, ReduceMax, LayerNormalization... onto.
// Plain loops, except erf / GELU (the vector kernel of kernels/erf.h) and BatchMatMul (the
// dispatched GEMM); host-only (lower() stays false, so a device executor runs them on host copies).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "common.h"
#include "graph/broadcast.h"
#include "graph/op.h"
#include "graph/typed_ops.h"
#include "kernels/erf.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

// ---- Unary math ----

enum class Fn {
    Exp, Log, Sqrt, Erf, Abs, Neg, Reciprocal, Floor, Ceil, Round, Sin, Cos, Tan, Asin, Acos, Atan,
    Sinh, Cosh, Asinh, Acosh, Atanh, Sign, Softplus, Softsign, Elu, Selu, Celu, Gelu, GeluTanh, Mish,
    ThresholdedRelu, Not, BitNot
};

const std::map<std::string, Fn>& unary_fns() {
    static const std::map<std::string, Fn> table = {
        {"exp", Fn::Exp}, {"log", Fn::Log}, {"sqrt", Fn::Sqrt}, {"erf", Fn::Erf}, {"abs", Fn::Abs},
        {"neg", Fn::Neg}, {"reciprocal", Fn::Reciprocal}, {"floor", Fn::Floor}, {"ceil", Fn::Ceil},
        {"round", Fn::Round}, {"sin", Fn::Sin}, {"cos", Fn::Cos}, {"tan", Fn::Tan}, {"asin", Fn::Asin},
        {"acos", Fn::Acos}, {"atan", Fn::Atan}, {"sinh", Fn::Sinh}, {"cosh", Fn::Cosh},
        {"asinh", Fn::Asinh}, {"acosh", Fn::Acosh}, {"atanh", Fn::Atanh}, {"sign", Fn::Sign},
        {"softplus", Fn::Softplus}, {"softsign", Fn::Softsign}, {"elu", Fn::Elu}, {"selu", Fn::Selu},
        {"celu", Fn::Celu}, {"gelu", Fn::Gelu}, {"gelu_tanh", Fn::GeluTanh}, {"mish", Fn::Mish},
        {"thresholded_relu", Fn::ThresholdedRelu}, {"not", Fn::Not}, {"bit_not", Fn::BitNot},
    };
    return table;
}

float softplus(float x) { return x > 0.0f ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

class MathOp : public Op {
public:
    explicit MathOp(const Attrs& a) {
        std::vector<std::string> names;
        for (const auto& kv : unary_fns()) names.push_back(kv.first);
        fn_ = unary_fns().at(a.get_string("fn", "", names));
        alpha_ = a.get_float("alpha", 1.0f);
        beta_ = a.get_float("beta", 1.0f);
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return {in[0]}; }
    // Abs, Neg and Sign take any number type; the rest float32.
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t n) const override {
        if (fn_ == Fn::BitNot && (in[0] == DType::Float32 || in[0] == DType::Float64)) {
            dtype_error(0, in[0], "an integer type");
        }
        if (fn_ == Fn::Abs || fn_ == Fn::Neg || fn_ == Fn::Sign || fn_ == Fn::BitNot) return numeric_dtypes(in);
        return Op::infer_dtypes(in, n);
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (in[0]->dtype != DType::Float32) {
            typed_unary(fn_ == Fn::Abs   ? TypedFn::Abs
                        : fn_ == Fn::Neg ? TypedFn::Neg
                        : fn_ == Fn::Sign ? TypedFn::Sign
                                          : TypedFn::BitNot,
                        *in[0], *out[0]);
            return;
        }
        const float* x = in[0]->f32();
        float* y = out[0]->f32();
        const int64_t n = in[0]->numel();
        if (fn_ == Fn::Erf || fn_ == Fn::Gelu) {  // hot in transformers: the vector kernel
            erf_apply(x, y, n, fn_ == Fn::Gelu);
            return;
        }
        for (int64_t i = 0; i < n; ++i) y[i] = apply(x[i]);
    }

private:
    float apply(float x) const {
        switch (fn_) {
            case Fn::Exp: return std::exp(x);
            case Fn::Log: return std::log(x);
            case Fn::Sqrt: return std::sqrt(x);
            case Fn::Erf: return std::erf(x);
            case Fn::Abs: return std::fabs(x);
            case Fn::Neg: return -x;
            case Fn::Reciprocal: return 1.0f / x;
            case Fn::Floor: return std::floor(x);
            case Fn::Ceil: return std::ceil(x);
            case Fn::Round: return std::nearbyint(x);  // halves to even, as ONNX
            case Fn::Sin: return std::sin(x);
            case Fn::Cos: return std::cos(x);
            case Fn::Tan: return std::tan(x);
            case Fn::Asin: return std::asin(x);
            case Fn::Acos: return std::acos(x);
            case Fn::Atan: return std::atan(x);
            case Fn::Sinh: return std::sinh(x);
            case Fn::Cosh: return std::cosh(x);
            case Fn::Asinh: return std::asinh(x);
            case Fn::Acosh: return std::acosh(x);
            case Fn::Atanh: return std::atanh(x);
            case Fn::Sign: return static_cast<float>((x > 0.0f) - (x < 0.0f));
            case Fn::Softplus: return softplus(x);
            case Fn::Softsign: return x / (1.0f + std::fabs(x));
            case Fn::Elu: return x < 0.0f ? alpha_ * std::expm1(x) : x;
            case Fn::Selu: return beta_ * (x > 0.0f ? x : alpha_ * std::expm1(x));  // beta: gamma
            case Fn::Celu: return std::max(0.0f, x) + std::min(0.0f, alpha_ * std::expm1(x / alpha_));
            case Fn::Gelu: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
            case Fn::GeluTanh:
                return 0.5f * x * (1.0f + std::tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
            case Fn::Mish: return x * std::tanh(softplus(x));
            case Fn::ThresholdedRelu: return x > alpha_ ? x : 0.0f;
            case Fn::Not: return x == 0.0f ? 1.0f : 0.0f;  // booleans are 0 / 1
            case Fn::BitNot: return x;                      // integers only (typed_unary)
        }
        return x;
    }
    Fn fn_;
    float alpha_, beta_;
};

// ---- Broadcasting binaries beyond Add/Sub/Mul/Div ----

enum class Bin { Pow, Min, Max, Fmod, Mod, BitAnd, BitOr, BitXor, ShiftLeft, ShiftRight, PRelu, Equal, Less, Greater, LessEqual, GreaterEqual, And, Or, Xor };

class BinaryMathOp : public Op {
public:
    explicit BinaryMathOp(const Attrs& a) {
        static const std::map<std::string, Bin> fns = {
            {"pow", Bin::Pow}, {"min", Bin::Min}, {"max", Bin::Max}, {"fmod", Bin::Fmod}, {"mod", Bin::Mod},
            {"bit_and", Bin::BitAnd}, {"bit_or", Bin::BitOr}, {"bit_xor", Bin::BitXor},
            {"shift_left", Bin::ShiftLeft}, {"shift_right", Bin::ShiftRight},
            {"prelu", Bin::PRelu}, {"equal", Bin::Equal}, {"less", Bin::Less}, {"greater", Bin::Greater},
            {"less_equal", Bin::LessEqual}, {"greater_equal", Bin::GreaterEqual}, {"and", Bin::And},
            {"or", Bin::Or}, {"xor", Bin::Xor}};
        std::vector<std::string> names;
        for (const auto& kv : fns) names.push_back(kv.first);
        fn_ = fns.at(a.get_string("fn", "", names));
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        return {broadcast_shape(in[0], in[1])};
    }
    // Pow, Min, Max, Fmod and Mod take any one number type; the rest float32.
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t n) const override {
        if (bitwise()) {
            if (in[0] == DType::Float32 || in[0] == DType::Float64) dtype_error(0, in[0], "an integer type");
            return numeric_dtypes(in);
        }
        if (typed()) return numeric_dtypes(in);
        return Op::infer_dtypes(in, n);
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (in[0]->dtype != DType::Float32 || fn_ == Bin::Mod) {
            static const std::map<Bin, TypedFn> kFns = {{Bin::Pow, TypedFn::Pow}, {Bin::Min, TypedFn::Min},
                                                        {Bin::Max, TypedFn::Max}, {Bin::Fmod, TypedFn::Fmod},
                                                        {Bin::Mod, TypedFn::Mod}, {Bin::BitAnd, TypedFn::BitAnd},
                                                        {Bin::BitOr, TypedFn::BitOr}, {Bin::BitXor, TypedFn::BitXor},
                                                        {Bin::ShiftLeft, TypedFn::ShiftLeft},
                                                        {Bin::ShiftRight, TypedFn::ShiftRight}};
            typed_binary(kFns.at(fn_), *in[0], *in[1], *out[0]);
            return;
        }
        const Shape& os = out[0]->shape;
        const float* a = in[0]->f32();
        const float* b = in[1]->f32();
        float* y = out[0]->f32();
        const Bin fn = fn_;
        for_each_broadcast(os, broadcast_strides(in[0]->shape, os), broadcast_strides(in[1]->shape, os),
                           [&](int64_t e, int64_t ia, int64_t ib) {
                               const float x = a[ia], z = b[ib];
                               switch (fn) {
                                   case Bin::Pow: y[e] = std::pow(x, z); break;
                                   // NaN propagates, as in ONNX's Min/Max
                                   case Bin::Min: y[e] = std::isnan(x) || x < z ? x : z; break;
                                   case Bin::Max: y[e] = std::isnan(x) || x > z ? x : z; break;
                                   case Bin::Fmod: y[e] = std::fmod(x, z); break;
                                   // typed_binary above (integers)
                                   case Bin::Mod: case Bin::BitAnd: case Bin::BitOr: case Bin::BitXor:
                                   case Bin::ShiftLeft: case Bin::ShiftRight: break;
                                   case Bin::PRelu: y[e] = x < 0.0f ? x * z : x; break;
                                   // Comparisons and logic answer booleans as 0 / 1.
                                   case Bin::Equal: y[e] = x == z; break;
                                   case Bin::Less: y[e] = x < z; break;
                                   case Bin::Greater: y[e] = x > z; break;
                                   case Bin::LessEqual: y[e] = x <= z; break;
                                   case Bin::GreaterEqual: y[e] = x >= z; break;
                                   case Bin::And: y[e] = x != 0.0f && z != 0.0f; break;
                                   case Bin::Or: y[e] = x != 0.0f || z != 0.0f; break;
                                   case Bin::Xor: y[e] = (x != 0.0f) != (z != 0.0f); break;
                               }
                           });
    }

private:
    bool bitwise() const {
        return fn_ == Bin::BitAnd || fn_ == Bin::BitOr || fn_ == Bin::BitXor || fn_ == Bin::ShiftLeft ||
               fn_ == Bin::ShiftRight;
    }
    bool typed() const {
        return fn_ == Bin::Pow || fn_ == Bin::Min || fn_ == Bin::Max || fn_ == Bin::Fmod || fn_ == Bin::Mod;
    }
    Bin fn_;
};

// Where(cond, a, b): a where cond is non-zero (a boolean as 0 / 1), else b; all three broadcast.
class WhereOp : public Op {
public:
    explicit WhereOp(const Attrs&) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        return {broadcast_shape(in[0], broadcast_shape(in[1], in[2]))};
    }
    // cond bool (or float32 0 / 1); a and b of any one dtype, which the output has.
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (in[0] != DType::Bool && in[0] != DType::Float32) dtype_error(0, in[0], "bool or float32");
        if (in[2] != in[1]) dtype_error(2, in[2], str(dtype_name(in[1]), " (input 1's dtype)"));
        return {in[1]};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (in[0]->dtype != DType::Float32 || in[1]->dtype != DType::Float32) {
            typed_where(*in[0], *in[1], *in[2], *out[0]);
            return;
        }
        const Shape& os = out[0]->shape;
        const float* c = in[0]->f32();
        const float* a = in[1]->f32();
        const float* b = in[2]->f32();
        float* y = out[0]->f32();
        for_each_broadcast_n(os,
                             {broadcast_strides(in[0]->shape, os), broadcast_strides(in[1]->shape, os),
                              broadcast_strides(in[2]->shape, os)},
                             [&](int64_t e, const int64_t* off) { y[e] = c[off[0]] != 0.0f ? a[off[1]] : b[off[2]]; });
    }
};

// ---- Reductions ----

enum class Red { Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare };

class ReduceOp : public Op {
public:
    explicit ReduceOp(const Attrs& a) {
        static const std::map<std::string, Red> kinds = {
            {"sum", Red::Sum}, {"mean", Red::Mean}, {"max", Red::Max}, {"min", Red::Min},
            {"prod", Red::Prod}, {"l1", Red::L1}, {"l2", Red::L2}, {"log_sum", Red::LogSum},
            {"log_sum_exp", Red::LogSumExp}, {"sum_square", Red::SumSquare}};
        std::vector<std::string> names;
        for (const auto& kv : kinds) names.push_back(kv.first);
        kind_ = kinds.at(a.get_string("kind", "", names));
        axes_ = a.get_ints("axes", -1, {}, std::numeric_limits<int64_t>::min());
        keepdims_ = a.get_bool("keepdims", true);
        noop_with_empty_axes_ = a.get_bool("noop_with_empty_axes", false);
    }
    // Input 1, when present, holds the axes (ONNX opset 13/18), read by value.
    bool reads_value(size_t i) const override { return i == 1; }
    bool takes_dtype(size_t i, DType t) const override {
        return i == 1 ? t == DType::Int64 || t == DType::Int32 : t == DType::Float32;
    }
    // Which dimensions of an input of rank `rank` are reduced (no axes: all of them, or none
    // with noop_with_empty_axes); `axes` is input 1 when there is one.
    std::vector<bool> reduced(size_t rank, const Tensor* axes) const {
        const std::vector<int64_t> ax = axes != nullptr ? param_ints(*axes, "Reduce axes (input 1)", kMaxRank) : axes_;
        std::vector<bool> r(rank, ax.empty() && !noop_with_empty_axes_);
        for (int64_t a : ax) r[static_cast<size_t>(normalize_axis(a, rank, "Reduce"))] = true;
        return r;
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return infer_values(in, {nullptr}); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& values) const override {
        const std::vector<bool> r = reduced(in[0].size(), values.size() > 1 ? values[1] : nullptr);
        Shape out;
        for (size_t i = 0; i < in[0].size(); ++i) {
            if (!r[i]) out.push_back(in[0][i]);
            else if (keepdims_) out.push_back(1);
        }
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        const std::vector<bool> r = reduced(s.size(), in.size() > 1 ? in[1] : nullptr);
        // The kept shape with reduced dims as 1: output strides that skip the reduced dims.
        Shape kept(s.size());
        int64_t count = 1;
        for (size_t i = 0; i < s.size(); ++i) {
            kept[i] = r[i] ? 1 : s[i];
            if (r[i]) count *= s[i];
        }
        const std::vector<int64_t> so = broadcast_strides(kept, s);
        const std::vector<int64_t> none(s.size(), 0);
        const int64_t m = out[0]->numel();
        const float* x = in[0]->f32();
        float* y = out[0]->f32();
        const float inf = std::numeric_limits<float>::infinity();
        std::vector<double> acc(static_cast<size_t>(m), kind_ == Red::Prod ? 1.0 : kind_ == Red::Max ? -inf
                                                         : kind_ == Red::Min ? inf : 0.0);
        std::vector<double> peak;
        if (kind_ == Red::LogSumExp) {  // stable: subtract each output's maximum first
            peak.assign(static_cast<size_t>(m), -inf);
            for_each_broadcast(s, so, none, [&](int64_t e, int64_t o, int64_t) {
                peak[static_cast<size_t>(o)] = std::max<double>(peak[static_cast<size_t>(o)], x[e]);
            });
        }
        for_each_broadcast(s, so, none, [&](int64_t e, int64_t o, int64_t) {
            double& a = acc[static_cast<size_t>(o)];
            const double v = x[e];
            switch (kind_) {
                case Red::Sum: case Red::Mean: case Red::LogSum: a += v; break;
                case Red::Max: a = std::isnan(v) || v > a ? v : a; break;
                case Red::Min: a = std::isnan(v) || v < a ? v : a; break;
                case Red::Prod: a *= v; break;
                case Red::L1: a += std::fabs(v); break;
                case Red::L2: case Red::SumSquare: a += v * v; break;
                case Red::LogSumExp: {
                    const double p = peak[static_cast<size_t>(o)];
                    a += std::isinf(p) ? std::exp(v) : std::exp(v - p);
                    break;
                }
            }
        });
        for (int64_t o = 0; o < m; ++o) {
            const double a = acc[static_cast<size_t>(o)];
            double v = a;
            switch (kind_) {
                case Red::Mean: v = a / static_cast<double>(count); break;
                case Red::L2: v = std::sqrt(a); break;
                case Red::LogSum: v = std::log(a); break;
                case Red::LogSumExp: {
                    const double p = peak[static_cast<size_t>(o)];
                    v = std::log(a) + (std::isinf(p) ? 0.0 : p);
                    break;
                }
                default: break;
            }
            y[o] = static_cast<float>(v);
        }
    }

private:
    Red kind_;
    std::vector<int64_t> axes_;
    bool keepdims_, noop_with_empty_axes_;
};

// ---- LayerNorm and LogSoftmax ----

// `t` broadcast (right-aligned) to `target`, as a dense vector.
std::vector<float> expand_to(const Tensor& t, const Shape& target) {
    std::vector<float> v(static_cast<size_t>(shape_numel(target)));
    if (t.shape.size() > target.size()) shape_error(str("shape ", shape_str(t.shape), " does not broadcast to ", shape_str(target)));
    broadcast_shape(t.shape, target);
    const float* src = t.f32();
    for_each_broadcast(target, broadcast_strides(t.shape, target), std::vector<int64_t>(target.size(), 0),
                       [&](int64_t e, int64_t i, int64_t) { v[static_cast<size_t>(e)] = src[i]; });
    return v;
}

// sum of (v[i] - shift), or of its square with `square`, over 8 float lanes (vectorizable
// without reassociating a single accumulator), the lanes added in double.
double lane_sum(const float* v, int64_t n, float shift, bool square) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int l = 0; l < 8; ++l) {
            const float d = v[i + l] - shift;
            acc[l] += square ? d * d : d;
        }
    }
    double total = 0.0;
    for (; i < n; ++i) {
        const double d = static_cast<double>(v[i]) - shift;
        total += square ? d * d : d;
    }
    for (float a : acc) total += a;
    return total;
}

// fn(row) for `rows` rows of `cols` elements, over the pool when there is enough work.
template <class F>
void parallel_for_rows(int64_t rows, int64_t cols, F fn) {
    constexpr int64_t kMinTaskElements = 1 << 13;
    const int64_t per_task = std::max<int64_t>(1, kMinTaskElements / std::max<int64_t>(cols, 1));
    const int64_t tasks = (rows + per_task - 1) / per_task;
    if (tasks <= 1 || num_threads() <= 1) {
        for (int64_t r = 0; r < rows; ++r) fn(r);
        return;
    }
    parallel_for(tasks, [&](int64_t t) {
        for (int64_t r = t * per_task; r < std::min(rows, (t + 1) * per_task); ++r) fn(r);
    });
}

// ONNX LayerNormalization: normalise over the dimensions from `axis` on, then scale and bias.
class LayerNormOp : public Op {
public:
    explicit LayerNormOp(const Attrs& a) : axis_(a.get_int("axis", -1)), eps_(a.get_float("epsilon", 1e-5f)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, in[0].size(), "LayerNorm"));
        const Shape inner(in[0].begin() + static_cast<std::ptrdiff_t>(axis), in[0].end());
        for (size_t i = 1; i < in.size(); ++i) {
            if (in[i].size() > inner.size() || broadcast_shape(in[i], inner) != inner) {
                shape_error(str("LayerNorm scale/bias ", shape_str(in[i]), " does not broadcast to ", shape_str(inner)));
            }
        }
        return {in[0]};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "LayerNorm"));
        const Shape inner_shape(s.begin() + static_cast<std::ptrdiff_t>(axis), s.end());
        const int64_t inner = shape_numel(inner_shape), outer = in[0]->numel() / std::max<int64_t>(inner, 1);
        const std::vector<float> scale = expand_to(*in[1], inner_shape);
        const std::vector<float> bias =
            in.size() > 2 && in[2] ? expand_to(*in[2], inner_shape) : std::vector<float>(static_cast<size_t>(inner), 0.0f);
        const float* x = in[0]->f32();
        float* y = out[0]->f32();
        const float* sc = scale.data();
        const float* bi = bias.data();
        parallel_for_rows(outer, inner, [&](int64_t o) {
            const float* xo = x + o * inner;
            float* yo = y + o * inner;
            // Two passes (mean, then squared deviations) in float lanes the compiler vectorizes,
            // each lane's sum folded in double.
            const float mean = static_cast<float>(lane_sum(xo, inner, 0.0f, false) / static_cast<double>(inner));
            const double var = lane_sum(xo, inner, mean, true) / static_cast<double>(inner);
            const float inv = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps_)));
            for (int64_t i = 0; i < inner; ++i) yo[i] = (xo[i] - mean) * inv * sc[i] + bi[i];
        });
    }

private:
    int64_t axis_;
    float eps_;
};

class LogSoftmaxOp : public Op {
public:
    explicit LogSoftmaxOp(const Attrs& a) : axis_(a.get_int("axis", -1)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        normalize_axis(axis_, in[0].size(), "LogSoftmax");
        return {in[0]};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "LogSoftmax"));
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < axis; ++i) outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
        const int64_t n = s[axis];
        const float* x = in[0]->f32();
        float* y = out[0]->f32();
        for (int64_t o = 0; o < outer; ++o) {
            for (int64_t j = 0; j < inner; ++j) {
                const float* xb = x + o * n * inner + j;
                float* yb = y + o * n * inner + j;
                float peak = -std::numeric_limits<float>::infinity();
                for (int64_t k = 0; k < n; ++k) peak = std::max(peak, xb[k * inner]);
                double sum = 0.0;
                for (int64_t k = 0; k < n; ++k) sum += std::exp(static_cast<double>(xb[k * inner] - peak));
                const float lse = peak + static_cast<float>(std::log(sum));
                for (int64_t k = 0; k < n; ++k) yb[k * inner] = xb[k * inner] - lse;
            }
        }
    }

private:
    int64_t axis_;
};

// ---- MatMul with numpy batch broadcasting: [..., M, K] x [..., K, N] (rank >= 2 both; the
// importer reshapes 1-D operands) ----
class BatchMatMulOp : public Op {
public:
    explicit BatchMatMulOp(const Attrs&) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& a = in[0];
        const Shape& b = in[1];
        if (a.size() < 2 || b.size() < 2) shape_error(str("BatchMatMul needs rank >= 2, got ", shape_str(a), " and ", shape_str(b)));
        if (a[a.size() - 1] != b[b.size() - 2]) {
            shape_error(str("BatchMatMul: ", shape_str(a), " x ", shape_str(b), " inner sizes differ"));
        }
        Shape out = broadcast_shape(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2));
        out.push_back(a[a.size() - 2]);
        out.push_back(b[b.size() - 1]);
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& as = in[0]->shape;
        const Shape& bs = in[1]->shape;
        const Shape& os = out[0]->shape;
        const int64_t M = as[as.size() - 2], K = as[as.size() - 1], N = bs[bs.size() - 1];
        const Shape batch(os.begin(), os.end() - 2);
        const Shape ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
        const float* a = in[0]->f32();
        const float* b = in[1]->f32();
        float* y = out[0]->f32();
        if (shape_numel(batch) == 0 || M * N == 0) return;
        const KernelTable& k = kernels();
        if (K == 0) {
            std::fill(y, y + out[0]->numel(), 0.0f);
            return;
        }
        const std::vector<int64_t> sb = broadcast_strides(bb, batch);
        if (std::all_of(sb.begin(), sb.end(), [](int64_t s) { return s == 0; }) && ab == batch) {
            // One B for every batch (a weight): the batches are rows of one GEMM.
            k.gemm(shape_numel(batch) * M, N, K, a, K, b, N, false, y, N, Epilogue{});
            return;
        }
        for_each_broadcast(batch, broadcast_strides(ab, batch), sb, [&](int64_t e, int64_t ia, int64_t ib) {
            k.gemm(M, N, K, a + ia * M * K, K, b + ib * K * N, N, false, y + e * M * N, N, Epilogue{});
        });
    }
};

}  // namespace

std::unique_ptr<Op> make_Math(const Attrs& a) { return std::make_unique<MathOp>(a); }
std::unique_ptr<Op> make_BinaryMath(const Attrs& a) { return std::make_unique<BinaryMathOp>(a); }
std::unique_ptr<Op> make_Where(const Attrs& a) { return std::make_unique<WhereOp>(a); }
std::unique_ptr<Op> make_Reduce(const Attrs& a) { return std::make_unique<ReduceOp>(a); }
std::unique_ptr<Op> make_LayerNorm(const Attrs& a) { return std::make_unique<LayerNormOp>(a); }
std::unique_ptr<Op> make_LogSoftmax(const Attrs& a) { return std::make_unique<LogSoftmaxOp>(a); }
std::unique_ptr<Op> make_BatchMatMul(const Attrs& a) { return std::make_unique<BatchMatMulOp>(a); }

}  // namespace pyengine
