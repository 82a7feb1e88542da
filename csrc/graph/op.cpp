// SPDX-License-Identifier: Apache-2.0
#include "graph/op.h"

#include <cmath>
#include <map>

#include "common.h"
#include "kernels/dispatch.h"

namespace pyengine {

Attrs::Attrs(const json::Value* attrs, std::string node, std::string op)
    : attrs_(attrs), node_(std::move(node)), op_(std::move(op)) {
    if (attrs_ != nullptr && !attrs_->is_object()) fail("'attrs' must be an object");
}

void Attrs::fail(const std::string& what) const {
    throw ModelFormatError(str("node '", node_, "' (", op_, "): ", what));
}

const json::Value* Attrs::find(const std::string& key) const {
    used_.insert(key);
    return attrs_ ? attrs_->find(key) : nullptr;
}

bool Attrs::has(const std::string& key) const { return find(key) != nullptr; }

int64_t Attrs::get_int(const std::string& key, int64_t def) const {
    const json::Value* v = find(key);
    if (!v) return def;
    if (!v->is_integer()) fail(str("attribute '", key, "' must be an integer, got ", v->dump()));
    return v->as_int();
}

int64_t Attrs::get_int_required(const std::string& key) const {
    if (!has(key)) fail(str("attribute '", key, "' is required"));
    return get_int(key, 0);
}

float Attrs::get_float(const std::string& key, float def) const {
    const json::Value* v = find(key);
    if (!v) return def;
    if (!v->is_number()) fail(str("attribute '", key, "' must be a number, got ", v->dump()));
    return static_cast<float>(v->as_number());
}

bool Attrs::get_bool(const std::string& key, bool def) const {
    const json::Value* v = find(key);
    if (!v) return def;
    if (!v->is_bool()) fail(str("attribute '", key, "' must be true or false, got ", v->dump()));
    return v->as_bool();
}

std::string Attrs::get_string(const std::string& key, const std::string& def,
                              const std::vector<std::string>& allowed) const {
    const json::Value* v = find(key);
    if (!v) return def;
    if (v->is_string()) {
        for (const auto& a : allowed) if (a == v->as_string()) return a;
    }
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    fail(str("attribute '", key, "' must be one of ", list, "; got ", v->dump()));
}

std::vector<int64_t> Attrs::get_ints(const std::string& key, int size, std::vector<int64_t> def,
                                     int64_t min_value) const {
    const json::Value* v = find(key);
    if (!v) return def;
    auto complain = [&]() {
        fail(str("attribute '", key, "' must be a list of ", size >= 0 ? str(size, " ") : std::string(),
                 "integers >= ", min_value, ", got ", v->dump()));
    };
    if (!v->is_array() || (size >= 0 && v->items().size() != static_cast<size_t>(size))) complain();
    if (v->items().size() > 64) complain();
    std::vector<int64_t> out;
    for (const auto& it : v->items()) {
        // Bounded so that products of attributes cannot overflow.
        if (!it.is_integer() || it.as_int() < min_value || it.as_int() > (int64_t(1) << 31)) complain();
        out.push_back(it.as_int());
    }
    return out;
}

std::vector<double> Attrs::get_floats(const std::string& key, int size) const {
    const json::Value* v = find(key);
    if (!v) return {};
    auto complain = [&]() {
        fail(str("attribute '", key, "' must be a list of ", size >= 0 ? str(size, " ") : std::string(),
                 "finite numbers, got ", v->dump()));
    };
    if (!v->is_array() || (size >= 0 && v->items().size() != static_cast<size_t>(size))) complain();
    if (v->items().size() > 64) complain();
    std::vector<double> out;
    for (const auto& it : v->items()) {
        if (!it.is_number() || !std::isfinite(it.as_number())) complain();
        out.push_back(it.as_number());
    }
    return out;
}

Epilogue Attrs::get_epilogue() const {
    Epilogue e;
    const std::string name = get_string("activation", "none",
        {"none", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "clip", "hard_sigmoid", "hard_swish", "silu"});
    activation_from_name(name, &e.act);
    if (e.act == Activation::LeakyRelu) e.alpha = get_float("alpha", 0.01f);
    if (e.act == Activation::HardSigmoid) {  // ONNX's defaults
        e.alpha = get_float("alpha", 0.2f);
        e.beta = get_float("beta", 0.5f);
    }
    if (e.act == Activation::HardSwish) {
        e.alpha = 1.0f / 6.0f;
        e.beta = 0.5f;
    }
    if (e.act == Activation::Clip) {
        e.alpha = get_float("min", -INFINITY);
        e.beta = get_float("max", INFINITY);
        if (!(e.alpha <= e.beta)) fail("attribute 'min' must not exceed 'max'");
    }
    return e;
}

Layout Attrs::get_layout() const {
    return get_string("layout", "NCHW", {"NCHW", "NHWC"}) == "NHWC" ? Layout::NHWC : Layout::NCHW;
}

void Attrs::check_all_used() const {
    if (!attrs_) return;
    for (const auto& m : attrs_->members()) {
        if (!used_.count(m.first)) fail(str("unknown attribute '", m.first, "'"));
    }
}

OpRunInfo Op::run_info(const std::vector<Shape>& in) const {
    (void)in;
    return OpRunInfo{"", is_view() ? "view" : kernels().name};
}

std::vector<DType> Op::infer_dtypes(const std::vector<DType>& in, size_t n_out) const {
    for (size_t i = 0; i < in.size(); ++i) {
        if (!takes_dtype(i, in[i])) dtype_error(i, in[i], "float32");
    }
    return std::vector<DType>(n_out, DType::Float32);
}

void dtype_error(size_t i, DType got, const std::string& takes) {
    throw InvalidArgument(str("input ", i, " has dtype ", dtype_name(got), "; it takes ", takes));
}

int64_t normalize_axis(int64_t axis, size_t rank, const std::string& what) {
    const int64_t r = static_cast<int64_t>(rank);
    if (axis < -r || axis >= r) shape_error(str(what, " axis ", axis, " is out of range for rank ", r));
    return axis < 0 ? axis + r : axis;
}

void shape_error(const std::string& what) { throw InvalidArgument(what); }

namespace {
void check_param_count(const Tensor& t, const std::string& what, int64_t max_count) {
    if (t.shape.size() > 1) shape_error(str(what, " must be a scalar or a 1-D list, got shape ", shape_str(t.shape)));
    if (max_count >= 0 && t.numel() > max_count) {
        shape_error(str(what, " holds ", t.numel(), " numbers; it takes at most ", max_count));
    }
}
}  // namespace

std::vector<int64_t> param_ints(const Tensor& t, const std::string& what, int64_t max_count) {
    check_param_count(t, what, max_count);
    std::vector<int64_t> out(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < out.size(); ++i) {
        if (t.dtype == DType::Int64) out[i] = t.as<const int64_t>()[i];
        else if (t.dtype == DType::Int32) out[i] = t.as<const int32_t>()[i];
        else shape_error(str(what, " has dtype ", dtype_name(t.dtype), "; it takes int32 or int64"));
    }
    return out;
}

std::vector<double> param_floats(const Tensor& t, const std::string& what, int64_t max_count) {
    check_param_count(t, what, max_count);
    std::vector<double> out(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < out.size(); ++i) {
        if (t.dtype == DType::Float32) out[i] = t.f32()[i];
        else if (t.dtype == DType::Float64) out[i] = t.as<const double>()[i];
        else shape_error(str(what, " has dtype ", dtype_name(t.dtype), "; it takes float32 or float64"));
    }
    return out;
}

// Factories live beside their ops (ops_nn.cpp, ops_elementwise.cpp, ops_shape.cpp, ops_math.cpp,
// ops_conv_transpose.cpp, ops_rnn.cpp, ops_resize.cpp, ops_attention.cpp, ops_grid_sample.cpp,
// ops_params.cpp).
using Factory = std::unique_ptr<Op> (*)(const Attrs&);
#define PYENGINE_OPS(X)                                                                  \
    X(Dense, 2, 3, 1) X(MatMul, 2, 3, 1) X(Conv2D, 2, 3, 1) X(BatchNorm, 5, 5, 1)        \
    X(Add, 2, 2, 1) X(Sub, 2, 2, 1) X(Mul, 2, 2, 1) X(Div, 2, 2, 1)                      \
    X(Relu, 1, 1, 1) X(Relu6, 1, 1, 1) X(Clip, 1, 1, 1) X(LeakyRelu, 1, 1, 1)            \
    X(Sigmoid, 1, 1, 1) X(Tanh, 1, 1, 1) X(Softmax, 1, 1, 1)                             \
    X(HardSigmoid, 1, 1, 1) X(HardSwish, 1, 1, 1) X(Silu, 1, 1, 1) X(LRN, 1, 1, 1)       \
    X(Slice, 1, 5, 1)                                                                    \
    X(MaxPool, 1, 1, 1) X(AvgPool, 1, 1, 1) X(GlobalMaxPool, 1, 1, 1)                    \
    X(GlobalAvgPool, 1, 1, 1) X(Flatten, 1, 1, 1) X(Reshape, 1, 2, 1)                    \
    X(Transpose, 1, 1, 1) X(Squeeze, 1, 2, 1) X(Concat, 1, 64, 1) X(Pad, 1, 4, 1)        \
    X(Mean, 1, 1, 1) X(Identity, 1, 1, 1)                                                \
    X(Math, 1, 1, 1) X(BinaryMath, 2, 2, 1) X(Reduce, 1, 2, 1) X(LayerNorm, 2, 3, 1)     \
    X(LogSoftmax, 1, 1, 1) X(BatchMatMul, 2, 2, 1) X(Where, 3, 3, 1)    \
    X(Resize, 1, 2, 1) X(GridSample, 2, 2, 1) X(ConvTranspose2D, 2, 3, 1)                                      \
    X(RNN, 4, 5, 1) X(GRU, 4, 5, 1) X(LSTM, 4, 7, 1)                                                     \
    X(QuantizeLinear, 1, 1, 1) X(DequantizeLinear, 1, 1, 1)                              \
    X(QLinearConv2D, 2, 3, 1) X(QLinearDense, 2, 3, 1)                                 \
    X(Cast, 1, 1, 1) X(BitCast, 1, 1, 1) X(Compare, 2, 2, 1) X(Logic, 1, 2, 1) X(Classify, 1, 1, 1)          \
    X(ArgReduce, 1, 1, 1) X(Gather, 2, 2, 1) X(GatherElements, 2, 2, 1) X(Scatter, 3, 3, 1)  \
    X(Cumulative, 2, 2, 1) X(Trilu, 1, 2, 1) X(Attention, 3, 7, 1)                         \
    X(Unsqueeze, 1, 2, 1) X(Expand, 2, 2, 1) X(Tile, 2, 2, 1) X(ConstantOfShape, 1, 1, 1)  \
    X(Range, 3, 3, 1) X(Split, 1, 2, 1) X(TopK, 2, 2, 1) X(Shape, 1, 1, 1)

#define DECLARE(name, a, b, c) std::unique_ptr<Op> make_##name(const Attrs&);
PYENGINE_OPS(DECLARE)
#undef DECLARE

namespace {
struct Entry { Factory make; OpSpec spec; };
const std::map<std::string, Entry>& registry() {
    static const std::map<std::string, Entry> table = {
#define ENTRY(name, a, b, c) {#name, {make_##name, {a, b, c}}},
        PYENGINE_OPS(ENTRY)
#undef ENTRY
    };
    return table;
}
}  // namespace

std::unique_ptr<Op> op_create(const std::string& op, const Attrs& attrs, OpSpec* spec) {
    auto it = registry().find(op);
    if (it == registry().end()) attrs.fail(str("unknown op '", op, "'"));
    *spec = it->second.spec;
    auto made = it->second.make(attrs);
    attrs.check_all_used();
    return made;
}

std::vector<std::string> op_names() {
    std::vector<std::string> out;
    for (const auto& kv : registry()) out.push_back(kv.first);
    return out;
}

}  // namespace pyengine
