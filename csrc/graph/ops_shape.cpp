// SPDX-License-Identifier: Apache-2.0
// Shape and data-movement ops: Flatten, Reshape, Transpose, Squeeze, Slice, Concat, Pad, Mean,
// Identity.
#include <algorithm>
#include <cstring>

#include "common.h"
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

class ReshapeOp : public ViewOp {
public:
    explicit ReshapeOp(const Attrs& a) : shape_(a.get_ints("shape", -1, {}, -1)) {
        if (!a.has("shape")) a.fail("attribute 'shape' is required");
        if (shape_.size() > kMaxRank) a.fail(str("attribute 'shape' has rank above ", kMaxRank));
        if (std::count(shape_.begin(), shape_.end(), -1) > 1) a.fail("attribute 'shape' has more than one -1");
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& x = in[0];
        Shape out = shape_;
        int64_t known = 1, infer_at = -1;
        for (size_t i = 0; i < out.size(); ++i) {
            if (out[i] == 0) {  // 0 copies the input dimension (ONNX, MXNet)
                if (i >= x.size()) shape_error(str("Reshape dimension ", i, " is 0 but the input has rank ", x.size()));
                out[i] = x[i];
            }
            if (out[i] == -1) infer_at = static_cast<int64_t>(i);
            else known *= out[i];
        }
        const int64_t total = shape_numel(x);
        if (infer_at >= 0) {
            if (known == 0 || total % known != 0) {
                shape_error(str("cannot reshape ", shape_str(x), " to ", shape_str(shape_)));
            }
            out[static_cast<size_t>(infer_at)] = total / known;
        } else if (known != total) {
            shape_error(str("cannot reshape ", shape_str(x), " (", total, " elements) to ", shape_str(out)));
        }
        return {out};
    }

private:
    std::vector<int64_t> shape_;
};

class SqueezeOp : public ViewOp {
public:
    explicit SqueezeOp(const Attrs& a) : axes_(a.get_ints("axes", -1, {}, -int64_t(kMaxRank))) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& x = in[0];
        std::vector<bool> drop(x.size(), false);
        if (axes_.empty()) {
            for (size_t i = 0; i < x.size(); ++i) drop[i] = x[i] == 1;
        }
        for (int64_t a : axes_) {
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

// Elements [start, end) of one axis (step 1). start/end as in ONNX: negative counts from the
// end, and both are clamped to the axis, so a slice past the end is shorter, never an error.
class SliceOp : public Op {
public:
    explicit SliceOp(const Attrs& a)
        : axis_(a.get_int_required("axis")), start_(a.get_int_required("start")), end_(a.get_int_required("end")) {}

    std::pair<int64_t, int64_t> range(const Shape& x) const {
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, x.size(), "Slice"));
        const int64_t d = x[axis];
        auto clamp = [d](int64_t i) { return std::min(std::max(i < 0 ? i + d : i, int64_t(0)), d); };
        const int64_t s = clamp(start_), e = clamp(end_);
        return {s, std::max(s, e)};
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        Shape out = in[0];
        const auto r = range(in[0]);
        out[static_cast<size_t>(normalize_axis(axis_, out.size(), "Slice"))] = r.second - r.first;
        return {out};
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& x = in[0]->shape;
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
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override { return same_dtype(in); }

    bool channel_map(const std::vector<Shape>& in, std::vector<std::pair<int, int64_t>>* src) const override {
        if (in[0].size() != 4 || normalize_axis(axis_, 4, "Slice") != 1) return false;
        const auto r = range(in[0]);
        src->clear();
        for (int64_t c = r.first; c < r.second; ++c) src->emplace_back(0, c);
        return true;
    }

    // A pad with negative amounts: it crops [start, end) out of the axis.
    bool lower(const std::vector<Shape>& in, DeviceStep* s) const override {
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
    int64_t axis_, start_, end_;
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

class PadOp : public Op {
public:
    explicit PadOp(const Attrs& a)
        : pads_(a.get_ints("pads", -1, {}, 0)), value_(a.get_float("value", 0.0f)) {
        if (!a.has("pads")) a.fail("attribute 'pads' (begin..., end...) is required");
        if (pads_.size() % 2 != 0) a.fail("attribute 'pads' must have an even number of entries");
        const std::string m = a.get_string("mode", "constant", {"constant", "reflect", "edge"});
        mode_ = m == "reflect" ? PadMode::Reflect : m == "edge" ? PadMode::Edge : PadMode::Constant;
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& x = in[0];
        if (pads_.size() != 2 * x.size()) {
            shape_error(str("Pad has ", pads_.size(), " pads but the input has rank ", x.size(), " (needs ", 2 * x.size(), ")"));
        }
        Shape out = x;
        for (size_t d = 0; d < x.size(); ++d) {
            const int64_t b = pads_[d], e = pads_[d + x.size()];
            if (mode_ == PadMode::Reflect && (b >= x[d] || e >= x[d])) {
                shape_error(str("reflect padding ", b, "/", e, " must be smaller than dimension ", d, " (", x[d], ")"));
            }
            if (mode_ == PadMode::Edge && x[d] == 0 && (b || e)) shape_error("edge padding of an empty dimension");
            out[d] = x[d] + b + e;
        }
        return {out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const size_t r = in[0]->shape.size();
        std::vector<int64_t> b(pads_.begin(), pads_.begin() + static_cast<long>(r));
        std::vector<int64_t> e(pads_.begin() + static_cast<long>(r), pads_.end());
        pad(in[0]->f32(), in[0]->shape, b, e, mode_, value_, out[0]->f32());
    }
    bool lower(const std::vector<Shape>& in, DeviceStep* s) const override {
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
    float value_;
    PadMode mode_;
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
