// SPDX-License-Identifier: Apache-2.0
// Shape and data-movement ops: Flatten, Reshape, Transpose, Squeeze, Slice, Concat, Pad, Mean,
// Identity. Reshape, Squeeze, Slice and Pad also take their parameters as inputs read by value
// (Op::reads_value); the ops that only exist in that form live in ops_params.cpp.
#include <algorithm>
#include <cstring>

#include "common.h"
#include "graph/dtype_dispatch.h"
#include "graph/op.h"
#include "kernels/bytes.h"
#include "kernels/transform.h"

namespace pyengine {

namespace {

// Data movement that takes any element type: the output has input 0's dtype.
std::vector<DType> same_dtype(const std::vector<DType>& in) {
    for (size_t i = 1; i < in.size(); ++i) {
        if (in[i] != in[0]) dtype_error(i, in[i], str(dtype_name(in[0]), " (input 0's dtype)"));
    }
    return {in[0]};
}

// Ops whose output holds the input's bytes unchanged, under another shape.
class ViewOp : public Op {
public:
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return same_dtype(in); }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (out[0]->data != in[0]->data) std::memcpy(out[0]->data, in[0]->data, in[0]->nbytes());
    }
    bool is_view() const override { return true; }
    bool lower(const std::vector<Shape>&, DeviceStep* s) const override {
        s->kind = DeviceStep::Copy;  // a Nop when the executor's layout shares the memory
        return true;
    }
};

class FlattenOp : public ViewOp {
public:
    explicit FlattenOp(const Attrs& a) : axis_(a.get_int("axis", 1)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& x = in[0];
        const int64_t rank = static_cast<int64_t>(x.size());
        // axis may equal the rank (everything in the first dimension) or count from the end,
        // as in ONNX.
        if (axis_ < -rank || axis_ > rank) {
            shape_error(str("Flatten axis ", axis_, " is out of range for rank ", x.size()));
        }
        const int64_t axis = axis_ < 0 ? axis_ + rank : axis_;
        int64_t a = 1, b = 1;
        for (size_t i = 0; i < x.size(); ++i) (static_cast<int64_t>(i) < axis ? a : b) *= x[i];
        return {{a, b}};
    }

private:
    int64_t axis_;
};

// The target shape from the `shape` attribute, or from input 1 (read by value; ONNX opset 5+).
class ReshapeOp : public ViewOp {
public:
    explicit ReshapeOp(const Attrs& a)
        : shape_(a.get_ints("shape", -1, {}, -1)), has_shape_(a.has("shape")), allowzero_(a.get_bool("allowzero", false)) {
        if (shape_.size() > kMaxRank) a.fail(str("attribute 'shape' has rank above ", kMaxRank));
        if (std::count(shape_.begin(), shape_.end(), -1) > 1) a.fail("attribute 'shape' has more than one -1");
    }
    bool reads_value(size_t i) const override { return i == 1; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return dtype_of_input0(in, {1}); }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return infer_values(in, {nullptr}); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        const Shape& x = in[0];
        Shape want = shape_;
        if (v.size() > 1 && v[1] != nullptr) {
            want = param_ints(*v[1], "Reshape shape (input 1)", kMaxRank);
            for (int64_t d : want) {
                if (d < -1 || d > (int64_t(1) << 31)) shape_error(str("Reshape shape entry ", d, " is not a size, 0 or -1"));
            }
            if (std::count(want.begin(), want.end(), -1) > 1) shape_error("Reshape shape has more than one -1");
        } else if (!has_shape_) {
            shape_error("Reshape needs attribute 'shape' or a shape input");
        }
        Shape out = want;
        int64_t known = 1, infer_at = -1;
        for (size_t i = 0; i < out.size(); ++i) {
            if (out[i] == 0 && !allowzero_) {  // 0 copies the input dimension (ONNX, MXNet)
                if (i >= x.size()) shape_error(str("Reshape dimension ", i, " is 0 but the input has rank ", x.size()));
                out[i] = x[i];
            }
            if (out[i] == -1) infer_at = static_cast<int64_t>(i);
            else known *= out[i];
        }
        const int64_t total = shape_numel(x);
        if (infer_at >= 0) {
            if (known == 0 || total % known != 0) {
                shape_error(str("cannot reshape ", shape_str(x), " to ", shape_str(want)));
            }
            out[static_cast<size_t>(infer_at)] = total / known;
        } else if (known != total) {
            shape_error(str("cannot reshape ", shape_str(x), " (", total, " elements) to ", shape_str(out)));
        }
        return {out};
    }

private:
    std::vector<int64_t> shape_;
    bool has_shape_, allowzero_;
};

// Drops size-1 dimensions: `axes` (attribute, or input 1 read by value), or all of them.
class SqueezeOp : public ViewOp {
public:
    explicit SqueezeOp(const Attrs& a) : axes_(a.get_ints("axes", -1, {}, -int64_t(kMaxRank))) {}
    bool reads_value(size_t i) const override { return i == 1; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return dtype_of_input0(in, {1}); }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return infer_values(in, {nullptr}); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        const Shape& x = in[0];
        const std::vector<int64_t> axes =
            v.size() > 1 && v[1] != nullptr ? param_ints(*v[1], "Squeeze axes (input 1)", kMaxRank) : axes_;
        std::vector<bool> drop(x.size(), false);
        if (axes.empty()) {
            for (size_t i = 0; i < x.size(); ++i) drop[i] = x[i] == 1;
        }
        for (int64_t a : axes) {
            const size_t i = static_cast<size_t>(normalize_axis(a, x.size(), "Squeeze"));
            if (x[i] != 1) shape_error(str("Squeeze axis ", a, " has size ", x[i], ", not 1"));
            drop[i] = true;
        }
        Shape out;
        for (size_t i = 0; i < x.size(); ++i) if (!drop[i]) out.push_back(x[i]);
        return {out};
    }

private:
    std::vector<int64_t> axes_;
};

class IdentityOp : public ViewOp {
public:
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return {in[0]}; }
};

// Two forms. Attributes `axis`, `start`, `end`: elements [start, end) of one axis, step 1, the
// bounds as in ONNX (negative counts from the end, both clamped to the axis, so a slice past the
// end is shorter, never an error); a layout-pass channel gather and a device Pad can run it.
// Inputs starts, ends[, axes[, steps]] (ONNX opset 10+, read by value): any axes and steps,
// copied through copy_strided.
class SliceOp : public Op {
public:
    explicit SliceOp(const Attrs& a) : one_axis_(a.has("axis")) {
        if (one_axis_) {
            axis_ = a.get_int_required("axis");
            start_ = a.get_int_required("start");
            end_ = a.get_int_required("end");
        }
    }

    bool reads_value(size_t i) const override { return i >= 1; }

    std::pair<int64_t, int64_t> range(const Shape& x) const {
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, x.size(), "Slice"));
        const int64_t d = x[axis];
        auto clamp = [d](int64_t i) { return std::min(std::max(i < 0 ? i + d : i, int64_t(0)), d); };
        const int64_t s = clamp(start_), e = clamp(end_);
        return {s, std::max(s, e)};
    }

    // The input form's output shape, first element and per-axis element strides (ONNX's rules).
    struct Strided {
        Shape out;
        int64_t offset = 0;
        std::vector<int64_t> strides;
    };
    static Strided strided(const Shape& x, const std::vector<const Tensor*>& p) {
        const std::vector<int64_t> starts = param_ints(*p[1], "Slice starts (input 1)", kMaxRank);
        const std::vector<int64_t> ends = param_ints(*p[2], "Slice ends (input 2)", kMaxRank);
        std::vector<int64_t> axes, steps(starts.size(), 1);
        if (p.size() > 3 && p[3] != nullptr) axes = param_ints(*p[3], "Slice axes (input 3)", kMaxRank);
        else for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
        if (p.size() > 4 && p[4] != nullptr) steps = param_ints(*p[4], "Slice steps (input 4)", kMaxRank);
        if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size()) {
            shape_error(str("Slice has ", starts.size(), " starts, ", ends.size(), " ends, ", axes.size(), " axes and ",
                            steps.size(), " steps; they must match"));
        }
        const std::vector<int64_t> xs = row_strides(x);
        Strided r{x, 0, xs};
        std::vector<bool> seen(x.size(), false);
        for (size_t i = 0; i < starts.size(); ++i) {
            const size_t a = static_cast<size_t>(normalize_axis(axes[i], x.size(), "Slice"));
            if (seen[a]) shape_error(str("Slice axis ", axes[i], " repeats"));
            seen[a] = true;
            const int64_t d = x[a];
            if (steps[i] == 0) shape_error(str("Slice step for axis ", axes[i], " is 0"));
            // A step beyond any axis takes one element, as a huge one does (and cannot overflow).
            const int64_t step = std::clamp<int64_t>(steps[i], -(int64_t(1) << 40), int64_t(1) << 40);
            // Bounds saturate (ONNX writes INT64_MAX for "to the end"); negative ones count from the end.
            int64_t s = starts[i] < 0 ? std::max(starts[i], -d) + d : std::min(starts[i], d);
            int64_t e = ends[i] < 0 ? std::max(ends[i], -d - 1) + d : std::min(ends[i], d);
            int64_t n;
            if (step > 0) {
                s = std::clamp<int64_t>(s, 0, d);
                e = std::clamp<int64_t>(e, 0, d);
                n = e > s ? 1 + (e - s - 1) / step : 0;
            } else {
                s = std::clamp<int64_t>(s, 0, d - 1);
                e = std::clamp<int64_t>(e, -1, d - 1);
                n = s > e ? 1 + (s - e - 1) / -step : 0;
            }
            r.out[a] = n;
            r.offset += n > 0 ? s * xs[a] : 0;
            r.strides[a] = xs[a] * step;
        }
        return r;
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return infer_values(in, {nullptr}); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        if (!one_axis_) {
            if (v.size() < 3) shape_error("Slice needs attributes axis, start and end, or inputs starts and ends");
            return {strided(in[0], v).out};
        }
        Shape out = in[0];
        const auto r = range(in[0]);
        out[static_cast<size_t>(normalize_axis(axis_, out.size(), "Slice"))] = r.second - r.first;
        return {out};
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& x = in[0]->shape;
        if (!one_axis_) {
            const Strided r = strided(x, in);
            copy_strided(in[0]->data, in[0]->itemsize(), r.out, r.offset, r.strides, out[0]->data);
            return;
        }
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, x.size(), "Slice"));
        const auto r = range(x);
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < axis; ++i) outer *= x[i];
        for (size_t i = axis + 1; i < x.size(); ++i) inner *= x[i];
        const size_t elem = in[0]->itemsize();
        const size_t row = static_cast<size_t>((r.second - r.first) * inner) * elem;
        const char* src = static_cast<const char*>(in[0]->data);
        char* dst = static_cast<char*>(out[0]->data);
        for (int64_t o = 0; o < outer; ++o) {
            std::memcpy(dst + static_cast<size_t>(o) * row, src + static_cast<size_t>(o * x[axis] + r.first) * inner * elem, row);
        }
    }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        for (size_t i = 1; i < in.size(); ++i) {
            if (in[i] != DType::Int64 && in[i] != DType::Int32) dtype_error(i, in[i], "int32 or int64");
        }
        return {in[0]};
    }

    bool channel_map(const std::vector<Shape>& in, std::vector<std::pair<int, int64_t>>* src) const override {
        if (!one_axis_ || in[0].size() != 4 || normalize_axis(axis_, 4, "Slice") != 1) return false;
        const auto r = range(in[0]);
        src->clear();
        for (int64_t c = r.first; c < r.second; ++c) src->emplace_back(0, c);
        return true;
    }

    // A pad with negative amounts: it crops [start, end) out of the axis.
    bool lower(const std::vector<Shape>& in, DeviceStep* s) const override {
        if (!one_axis_) return false;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, in[0].size(), "Slice"));
        const auto r = range(in[0]);
        s->kind = DeviceStep::Pad;
        s->pad_begin.assign(in[0].size(), 0);
        s->pad_end.assign(in[0].size(), 0);
        s->pad_begin[axis] = -r.first;
        s->pad_end[axis] = -(in[0][axis] - r.second);
        s->pad_mode = PadMode::Constant;
        s->pad_value = 0.0f;
        return true;
    }

private:
    bool one_axis_;
    int64_t axis_ = 0, start_ = 0, end_ = 0;
};

class TransposeOp : public Op {
public:
    explicit TransposeOp(const Attrs& a) : perm_(a.get_ints("perm", -1, {}, 0)) {
        if (!a.has("perm")) a.fail("attribute 'perm' is required");
        std::vector<int64_t> sorted = perm_;
        std::sort(sorted.begin(), sorted.end());
        for (size_t i = 0; i < sorted.size(); ++i) {
            if (sorted[i] != static_cast<int64_t>(i)) a.fail("attribute 'perm' must be a permutation of 0..rank-1");
        }
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        if (in[0].size() != perm_.size()) {
            shape_error(str("Transpose perm has ", perm_.size(), " entries but the input has rank ", in[0].size()));
        }
        Shape out(perm_.size());
        for (size_t i = 0; i < perm_.size(); ++i) out[i] = in[0][static_cast<size_t>(perm_[i])];
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (in[0]->dtype == DType::Float32) {
            transpose(in[0]->f32(), in[0]->shape, perm_, out[0]->f32());
        } else {
            transpose_bytes(in[0]->data, in[0]->itemsize(), in[0]->shape, perm_, out[0]->data);
        }
    }
    const std::vector<int64_t>* permutation() const override { return &perm_; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return same_dtype(in); }
    bool lower(const std::vector<Shape>&, DeviceStep* s) const override {
        s->kind = DeviceStep::Transpose;
        s->perm = perm_;
        return true;
    }

private:
    std::vector<int64_t> perm_;
};

class ConcatOp : public Op {
public:
    explicit ConcatOp(const Attrs& a) : axis_(a.get_int_required("axis")) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, in[0].size(), "Concat"));
        Shape out = in[0];
        for (size_t i = 1; i < in.size(); ++i) {
            bool ok = in[i].size() == out.size();
            for (size_t d = 0; ok && d < out.size(); ++d) ok = d == axis || in[i][d] == out[d];
            if (!ok) shape_error(str("Concat inputs ", shape_str(in[0]), " and ", shape_str(in[i]), " differ outside axis ", axis_));
            out[axis] += in[i][axis];
        }
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "Concat"));
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < axis; ++i) outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
        if (in[0]->dtype != DType::Float32) {
            std::vector<const void*> xs;
            std::vector<int64_t> sizes;
            for (const Tensor* t : in) {
                xs.push_back(t->data);
                sizes.push_back(t->shape[axis]);
            }
            concat_bytes(xs, in[0]->itemsize(), sizes, outer, inner, out[0]->data);
            return;
        }
        std::vector<const float*> xs;
        std::vector<int64_t> sizes;
        for (const Tensor* t : in) {
            xs.push_back(t->f32());
            sizes.push_back(t->shape[axis]);
        }
        concat(xs, sizes, outer, inner, out[0]->f32());
    }
    bool channel_map(const std::vector<Shape>& in, std::vector<std::pair<int, int64_t>>* src) const override {
        if (in[0].size() != 4 || normalize_axis(axis_, 4, "Concat") != 1) return false;
        src->clear();
        for (size_t i = 0; i < in.size(); ++i) {
            for (int64_t c = 0; c < in[i][1]; ++c) src->emplace_back(static_cast<int>(i), c);
        }
        return true;
    }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return same_dtype(in); }
    bool lower(const std::vector<Shape>& in, DeviceStep* st) const override {
        const Shape& s = in[0];
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "Concat"));
        st->kind = DeviceStep::Concat;
        st->outer = st->inner = 1;
        for (size_t i = 0; i < axis; ++i) st->outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) st->inner *= s[i];
        for (const Shape& t : in) st->sizes.push_back(t[axis]);
        return true;
    }

private:
    int64_t axis_;
};

// Pads from the `pads` attribute (with `value`), or from inputs pads[, value[, axes]] (ONNX
// opset 11+; pads and axes read by value, where negative amounts crop), or with `center` to the
// sizes of input 1 (ONNX CenterCropPad).
class PadOp : public Op {
public:
    explicit PadOp(const Attrs& a)
        : pads_(a.get_ints("pads", -1, {}, 0)), has_pads_(a.has("pads")), value_(a.get_float("value", 0.0f)) {
        if (pads_.size() % 2 != 0) a.fail("attribute 'pads' must have an even number of entries");
        const std::string m = a.get_string("mode", "constant", {"constant", "reflect", "edge", "wrap"});
        mode_ = m == "reflect" ? PadMode::Reflect : m == "edge" ? PadMode::Edge : m == "wrap" ? PadMode::Wrap : PadMode::Constant;
        center_ = a.get_bool("center", false);
        center_axes_ = a.get_ints("axes", -1, {}, -int64_t(kMaxRank));
    }
    bool reads_value(size_t i) const override { return i == 1 || i == 3; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        std::vector<DType> out = dtype_of_input0(in, {1, 3});
        if (in.size() > 2 && in[2] != in[0]) dtype_error(2, in[2], str(dtype_name(in[0]), " (input 0's dtype)"));
        return out;
    }
    // [begin..., end...] over every axis of an input shaped `x`.
    std::vector<int64_t> pads(const Shape& x, const std::vector<const Tensor*>& p) const {
        const size_t rank = x.size();
        if (center_) return center_pads(x, *p[1]);
        if (p.size() < 2 || p[1] == nullptr) {
            if (!has_pads_) shape_error("Pad needs attribute 'pads' or a pads input");
            if (pads_.size() != 2 * rank) {
                shape_error(str("Pad has ", pads_.size(), " pads but the input has rank ", rank, " (needs ", 2 * rank, ")"));
            }
            return pads_;
        }
        const std::vector<int64_t> given = param_ints(*p[1], "Pad pads (input 1)", 2 * kMaxRank);
        std::vector<int64_t> axes;
        if (p.size() > 3 && p[3] != nullptr) axes = param_ints(*p[3], "Pad axes (input 3)", kMaxRank);
        else for (size_t i = 0; i < rank; ++i) axes.push_back(static_cast<int64_t>(i));
        if (given.size() != 2 * axes.size()) {
            shape_error(str("Pad has ", given.size(), " pads for ", axes.size(), " axes (needs ", 2 * axes.size(), ")"));
        }
        std::vector<int64_t> out(2 * rank, 0);
        for (size_t i = 0; i < axes.size(); ++i) {
            const size_t a = static_cast<size_t>(normalize_axis(axes[i], rank, "Pad"));
            for (int64_t v : {given[i], given[i + axes.size()]}) {
                if (v < -(int64_t(1) << 31) || v > (int64_t(1) << 31)) shape_error(str("Pad amount ", v, " is out of range"));
            }
            out[a] = given[i];
            out[a + rank] = given[i + axes.size()];
        }
        return out;
    }
    // ONNX CenterCropPad (`center`): input 1 holds the target sizes of `axes` (all by default);
    // each is reached by cropping or zero-padding both ends, the odd element at the end.
    std::vector<int64_t> center_pads(const Shape& x, const Tensor& target) const {
        const size_t rank = x.size();
        std::vector<int64_t> axes = center_axes_;
        if (axes.empty()) for (size_t i = 0; i < rank; ++i) axes.push_back(static_cast<int64_t>(i));
        const std::vector<int64_t> sizes = param_ints(target, "CenterCropPad shape (input 1)", kMaxRank);
        if (sizes.size() != axes.size()) {
            shape_error(str("CenterCropPad has ", sizes.size(), " sizes for ", axes.size(), " axes"));
        }
        std::vector<int64_t> out(2 * rank, 0);
        for (size_t i = 0; i < axes.size(); ++i) {
            const size_t a = static_cast<size_t>(normalize_axis(axes[i], rank, "CenterCropPad"));
            const int64_t t = sizes[i], d = x[a];
            if (t < 0 || t > (int64_t(1) << 31)) shape_error(str("CenterCropPad size ", t, " is not a size"));
            const int64_t begin = t < d ? -((d - t) / 2) : (t - d) / 2;
            out[a] = begin;
            out[a + rank] = t - d - begin;
        }
        return out;
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return infer_values(in, {nullptr}); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        const Shape& x = in[0];
        const std::vector<int64_t> p = pads(x, v);
        Shape out = x;
        for (size_t d = 0; d < x.size(); ++d) {
            const int64_t b = p[d], e = p[d + x.size()];
            if (mode_ == PadMode::Reflect && (b >= x[d] || e >= x[d])) {
                shape_error(str("reflect padding ", b, "/", e, " must be smaller than dimension ", d, " (", x[d], ")"));
            }
            if (mode_ != PadMode::Constant && (b < 0 || e < 0)) shape_error("only constant padding takes negative pads");
            if ((mode_ == PadMode::Edge || mode_ == PadMode::Wrap) && x[d] == 0 && (b || e)) {
                shape_error("edge or wrap padding of an empty dimension");
            }
            out[d] = x[d] + b + e;
            if (out[d] < 0) shape_error(str("Pad crops dimension ", d, " (", x[d], ") by more than its size: ", b, "/", e));
        }
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const size_t r = in[0]->shape.size();
        const std::vector<int64_t> p = pads(in[0]->shape, in);
        std::vector<int64_t> b(p.begin(), p.begin() + static_cast<long>(r));
        std::vector<int64_t> e(p.begin() + static_cast<long>(r), p.end());
        if (in[0]->dtype == DType::Float32) {
            // The value input, when there is one (an empty one means 0, as in ONNX).
            const float value = in.size() > 2 && in[2]->numel() > 0 ? in[2]->f32()[0] : in.size() > 2 ? 0.0f : value_;
            pad(in[0]->f32(), in[0]->shape, b, e, mode_, value, out[0]->f32());
            return;
        }
        // Other dtypes: the value input's first element, else the attribute in x's dtype.
        uint64_t value = 0;
        if (in.size() > 2 && in[2]->numel() > 0) {
            std::memcpy(&value, in[2]->data, in[0]->itemsize());
        } else if (in.size() <= 2) {
            dispatch_dtype(in[0]->dtype, [&](auto zero) {
                const auto v = static_cast<decltype(zero)>(value_);
                std::memcpy(&value, &v, sizeof v);
            });
        }
        pad_bytes(in[0]->data, in[0]->itemsize(), in[0]->shape, b, e, mode_, &value, out[0]->data);
    }
    bool lower(const std::vector<Shape>& in, DeviceStep* s) const override {
        if (!has_pads_ || mode_ == PadMode::Wrap) return false;  // the device kernels pad float32 without wrap
        const size_t r = in[0].size();
        s->kind = DeviceStep::Pad;
        s->pad_begin.assign(pads_.begin(), pads_.begin() + static_cast<long>(r));
        s->pad_end.assign(pads_.begin() + static_cast<long>(r), pads_.end());
        s->pad_mode = mode_;
        s->pad_value = value_;
        return true;
    }

private:
    std::vector<int64_t> pads_;
    bool has_pads_;
    float value_;
    PadMode mode_;
    bool center_;
    std::vector<int64_t> center_axes_;
};

class MeanOp : public Op {
public:
    explicit MeanOp(const Attrs& a)
        : axes_(a.get_ints("axes", -1, {}, -int64_t(kMaxRank))), keepdims_(a.get_bool("keepdims", true)) {}
    std::vector<int64_t> axes(size_t rank) const {
        std::vector<int64_t> ax;
        if (axes_.empty()) for (size_t i = 0; i < rank; ++i) ax.push_back(static_cast<int64_t>(i));
        for (int64_t a : axes_) ax.push_back(normalize_axis(a, rank, "Mean"));
        std::sort(ax.begin(), ax.end());
        if (std::adjacent_find(ax.begin(), ax.end()) != ax.end()) shape_error("Mean axes repeat");
        return ax;
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const auto ax = axes(in[0].size());
        Shape out;
        for (size_t i = 0; i < in[0].size(); ++i) {
            const bool reduced = std::binary_search(ax.begin(), ax.end(), static_cast<int64_t>(i));
            if (!reduced) out.push_back(in[0][i]);
            else if (keepdims_) out.push_back(1);
        }
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        reduce_mean(in[0]->f32(), in[0]->shape, axes(in[0]->shape.size()), out[0]->f32());
    }
    bool lower(const std::vector<Shape>& in, DeviceStep* s) const override {
        s->kind = DeviceStep::Mean;
        s->axes = axes(in[0].size());
        return true;
    }

private:
    std::vector<int64_t> axes_;
    bool keepdims_;
};

}  // namespace

std::unique_ptr<Op> make_Flatten(const Attrs& a) { return std::make_unique<FlattenOp>(a); }
std::unique_ptr<Op> make_Reshape(const Attrs& a) { return std::make_unique<ReshapeOp>(a); }
std::unique_ptr<Op> make_Squeeze(const Attrs& a) { return std::make_unique<SqueezeOp>(a); }
std::unique_ptr<Op> make_Identity(const Attrs&) { return std::make_unique<IdentityOp>(); }
std::unique_ptr<Op> make_Slice(const Attrs& a) { return std::make_unique<SliceOp>(a); }
std::unique_ptr<Op> make_Transpose(const Attrs& a) { return std::make_unique<TransposeOp>(a); }
std::unique_ptr<Op> make_Concat(const Attrs& a) { return std::make_unique<ConcatOp>(a); }
std::unique_ptr<Op> make_Pad(const Attrs& a) { return std::make_unique<PadOp>(a); }
std::unique_ptr<Op> make_Mean(const Attrs& a) { return std::make_unique<MeanOp>(a); }

}  // namespace pyengine
