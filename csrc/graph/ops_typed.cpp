// SPDX-License-Identifier: Apache-2.0
// Ops on typed values: Cast, Compare (-> bool), Logic (bool), IsNaN/IsInf (Classify -> bool),
// ArgMax/ArgMin (-> int64), Gather, GatherElements, Trilu. Generic loops over every dtype
// through dispatch_dtype; none is hot in the models the vector kernels serve.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <type_traits>

#include "common.h"
#include "graph/broadcast.h"
#include "graph/dtype_dispatch.h"
#include "graph/op.h"

namespace pyengine {

namespace {

bool is_index_dtype(DType t) { return t == DType::Int32 || t == DType::Int64; }

// Index `i` of an int32/int64 tensor.
int64_t index_at(const Tensor& t, int64_t i) {
    return t.dtype == DType::Int64 ? t.as<int64_t>()[i] : static_cast<int64_t>(t.as<int32_t>()[i]);
}

// An index in [-dim, dim) as a position in [0, dim); anything else is an InvalidArgument.
int64_t wrap_index(int64_t i, int64_t dim, const char* op) {
    if (i < -dim || i >= dim) throw InvalidArgument(str(op, " index ", i, " is out of range for a dimension of ", dim));
    return i < 0 ? i + dim : i;
}

template <class To, class From>
To convert_value(From v) {
    if constexpr (std::is_same_v<To, bool>) {
        return v != From(0);
    } else if constexpr (std::is_floating_point_v<From> && !std::is_floating_point_v<To>) {
        // float -> integer truncates toward zero; NaN and values past the range saturate
        // instead of being undefined behaviour.
        if (std::isnan(v)) return To(0);
        if (v <= static_cast<From>(std::numeric_limits<To>::lowest())) return std::numeric_limits<To>::lowest();
        if (v >= static_cast<From>(std::numeric_limits<To>::max())) return std::numeric_limits<To>::max();
        return static_cast<To>(v);
    } else {
        return static_cast<To>(v);
    }
}

class CastOp : public Op {
public:
    explicit CastOp(const Attrs& a) {
        const std::string to = a.get_string("to", "", dtype_names());
        dtype_from_name(to, &to_);
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return {in[0]}; }
    bool takes_dtype(size_t, DType) const override { return true; }
    std::vector<DType> infer_dtypes(const std::vector<DType>&, size_t) const override { return {to_}; }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const int64_t n = in[0]->numel();
        dispatch_dtype(in[0]->dtype, [&](auto from_tag) {
            using From = decltype(from_tag);
            const From* x = in[0]->as<From>();
            dispatch_dtype(to_, [&](auto to_tag) {
                using To = decltype(to_tag);
                To* y = out[0]->as<To>();
                for (int64_t i = 0; i < n; ++i) y[i] = convert_value<To, From>(x[i]);
            });
        });
    }

private:
    DType to_ = DType::Float32;
};

// ONNX BitCast: the same bytes read as another dtype of the same width (a view).
class BitCastOp : public Op {
public:
    explicit BitCastOp(const Attrs& a) {
        const std::string to = a.get_string("to", "", dtype_names());
        dtype_from_name(to, &to_);
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return {in[0]}; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (dtype_size(in[0]) != dtype_size(to_)) {
            dtype_error(0, in[0], str("a dtype as wide as ", dtype_name(to_), " (", dtype_size(to_), " bytes)"));
        }
        return {to_};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (out[0]->data != in[0]->data) std::memcpy(out[0]->data, in[0]->data, in[0]->nbytes());
    }
    bool is_view() const override { return true; }

private:
    DType to_ = DType::Float32;
};

enum class Cmp { Equal, Less, Greater, LessEqual, GreaterEqual };

// Comparisons with numpy broadcasting: two inputs of one dtype -> bool.
class CompareOp : public Op {
public:
    explicit CompareOp(const Attrs& a) {
        static const std::map<std::string, Cmp> fns = {{"equal", Cmp::Equal}, {"less", Cmp::Less}, {"greater", Cmp::Greater},
                                                       {"less_equal", Cmp::LessEqual}, {"greater_equal", Cmp::GreaterEqual}};
        fn_ = fns.at(a.get_string("fn", "", {"equal", "less", "greater", "less_equal", "greater_equal"}));
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return {broadcast_shape(in[0], in[1])}; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (in[1] != in[0]) dtype_error(1, in[1], str(dtype_name(in[0]), " (input 0's dtype)"));
        return {DType::Bool};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& os = out[0]->shape;
        bool* y = out[0]->as<bool>();
        const Cmp fn = fn_;
        dispatch_dtype(in[0]->dtype, [&](auto tag) {
            using T = decltype(tag);
            const T* a = in[0]->as<T>();
            const T* b = in[1]->as<T>();
            for_each_broadcast(os, broadcast_strides(in[0]->shape, os), broadcast_strides(in[1]->shape, os),
                               [&](int64_t e, int64_t ia, int64_t ib) {
                                   const T x = a[ia], z = b[ib];
                                   switch (fn) {
                                       case Cmp::Equal: y[e] = x == z; break;
                                       case Cmp::Less: y[e] = x < z; break;
                                       case Cmp::Greater: y[e] = x > z; break;
                                       case Cmp::LessEqual: y[e] = x <= z; break;
                                       case Cmp::GreaterEqual: y[e] = x >= z; break;
                                   }
                               });
        });
    }

private:
    Cmp fn_;
};

// And, Or, Xor (two bool inputs, broadcasting) and Not (one).
class LogicOp : public Op {
public:
    explicit LogicOp(const Attrs& a) : fn_(a.get_string("fn", "", {"and", "or", "xor", "not"})) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        if ((fn_ == "not") != (in.size() == 1)) shape_error(str("Logic '", fn_, "' takes ", fn_ == "not" ? 1 : 2, " inputs"));
        return {in.size() == 1 ? in[0] : broadcast_shape(in[0], in[1])};
    }
    bool takes_dtype(size_t, DType t) const override { return t == DType::Bool; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        for (size_t i = 0; i < in.size(); ++i) if (in[i] != DType::Bool) dtype_error(i, in[i], "bool");
        return {DType::Bool};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        bool* y = out[0]->as<bool>();
        const bool* a = in[0]->as<bool>();
        if (in.size() == 1) {
            const int64_t n = in[0]->numel();
            for (int64_t i = 0; i < n; ++i) y[i] = !a[i];
            return;
        }
        const bool* b = in[1]->as<bool>();
        const Shape& os = out[0]->shape;
        const char f = fn_[0];
        for_each_broadcast(os, broadcast_strides(in[0]->shape, os), broadcast_strides(in[1]->shape, os),
                           [&](int64_t e, int64_t ia, int64_t ib) {
                               y[e] = f == 'a' ? (a[ia] && b[ib]) : f == 'o' ? (a[ia] || b[ib]) : (a[ia] != b[ib]);
                           });
    }

private:
    std::string fn_;
};

// IsNaN, IsInf (detect_positive / detect_negative): float -> bool.
class ClassifyOp : public Op {
public:
    explicit ClassifyOp(const Attrs& a)
        : fn_(a.get_string("fn", "", {"isnan", "isinf"})), pos_(a.get_bool("detect_positive", true)),
          neg_(a.get_bool("detect_negative", true)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return {in[0]}; }
    bool takes_dtype(size_t, DType t) const override { return dtype_is_float(t); }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (!dtype_is_float(in[0])) dtype_error(0, in[0], "float32 or float64");
        return {DType::Bool};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        bool* y = out[0]->as<bool>();
        const int64_t n = in[0]->numel();
        dispatch_dtype(in[0]->dtype, [&](auto tag) {
            using T = decltype(tag);
            if constexpr (std::is_floating_point_v<T>) {
                const T* x = in[0]->as<T>();
                for (int64_t i = 0; i < n; ++i) {
                    y[i] = fn_ == "isnan" ? std::isnan(x[i]) : std::isinf(x[i]) && ((x[i] > 0 && pos_) || (x[i] < 0 && neg_));
                }
            }
        });
    }

private:
    std::string fn_;
    bool pos_, neg_;
};

// ArgMax / ArgMin along one axis -> int64 (the first extreme, or the last with select_last_index).
class ArgReduceOp : public Op {
public:
    explicit ArgReduceOp(const Attrs& a)
        : max_(a.get_string("kind", "", {"max", "min"}) == "max"), axis_(a.get_int("axis", 0)),
          keepdims_(a.get_bool("keepdims", true)), last_(a.get_bool("select_last_index", false)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, in[0].size(), "ArgMax/ArgMin"));
        if (in[0][axis] == 0) shape_error("ArgMax/ArgMin over an empty axis");
        Shape out;
        for (size_t d = 0; d < in[0].size(); ++d) {
            if (d != axis) out.push_back(in[0][d]);
            else if (keepdims_) out.push_back(1);
        }
        return {out};
    }
    bool takes_dtype(size_t, DType t) const override { return t != DType::Bool; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (in[0] == DType::Bool) dtype_error(0, in[0], "a number type");
        return {DType::Int64};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "ArgMax/ArgMin"));
        int64_t outer = 1, inner = 1;
        for (size_t d = 0; d < axis; ++d) outer *= s[d];
        for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
        const int64_t n = s[axis];
        int64_t* y = out[0]->as<int64_t>();
        dispatch_dtype(in[0]->dtype, [&](auto tag) {
            using T = decltype(tag);
            const T* x = in[0]->as<T>();
            for (int64_t o = 0; o < outer; ++o) {
                for (int64_t i = 0; i < inner; ++i) {
                    const T* p = x + o * n * inner + i;
                    int64_t best = 0;
                    for (int64_t k = 1; k < n; ++k) {
                        const T v = p[k * inner], b = p[best * inner];
                        const bool better = max_ ? (last_ ? v >= b : v > b) : (last_ ? v <= b : v < b);
                        if (better) best = k;
                    }
                    y[o * inner + i] = best;
                }
            }
        });
    }

private:
    bool max_;
    int64_t axis_;
    bool keepdims_, last_;
};

// Gather(data, indices) along `axis`: out = data[:axis] + indices.shape + data[axis+1:].
class GatherOp : public Op {
public:
    explicit GatherOp(const Attrs& a) : axis_(a.get_int("axis", 0)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, in[0].size(), "Gather"));
        Shape out(in[0].begin(), in[0].begin() + static_cast<long>(axis));
        out.insert(out.end(), in[1].begin(), in[1].end());
        out.insert(out.end(), in[0].begin() + static_cast<long>(axis) + 1, in[0].end());
        if (out.size() > kMaxRank) shape_error(str("Gather output has rank above ", kMaxRank));
        return {out};
    }
    bool takes_dtype(size_t i, DType t) const override { return i == 0 || is_index_dtype(t); }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (!is_index_dtype(in[1])) dtype_error(1, in[1], "int32 or int64");
        return {in[0]};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "Gather"));
        int64_t outer = 1, inner = 1;
        for (size_t d = 0; d < axis; ++d) outer *= s[d];
        for (size_t d = axis + 1; d < s.size(); ++d) inner *= s[d];
        const int64_t dim = s[axis], n_idx = in[1]->numel();
        const size_t row = static_cast<size_t>(inner) * in[0]->itemsize();
        const char* x = static_cast<const char*>(in[0]->data);
        char* y = static_cast<char*>(out[0]->data);
        for (int64_t k = 0; k < n_idx; ++k) {
            const int64_t j = wrap_index(index_at(*in[1], k), dim, "Gather");
            for (int64_t o = 0; o < outer; ++o) {
                std::memcpy(y + static_cast<size_t>(o * n_idx + k) * row, x + static_cast<size_t>(o * dim + j) * row, row);
            }
        }
    }

private:
    int64_t axis_;
};

// GatherElements(data, indices): out[i] = data[i with i[axis] = indices[i]]; out has indices' shape.
class GatherElementsOp : public Op {
public:
    explicit GatherElementsOp(const Attrs& a) : axis_(a.get_int("axis", 0)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        if (in[0].size() != in[1].size()) shape_error("GatherElements data and indices differ in rank");
        normalize_axis(axis_, in[0].size(), "GatherElements");
        return {in[1]};
    }
    bool takes_dtype(size_t i, DType t) const override { return i == 0 || is_index_dtype(t); }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (!is_index_dtype(in[1])) dtype_error(1, in[1], "int32 or int64");
        return {in[0]};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& ds = in[0]->shape;
        const Shape& is = in[1]->shape;
        const size_t r = ds.size();
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, r, "GatherElements"));
        std::vector<int64_t> dstride(r, 1);
        for (size_t d = r; d-- > 1;) dstride[d - 1] = dstride[d] * ds[d];
        const size_t elem = in[0]->itemsize();
        const char* x = static_cast<const char*>(in[0]->data);
        char* y = static_cast<char*>(out[0]->data);
        std::vector<int64_t> idx(r, 0);
        const int64_t n = shape_numel(is);
        for (int64_t e = 0; e < n; ++e) {
            int64_t off = 0;
            for (size_t d = 0; d < r; ++d) {
                if (d != axis && idx[d] >= ds[d]) throw InvalidArgument("GatherElements indices exceed the data's shape");
                off += (d == axis ? wrap_index(index_at(*in[1], e), ds[d], "GatherElements") : idx[d]) * dstride[d];
            }
            std::memcpy(y + static_cast<size_t>(e) * elem, x + static_cast<size_t>(off) * elem, elem);
            for (size_t d = r; d-- > 0;) {
                if (++idx[d] < is[d]) break;
                idx[d] = 0;
            }
        }
    }

private:
    int64_t axis_;
};

// Scatter(data, indices, updates): a copy of data with the updates written (or combined by
// `reduction`) at the places the indices name, ONNX's ScatterElements (`nd` false: indices and
// updates of one shape, the index replacing the position along `axis`) and ScatterND (`nd`
// true: each index row [.., k] names a slice data[i0..ik-1] of shape data.shape[k:]). Updates
// are applied in order, so a repeated index without reduction keeps the last one, as ONNX's
// reference. An index out of range is an InvalidArgument naming it.
enum class Reduction { None, Add, Mul, Max, Min };

class ScatterOp : public Op {
public:
    explicit ScatterOp(const Attrs& a)
        : nd_(a.get_bool("nd", false)), axis_(nd_ ? 0 : a.get_int("axis", 0)) {
        static const std::map<std::string, Reduction> kinds = {{"none", Reduction::None}, {"add", Reduction::Add},
                                                               {"mul", Reduction::Mul}, {"max", Reduction::Max},
                                                               {"min", Reduction::Min}};
        reduction_ = kinds.at(a.get_string("reduction", "none", {"none", "add", "mul", "max", "min"}));
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& d = in[0];
        const Shape& i = in[1];
        const Shape& u = in[2];
        if (!nd_) {
            if (i.size() != d.size() || u != i) {
                shape_error(str("ScatterElements indices ", shape_str(i), " and updates ", shape_str(u),
                                " must have one shape of data's rank ", d.size()));
            }
            normalize_axis(axis_, d.size(), "ScatterElements");
            for (size_t k = 0; k < d.size(); ++k) {
                if (static_cast<int64_t>(k) != normalize_axis(axis_, d.size(), "ScatterElements") && i[k] > d[k]) {
                    shape_error(str("ScatterElements indices ", shape_str(i), " exceed data ", shape_str(d)));
                }
            }
            return {d};
        }
        if (i.empty() || i.back() < 1 || i.back() > static_cast<int64_t>(d.size())) {
            shape_error(str("ScatterND indices ", shape_str(i), " must end in 1..", d.size(), " (data ", shape_str(d), ")"));
        }
        Shape want(i.begin(), i.end() - 1);
        want.insert(want.end(), d.begin() + static_cast<std::ptrdiff_t>(i.back()), d.end());
        if (u != want) shape_error(str("ScatterND updates ", shape_str(u), " must be ", shape_str(want)));
        return {d};
    }
    bool takes_dtype(size_t i, DType t) const override { return i != 1 || is_index_dtype(t); }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (!is_index_dtype(in[1])) dtype_error(1, in[1], "int32 or int64");
        if (in[2] != in[0]) dtype_error(2, in[2], str(dtype_name(in[0]), " (data's dtype)"));
        if (reduction_ != Reduction::None && in[0] == DType::Bool) dtype_error(0, in[0], "a number type");
        return {in[0]};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        std::memcpy(out[0]->data, in[0]->data, in[0]->nbytes());
        dispatch_dtype(in[0]->dtype, [&](auto tag) {
            using T = decltype(tag);
            if constexpr (!std::is_same_v<T, bool>) {
                scatter<T>(*in[1], *in[2], out[0]);
            } else {
                scatter<uint8_t>(*in[1], *in[2], out[0]);  // bools: assignment only (infer_dtypes)
            }
        });
    }

private:
    template <class T>
    void combine(T* dst, T v) const {
        switch (reduction_) {
            case Reduction::None: *dst = v; break;
            case Reduction::Add: *dst = static_cast<T>(*dst + v); break;
            case Reduction::Mul: *dst = static_cast<T>(*dst * v); break;
            case Reduction::Max: *dst = std::max(*dst, v); break;
            case Reduction::Min: *dst = std::min(*dst, v); break;
        }
    }

    template <class T>
    void scatter(const Tensor& indices, const Tensor& updates, Tensor* out) const {
        const Shape& ds = out->shape;
        const size_t r = ds.size();
        std::vector<int64_t> stride(r, 1);
        for (size_t d = r; d-- > 1;) stride[d - 1] = stride[d] * ds[d];
        T* y = static_cast<T*>(out->data);
        const T* u = static_cast<const T*>(updates.data);
        const char* op = nd_ ? "ScatterND" : "ScatterElements";
        if (nd_) {
            const int64_t k = indices.shape.back();
            const int64_t rows = indices.numel() / k;
            const int64_t slice = stride[static_cast<size_t>(k - 1)];
            for (int64_t row = 0; row < rows; ++row) {
                int64_t off = 0;
                for (int64_t j = 0; j < k; ++j) {
                    off += wrap_index(index_at(indices, row * k + j), ds[static_cast<size_t>(j)], op) * stride[static_cast<size_t>(j)];
                }
                for (int64_t e = 0; e < slice; ++e) combine(y + off + e, u[row * slice + e]);
            }
            return;
        }
        const Shape& is = indices.shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, r, op));
        std::vector<int64_t> idx(r, 0);
        const int64_t n = shape_numel(is);
        for (int64_t e = 0; e < n; ++e) {
            int64_t off = 0;
            for (size_t d = 0; d < r; ++d) off += (d == axis ? wrap_index(index_at(indices, e), ds[d], op) : idx[d]) * stride[d];
            combine(y + off, u[e]);
            for (size_t d = r; d-- > 0;) {
                if (++idx[d] < is[d]) break;
                idx[d] = 0;
            }
        }
    }

    bool nd_;
    int64_t axis_;
    Reduction reduction_ = Reduction::None;
};

// Cumulative(x, axis): ONNX's CumSum / CumProd (`kind` sum | prod) along the axis a one-element
// int32/int64 input gives (read per run; negative counts from the end), `exclusive` (the
// running value before each element) and `reverse` (from the end); any number type, summed in it.
class CumulativeOp : public Op {
public:
    explicit CumulativeOp(const Attrs& a)
        : product_(a.get_string("kind", "sum", {"sum", "prod"}) == "prod"),
          exclusive_(a.get_bool("exclusive", false)),
          reverse_(a.get_bool("reverse", false)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        if (in[0].empty()) shape_error("Cumulative takes a tensor of rank 1 or more");
        if (shape_numel(in[1]) != 1) shape_error(str("Cumulative axis must be one integer, got shape ", shape_str(in[1])));
        return {in[0]};
    }
    bool takes_dtype(size_t i, DType t) const override { return i == 0 ? t != DType::Bool : is_index_dtype(t); }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (in[0] == DType::Bool) dtype_error(0, in[0], "a number type");
        if (!is_index_dtype(in[1])) dtype_error(1, in[1], "int32 or int64");
        return {in[0]};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        const size_t axis = static_cast<size_t>(normalize_axis(index_at(*in[1], 0), s.size(), "Cumulative"));
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < axis; ++i) outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
        const int64_t n = s[axis];
        dispatch_dtype(in[0]->dtype, [&](auto tag) {
            using T = decltype(tag);
            if constexpr (!std::is_same_v<T, bool>) {
                const T* x = in[0]->as<T>();
                T* y = out[0]->as<T>();
                for (int64_t o = 0; o < outer; ++o) {
                    for (int64_t j = 0; j < inner; ++j) {
                        T acc = product_ ? T(1) : T(0);
                        for (int64_t step = 0; step < n; ++step) {
                            const int64_t k = reverse_ ? n - 1 - step : step;
                            const int64_t at = (o * n + k) * inner + j;
                            const T v = x[at];
                            if (exclusive_) y[at] = acc;
                            acc = product_ ? static_cast<T>(acc * v) : static_cast<T>(acc + v);
                            if (!exclusive_) y[at] = acc;
                        }
                    }
                }
            }
        });
    }

private:
    bool product_, exclusive_, reverse_;
};

// Trilu(x[, k]): the upper (or lower) triangle of the last two dimensions from diagonal k (a
// scalar int64 input read once per run), zeros elsewhere.
class TriluOp : public Op {
public:
    explicit TriluOp(const Attrs& a) : upper_(a.get_bool("upper", true)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        if (in[0].size() < 2) shape_error("Trilu takes a tensor of rank 2 or more");
        if (in.size() > 1 && shape_numel(in[1]) != 1) shape_error("Trilu's k must be a scalar");
        return {in[0]};
    }
    bool takes_dtype(size_t i, DType t) const override { return i == 0 || t == DType::Int64; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (in.size() > 1 && in[1] != DType::Int64) dtype_error(1, in[1], "int64");
        return {in[0]};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const int64_t k = in.size() > 1 ? in[1]->as<int64_t>()[0] : 0;
        const Shape& s = in[0]->shape;
        const int64_t rows = s[s.size() - 2], cols = s[s.size() - 1];
        const int64_t mats = rows * cols == 0 ? 0 : in[0]->numel() / (rows * cols);
        const size_t elem = in[0]->itemsize();
        const char* x = static_cast<const char*>(in[0]->data);
        char* y = static_cast<char*>(out[0]->data);
        for (int64_t m = 0; m < mats; ++m) {
            for (int64_t i = 0; i < rows; ++i) {
                for (int64_t j = 0; j < cols; ++j) {
                    const size_t at = static_cast<size_t>((m * rows + i) * cols + j) * elem;
                    const bool keep = upper_ ? j - i >= k : j - i <= k;
                    if (keep) std::memcpy(y + at, x + at, elem);
                    else std::memset(y + at, 0, elem);
                }
            }
        }
    }

private:
    bool upper_;
};

}  // namespace

std::unique_ptr<Op> make_BitCast(const Attrs& a) { return std::make_unique<BitCastOp>(a); }
std::unique_ptr<Op> make_Scatter(const Attrs& a) { return std::make_unique<ScatterOp>(a); }
std::unique_ptr<Op> make_Cumulative(const Attrs& a) { return std::make_unique<CumulativeOp>(a); }
std::unique_ptr<Op> make_Cast(const Attrs& a) { return std::make_unique<CastOp>(a); }
std::unique_ptr<Op> make_Compare(const Attrs& a) { return std::make_unique<CompareOp>(a); }
std::unique_ptr<Op> make_Logic(const Attrs& a) { return std::make_unique<LogicOp>(a); }
std::unique_ptr<Op> make_Classify(const Attrs& a) { return std::make_unique<ClassifyOp>(a); }
std::unique_ptr<Op> make_ArgReduce(const Attrs& a) { return std::make_unique<ArgReduceOp>(a); }
std::unique_ptr<Op> make_Gather(const Attrs& a) { return std::make_unique<GatherOp>(a); }
std::unique_ptr<Op> make_GatherElements(const Attrs& a) { return std::make_unique<GatherElementsOp>(a); }
std::unique_ptr<Op> make_Trilu(const Attrs& a) { return std::make_unique<TriluOp>(a); }

}  // namespace pyengine
