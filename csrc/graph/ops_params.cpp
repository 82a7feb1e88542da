// SPDX-License-Identifier: Apache-2.0
// Shape and data-movement ops whose parameters are tensors that may arrive at run time
// (docs/format.md "Parameter inputs"): Unsqueeze, Expand, Tile, ConstantOfShape, Range, Split,
// TopK; and Shape, which computes such parameters from a shape. Each reads its parameter inputs by value (Op::reads_value): the planner gives them to
// infer_values, and run reads the same few numbers again. Host-only, any dtype where ONNX allows.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "common.h"
#include "graph/broadcast.h"
#include "graph/dtype_dispatch.h"
#include "graph/op.h"

namespace pyengine {

// Copies `out`'s elements (elem bytes each) from `src`: output element at index i reads
// src[offset + Σ i[d] · strides[d]] (strides in elements; 0 repeats, negative walks back).
void copy_strided(const void* src, size_t elem, const Shape& out, int64_t offset, const std::vector<int64_t>& strides,
                  void* dst) {
    const char* s = static_cast<const char*>(src) + offset * static_cast<int64_t>(elem);
    char* d = static_cast<char*>(dst);
    for_each_broadcast_n(out, {strides}, [&](int64_t e, const int64_t* off) {
        std::memcpy(d + e * static_cast<int64_t>(elem), s + off[0] * static_cast<int64_t>(elem), elem);
    });
}

// Row-major element strides of `s`.
std::vector<int64_t> row_strides(const Shape& s) {
    std::vector<int64_t> st(s.size(), 1);
    for (size_t d = s.size(); d-- > 1;) st[d - 1] = st[d] * s[d];
    return st;
}

std::vector<DType> dtype_of_input0(const std::vector<DType>& in, const std::vector<size_t>& int_params) {
    for (size_t i : int_params) {
        if (i < in.size() && in[i] != DType::Int64 && in[i] != DType::Int32) dtype_error(i, in[i], "int32 or int64");
    }
    return {in[0]};
}

namespace {

// A dimension a parameter asks for: >= 0 and small enough that products cannot overflow.
int64_t checked_dim(int64_t d, const std::string& what) {
    if (d < 0 || d > (int64_t(1) << 31)) shape_error(str(what, " ", d, " is not a size (0 .. 2^31)"));
    return d;
}

// ONNX Unsqueeze: size-1 dimensions inserted at `axes` (attribute, or input 1 read by value);
// negative axes count from the end of the output.
class UnsqueezeOp : public Op {
public:
    explicit UnsqueezeOp(const Attrs& a) : axes_(a.get_ints("axes", -1, {}, -int64_t(kMaxRank))) {}
    bool reads_value(size_t i) const override { return i == 1; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return dtype_of_input0(in, {1}); }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return infer_values(in, {nullptr}); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        const std::vector<int64_t> axes = v.size() > 1 ? param_ints(*v[1], "Unsqueeze axes (input 1)", kMaxRank) : axes_;
        const size_t rank = in[0].size() + axes.size();
        if (rank > kMaxRank) shape_error(str("Unsqueeze to rank ", rank, " exceeds ", kMaxRank));
        std::vector<bool> added(rank, false);
        for (int64_t a : axes) {
            const size_t i = static_cast<size_t>(normalize_axis(a, rank, "Unsqueeze"));
            if (added[i]) shape_error(str("Unsqueeze axis ", a, " repeats"));
            added[i] = true;
        }
        Shape out;
        size_t k = 0;
        for (size_t i = 0; i < rank; ++i) out.push_back(added[i] ? 1 : in[0][k++]);
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (out[0]->data != in[0]->data) std::memcpy(out[0]->data, in[0]->data, in[0]->nbytes());
    }
    bool is_view() const override { return true; }

private:
    std::vector<int64_t> axes_;
};

// ONNX Expand: x broadcast (numpy's rules) with `shape` (input 1, read by value).
class ExpandOp : public Op {
public:
    explicit ExpandOp(const Attrs&) {}
    bool reads_value(size_t i) const override { return i == 1; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return dtype_of_input0(in, {1}); }
    std::vector<Shape> infer(const std::vector<Shape>&) const override { shape_error("Expand needs its shape input"); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        Shape target = param_ints(*v[1], "Expand shape (input 1)", kMaxRank);
        for (int64_t d : target) checked_dim(d, "Expand shape entry");
        return {broadcast_shape(in[0], target)};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        copy_strided(in[0]->data, in[0]->itemsize(), out[0]->shape, 0, broadcast_strides(in[0]->shape, out[0]->shape),
                     out[0]->data);
    }
};

// ONNX Tile: x repeated `repeats[d]` times along each axis (input 1, read by value).
class TileOp : public Op {
public:
    explicit TileOp(const Attrs&) {}
    bool reads_value(size_t i) const override { return i == 1; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return dtype_of_input0(in, {1}); }
    std::vector<int64_t> repeats(const Shape& x, const Tensor& t) const {
        std::vector<int64_t> r = param_ints(t, "Tile repeats (input 1)", kMaxRank);
        if (r.size() != x.size()) shape_error(str("Tile has ", r.size(), " repeats for an input of rank ", x.size()));
        for (int64_t n : r) checked_dim(n, "Tile repeat");
        return r;
    }
    std::vector<Shape> infer(const std::vector<Shape>&) const override { shape_error("Tile needs its repeats input"); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        const std::vector<int64_t> r = repeats(in[0], *v[1]);
        Shape out = in[0];
        for (size_t d = 0; d < out.size(); ++d) out[d] *= r[d];
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        // The output as [r0, d0, r1, d1, ...]: the repeat axes have stride 0.
        const Shape& x = in[0]->shape;
        const std::vector<int64_t> r = repeats(x, *in[1]), st = row_strides(x);
        Shape split;
        std::vector<int64_t> strides;
        for (size_t d = 0; d < x.size(); ++d) {
            split.insert(split.end(), {r[d], x[d]});
            strides.insert(strides.end(), {0, st[d]});
        }
        copy_strided(in[0]->data, in[0]->itemsize(), split, 0, strides, out[0]->data);
    }
};

// ONNX ConstantOfShape: a tensor of `shape` (input 0, read by value) filled with `value` (a
// number) of dtype `dtype`.
class ConstantOfShapeOp : public Op {
public:
    explicit ConstantOfShapeOp(const Attrs& a) : value_(a.get_float("value", 0.0f)) {
        const std::string name = a.get_string("dtype", "float32", dtype_names());
        dtype_from_name(name, &dtype_);
    }
    bool reads_value(size_t i) const override { return i == 0; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (in[0] != DType::Int64 && in[0] != DType::Int32) dtype_error(0, in[0], "int32 or int64");
        return {dtype_};
    }
    std::vector<Shape> infer(const std::vector<Shape>&) const override { shape_error("ConstantOfShape needs its shape input"); }
    std::vector<Shape> infer_values(const std::vector<Shape>&, const std::vector<const Tensor*>& v) const override {
        Shape out = param_ints(*v[0], "ConstantOfShape shape (input 0)", kMaxRank);
        for (int64_t d : out) checked_dim(d, "ConstantOfShape shape entry");
        return {out};
    }
    void run(const std::vector<const Tensor*>&, const std::vector<Tensor*>& out) const override {
        fill(out[0], value_);
    }
    // Every element of `t` set to `v` in t's dtype.
    static void fill(Tensor* t, double v) {
        const int64_t n = t->numel();
        switch (t->dtype) {
            case DType::Float32: std::fill_n(t->f32(), n, static_cast<float>(v)); break;
            case DType::Float64: std::fill_n(t->as<double>(), n, v); break;
            case DType::Int8: std::fill_n(t->as<int8_t>(), n, static_cast<int8_t>(v)); break;
            case DType::Int16: std::fill_n(t->as<int16_t>(), n, static_cast<int16_t>(v)); break;
            case DType::Int32: std::fill_n(t->as<int32_t>(), n, static_cast<int32_t>(v)); break;
            case DType::Int64: std::fill_n(t->as<int64_t>(), n, static_cast<int64_t>(v)); break;
            case DType::UInt8: std::fill_n(t->as<uint8_t>(), n, static_cast<uint8_t>(v)); break;
            case DType::UInt16: std::fill_n(t->as<uint16_t>(), n, static_cast<uint16_t>(v)); break;
            case DType::UInt32: std::fill_n(t->as<uint32_t>(), n, static_cast<uint32_t>(v)); break;
            case DType::UInt64: std::fill_n(t->as<uint64_t>(), n, static_cast<uint64_t>(v)); break;
            case DType::Bool: std::fill_n(t->as<uint8_t>(), n, static_cast<uint8_t>(v != 0.0)); break;
        }
    }

private:
    double value_;
    DType dtype_ = DType::Float32;
};

// ONNX Range: start, start + delta, ... below limit (above it for a negative delta); the three
// scalars are read by value (they decide the length). float32/64, int32/64.
class RangeOp : public Op {
public:
    explicit RangeOp(const Attrs&) {}
    bool reads_value(size_t) const override { return true; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        for (size_t i = 0; i < 3; ++i) {
            if (in[i] != in[0]) dtype_error(i, in[i], str(dtype_name(in[0]), " (input 0's dtype)"));
        }
        if (in[0] != DType::Float32 && in[0] != DType::Float64 && in[0] != DType::Int32 && in[0] != DType::Int64) {
            dtype_error(0, in[0], "float32, float64, int32 or int64");
        }
        return {in[0]};
    }
    static double scalar(const Tensor& t, const char* what) {
        if (t.numel() != 1) shape_error(str("Range ", what, " must hold one number, got shape ", shape_str(t.shape)));
        if (t.dtype == DType::Int64) return static_cast<double>(t.as<const int64_t>()[0]);
        if (t.dtype == DType::Int32) return t.as<const int32_t>()[0];
        return param_floats(Tensor{t.data, t.dtype, {1}}, str("Range ", what), 1)[0];
    }
    std::vector<Shape> infer(const std::vector<Shape>&) const override { shape_error("Range needs its inputs' values"); }
    std::vector<Shape> infer_values(const std::vector<Shape>&, const std::vector<const Tensor*>& v) const override {
        const double start = scalar(*v[0], "start"), limit = scalar(*v[1], "limit"), delta = scalar(*v[2], "delta");
        if (delta == 0.0 || !std::isfinite(start) || !std::isfinite(limit) || !std::isfinite(delta)) {
            shape_error(str("Range needs finite bounds and a nonzero delta, got start ", start, ", limit ", limit, ", delta ", delta));
        }
        return {{checked_dim(static_cast<int64_t>(std::max(std::ceil((limit - start) / delta), 0.0)), "Range length")}};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Tensor& y = *out[0];
        const int64_t n = y.numel();
        // As ONNX's reference: start + i · delta in the inputs' own type.
        switch (y.dtype) {
            case DType::Int64: {
                const int64_t s = in[0]->as<const int64_t>()[0], d = in[2]->as<const int64_t>()[0];
                for (int64_t i = 0; i < n; ++i) y.as<int64_t>()[i] = s + i * d;
                break;
            }
            case DType::Int32: {
                const int32_t s = in[0]->as<const int32_t>()[0], d = in[2]->as<const int32_t>()[0];
                for (int64_t i = 0; i < n; ++i) y.as<int32_t>()[i] = static_cast<int32_t>(s + i * d);
                break;
            }
            case DType::Float64: {
                const double s = in[0]->as<const double>()[0], d = in[2]->as<const double>()[0];
                for (int64_t i = 0; i < n; ++i) y.as<double>()[i] = s + static_cast<double>(i) * d;
                break;
            }
            default: {
                const float s = in[0]->f32()[0], d = in[2]->f32()[0];
                for (int64_t i = 0; i < n; ++i) y.f32()[i] = s + static_cast<float>(i) * d;
                break;
            }
        }
    }
};

// Piece `index` of ONNX Split into `parts` pieces along `axis` (one node per piece: the graph's
// nodes have one output): sizes from input 1 (read by value), else the `split` attribute, else
// equal parts (the last one smaller when the axis does not divide).
class SplitOp : public Op {
public:
    explicit SplitOp(const Attrs& a)
        : axis_(a.get_int("axis", 0)), split_(a.get_ints("split", -1, {}, 0)),
          parts_(a.get_int("parts", 0)), index_(a.get_int_required("index")) {
        if (parts_ < 0 || parts_ > 64) a.fail(str("attribute 'parts' must be 1 .. 64, got ", parts_));
        if (index_ < 0) a.fail(str("attribute 'index' must be >= 0, got ", index_));
    }
    bool reads_value(size_t i) const override { return i == 1; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return dtype_of_input0(in, {1}); }
    // {start, size} of this piece on the axis.
    std::pair<int64_t, int64_t> piece(const Shape& x, const Tensor* split) const {
        const int64_t d = x[static_cast<size_t>(normalize_axis(axis_, x.size(), "Split"))];
        std::vector<int64_t> s = split != nullptr ? param_ints(*split, "Split split (input 1)", 64) : split_;
        if (s.empty()) {
            if (parts_ == 0) shape_error("Split needs sizes (attribute 'split' or input 1) or attribute 'parts'");
            const int64_t part = (d + parts_ - 1) / parts_;
            for (int64_t i = 0; i < parts_; ++i) s.push_back(std::max<int64_t>(std::min(part, d - i * part), 0));
        }
        if (static_cast<int64_t>(s.size()) <= index_) shape_error(str("Split has ", s.size(), " sizes; this is piece ", index_));
        int64_t total = 0, start = 0;
        for (size_t i = 0; i < s.size(); ++i) {
            if (static_cast<int64_t>(i) == index_) start = total;
            total += checked_dim(s[i], "Split size");
        }
        if (total != d) shape_error(str("Split sizes ", shape_str(s), " add up to ", total, ", not the axis' ", d));
        return {start, s[static_cast<size_t>(index_)]};
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return infer_values(in, {nullptr}); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        Shape out = in[0];
        out[static_cast<size_t>(normalize_axis(axis_, out.size(), "Split"))] = piece(in[0], v.size() > 1 ? v[1] : nullptr).second;
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& x = in[0]->shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, x.size(), "Split"));
        const int64_t start = piece(x, in.size() > 1 ? in[1] : nullptr).first, n = out[0]->shape[axis];
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < axis; ++i) outer *= x[i];
        for (size_t i = axis + 1; i < x.size(); ++i) inner *= x[i];
        const size_t elem = in[0]->itemsize(), row = static_cast<size_t>(n * inner) * elem;
        const char* src = static_cast<const char*>(in[0]->data);
        for (int64_t o = 0; o < outer; ++o) {
            std::memcpy(static_cast<char*>(out[0]->data) + static_cast<size_t>(o) * row,
                        src + static_cast<size_t>((o * x[axis] + start) * inner) * elem, row);
        }
    }

private:
    int64_t axis_;
    std::vector<int64_t> split_;
    int64_t parts_, index_;
};

// ONNX TopK: the k (input 1, read by value) largest (or smallest) elements of any number type
// along `axis` (`output` values), or their int64 indices (`output` indices), sorted; ties keep the lower index
// first, as ONNX's reference. One node per output: the graph's nodes have one output.
class TopKOp : public Op {
public:
    explicit TopKOp(const Attrs& a)
        : axis_(a.get_int("axis", -1)), largest_(a.get_bool("largest", true)),
          indices_(a.get_string("output", "values", {"values", "indices"}) == "indices") {
        a.get_bool("sorted", true);  // false leaves the order open: sorted output is one of them
    }
    bool reads_value(size_t i) const override { return i == 1; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (in[0] == DType::Bool) dtype_error(0, in[0], "a number type");
        if (in[1] != DType::Int64) dtype_error(1, in[1], "int64");
        return {indices_ ? DType::Int64 : in[0]};
    }
    std::vector<Shape> infer(const std::vector<Shape>&) const override { shape_error("TopK needs its k input"); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        const std::vector<int64_t> k = param_ints(*v[1], "TopK k (input 1)", 1);
        Shape out = in[0];
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, out.size(), "TopK"));
        if (k.size() != 1 || k[0] < 0 || k[0] > out[axis]) {
            shape_error(str("TopK k must be one number in 0 .. ", out[axis], " (the axis' size), got ", shape_str(k)));
        }
        out[axis] = k[0];
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        dispatch_dtype(in[0]->dtype, [&](auto zero) { top_k<decltype(zero)>(*in[0], out[0]); });
    }
    template <class T>
    void top_k(const Tensor& xt, Tensor* y) const {
        const Shape& x = xt.shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, x.size(), "TopK"));
        const int64_t n = x[axis], k = y->shape[axis];
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < axis; ++i) outer *= x[i];
        for (size_t i = axis + 1; i < x.size(); ++i) inner *= x[i];
        const T* src = xt.as<const T>();
        std::vector<int64_t> idx(static_cast<size_t>(n));
        for (int64_t o = 0; o < outer; ++o) {
            for (int64_t j = 0; j < inner; ++j) {
                const T* row = src + o * n * inner + j;
                std::iota(idx.begin(), idx.end(), int64_t(0));
                auto before = [&](int64_t a, int64_t b) {
                    const T va = row[a * inner], vb = row[b * inner];
                    if (va != vb) return largest_ ? va > vb : va < vb;
                    return a < b;
                };
                std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(), before);
                for (int64_t i = 0; i < k; ++i) {
                    const int64_t at = (o * k + i) * inner + j;
                    if (indices_) y->as<int64_t>()[at] = idx[static_cast<size_t>(i)];
                    else y->as<T>()[at] = row[idx[static_cast<size_t>(i)] * inner];
                }
            }
        }
    }

private:
    int64_t axis_;
    bool largest_, indices_;
};

// ONNX Shape: dimensions [start, end) of the input (negative bounds count from the end, both
// clamped), as int64. It reads only the input's shape, so a parameter computed from it needs no
// input data when planning.
class ShapeOp : public Op {
public:
    explicit ShapeOp(const Attrs& a)
        : start_(a.get_int("start", 0)), end_(a.get_int("end", std::numeric_limits<int64_t>::max())) {}
    bool reads_data(size_t) const override { return false; }
    std::vector<DType> infer_dtypes(const std::vector<DType>&, size_t) const override { return {DType::Int64}; }
    std::pair<int64_t, int64_t> range(size_t rank) const {
        const int64_t r = static_cast<int64_t>(rank);
        auto clamp = [r](int64_t i) { return std::clamp<int64_t>(i < 0 ? std::max(i, -r) + r : i, 0, r); };
        return {clamp(start_), std::max(clamp(start_), clamp(end_))};
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const auto r = range(in[0].size());
        return {{r.second - r.first}};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const auto r = range(in[0]->shape.size());
        for (int64_t i = r.first; i < r.second; ++i) out[0]->as<int64_t>()[i - r.first] = in[0]->shape[static_cast<size_t>(i)];
    }

private:
    int64_t start_, end_;
};

}  // namespace

std::unique_ptr<Op> make_Shape(const Attrs& a) { return std::make_unique<ShapeOp>(a); }
std::unique_ptr<Op> make_Unsqueeze(const Attrs& a) { return std::make_unique<UnsqueezeOp>(a); }
std::unique_ptr<Op> make_Expand(const Attrs& a) { return std::make_unique<ExpandOp>(a); }
std::unique_ptr<Op> make_Tile(const Attrs& a) { return std::make_unique<TileOp>(a); }
std::unique_ptr<Op> make_ConstantOfShape(const Attrs& a) { return std::make_unique<ConstantOfShapeOp>(a); }
std::unique_ptr<Op> make_Range(const Attrs& a) { return std::make_unique<RangeOp>(a); }
std::unique_ptr<Op> make_Split(const Attrs& a) { return std::make_unique<SplitOp>(a); }
std::unique_ptr<Op> make_TopK(const Attrs& a) { return std::make_unique<TopKOp>(a); }

}  // namespace pyengine
