// SPDX-License-Identifier: Apache-2.0
// Resize (ONNX Resize / Upsample: nearest and linear, the coordinate modes the importer accepts).
// Images (only the last two axes change) take a 2-D path, planes in parallel; anything else goes
// axis by axis (both modes are separable, so that equals the N-d interpolation). Host-only.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common.h"
#include "graph/op.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

// Output sizes and coordinate scales from the `sizes` and `scales` attributes, or from input 1
// (read by value): per axis of `axes` (all by default), the output sizes (`param` "sizes"; the
// scale is size / input size) or the scales (`param` "scales"; the size is floor(input · scale)),
// as ONNX's Resize.
class ResizeOp : public Op {
public:
    explicit ResizeOp(const Attrs& a)
        : sizes_(a.get_ints("sizes", -1, {}, 0)),
          mode_(a.get_string("mode", "nearest", {"nearest", "linear"})),
          coord_(a.get_string("coordinate_transformation_mode", "half_pixel",
                              {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                               "asymmetric"})),
          nearest_(a.get_string("nearest_mode", "round_prefer_floor",
                                {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"})),
          param_(a.get_string("param", "", {"", "scales", "sizes"})),
          axes_(a.get_ints("axes", -1, {}, -int64_t(kMaxRank))),
          policy_(a.get_string("keep_aspect_ratio_policy", "stretch", {"stretch", "not_larger", "not_smaller"})) {
        scales_ = a.get_floats("scales", static_cast<int>(sizes_.size()));
        for (double sc : scales_) {
            if (!(sc > 0.0)) a.fail(str("attribute 'scales' must be positive, got ", sc));
        }
        if (scales_.size() != sizes_.size()) a.fail("attributes 'sizes' and 'scales' need one entry per axis");
    }
    bool reads_value(size_t i) const override { return i == 1; }
    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t) const override {
        if (in[0] != DType::Float32) dtype_error(0, in[0], "float32");
        if (in.size() > 1) {
            const bool ints = in[1] == DType::Int64 || in[1] == DType::Int32;
            const bool floats = in[1] == DType::Float32 || in[1] == DType::Float64;
            if (param_ == "sizes" ? !ints : param_ == "scales" ? !floats : true) {
                dtype_error(1, in[1], param_ == "sizes" ? "int32 or int64 (sizes)" : "float32 or float64 (scales), with attribute param");
            }
        }
        return {DType::Float32};
    }
    struct Geometry {
        Shape out;
        std::vector<double> scales;
    };
    Geometry geometry(const Shape& x, const Tensor* param) const {
        Geometry g{x, std::vector<double>(x.size(), 1.0)};
        if (param == nullptr) {
            if (x.size() != sizes_.size()) {
                shape_error(str("Resize has ", sizes_.size(), " sizes for an input of rank ", x.size()));
            }
            for (size_t i = 0; i < x.size(); ++i) {
                if (sizes_[i] != 0) g.out[i] = sizes_[i];  // 0: the input's (a free batch)
            }
            g.scales = scales_;
            return g;
        }
        std::vector<int64_t> axes = axes_;
        if (axes.empty()) for (size_t i = 0; i < x.size(); ++i) axes.push_back(static_cast<int64_t>(i));
        const std::string what = str("Resize ", param_, " (input 1)");
        const std::vector<double> v = param_ == "sizes" ? std::vector<double>() : param_floats(*param, what, kMaxRank);
        const std::vector<int64_t> n = param_ == "sizes" ? param_ints(*param, what, kMaxRank) : std::vector<int64_t>();
        const size_t count = param_ == "sizes" ? n.size() : v.size();
        if (count != axes.size()) shape_error(str(what, " has ", count, " entries for ", axes.size(), " axes"));
        if (param_ == "sizes" && policy_ != "stretch") {
            // One scale for every axis of `axes` (the smallest or largest size / input), sizes
            // rounded half up, as ONNX's keep_aspect_ratio_policy.
            double scale = policy_ == "not_larger" ? INFINITY : 0.0;
            for (size_t i = 0; i < axes.size() && i < n.size(); ++i) {
                const size_t a = static_cast<size_t>(normalize_axis(axes[i], x.size(), "Resize"));
                const double s = static_cast<double>(n[i]) / static_cast<double>(x[a]);
                scale = policy_ == "not_larger" ? std::min(scale, s) : std::max(scale, s);
            }
            for (size_t i = 0; i < axes.size() && i < n.size(); ++i) {
                const size_t a = static_cast<size_t>(normalize_axis(axes[i], x.size(), "Resize"));
                const double size = std::floor(scale * static_cast<double>(x[a]) + 0.5);
                if (!(size >= 1.0) || size > 2147483648.0) shape_error(str(what, " ", shape_str(n), " gives axis ", a, " size ", size));
                g.out[a] = static_cast<int64_t>(size);
                g.scales[a] = scale;
            }
        }
        for (size_t i = 0; i < axes.size(); ++i) {
            const size_t a = static_cast<size_t>(normalize_axis(axes[i], x.size(), "Resize"));
            if (param_ == "sizes" && policy_ != "stretch") {
                if (n[i] < 1) shape_error(str(what, " entry ", n[i], " is not a size >= 1"));
            } else if (param_ == "sizes") {
                if (n[i] < 1 || n[i] > (int64_t(1) << 31)) shape_error(str(what, " entry ", n[i], " is not a size >= 1"));
                g.out[a] = n[i];
                g.scales[a] = static_cast<double>(n[i]) / static_cast<double>(x[a]);
            } else {
                if (!(v[i] > 0.0) || !std::isfinite(v[i])) shape_error(str(what, " entry ", v[i], " is not a positive scale"));
                g.scales[a] = v[i];
                const double size = std::floor(static_cast<double>(x[a]) * v[i]);
                if (size < 1.0 || size > 2147483648.0) shape_error(str(what, " entry ", v[i], " gives axis ", a, " size ", size));
                g.out[a] = static_cast<int64_t>(size);
            }
        }
        return g;
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override { return infer_values(in, {nullptr}); }
    std::vector<Shape> infer_values(const std::vector<Shape>& in, const std::vector<const Tensor*>& v) const override {
        return {geometry(in[0], v.size() > 1 ? v[1] : nullptr).out};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        Shape cur = in[0]->shape;
        const Shape& target = out[0]->shape;
        const std::vector<double> scales = geometry(cur, in.size() > 1 ? in[1] : nullptr).scales;
        const size_t r = cur.size();
        bool planes = r >= 2;  // only the last two axes change (images): the 2-D path
        for (size_t ax = 0; ax + 2 < r; ++ax) planes = planes && cur[ax] == target[ax] && scales[ax] == 1.0;
        if (planes) {
            resize_planes(in[0]->f32(), cur[r - 2], cur[r - 1], out[0]->f32(), target[r - 2], target[r - 1],
                          shape_numel(Shape(cur.begin(), cur.end() - 2)), scales[r - 2], scales[r - 1]);
            return;
        }
        std::vector<float> buf(in[0]->f32(), in[0]->f32() + in[0]->numel()), next;
        for (size_t ax = 0; ax < cur.size(); ++ax) {
            const int64_t n_in = cur[ax], n_out = target[ax];
            if (n_in == n_out && scales[ax] == 1.0) continue;
            int64_t outer = 1, inner = 1;
            for (size_t i = 0; i < ax; ++i) outer *= cur[i];
            for (size_t i = ax + 1; i < cur.size(); ++i) inner *= cur[i];
            next.assign(static_cast<size_t>(outer * n_out * inner), 0.0f);
            for (int64_t j = 0; j < n_out; ++j) {
                const Tap t = tap(j, n_in, n_out, scales[ax]);
                for (int64_t o = 0; o < outer; ++o) {
                    const float* r0 = buf.data() + (o * n_in + t.i0) * inner;
                    const float* r1 = buf.data() + (o * n_in + t.i1) * inner;
                    float* y = next.data() + (o * n_out + j) * inner;
                    if (t.w1 == 0.0f) {
                        std::copy(r0, r0 + inner, y);
                    } else {
                        for (int64_t k = 0; k < inner; ++k) y[k] = r0[k] + t.w1 * (r1[k] - r0[k]);
                    }
                }
            }
            cur[ax] = n_out;
            buf.swap(next);
        }
        std::copy(buf.begin(), buf.end(), out[0]->f32());
    }

private:
    // Output index j of an axis -> the two input indices it reads and the second one's weight.
    struct Tap {
        int64_t i0, i1;
        float w1;
    };
    Tap tap(int64_t j, int64_t n_in, int64_t n_out, double scale) const {
        const double x = source(j, n_in, n_out, scale);
        if (mode_ == "nearest") {
            const int64_t i = std::clamp<int64_t>(round_nearest(x), 0, n_in - 1);
            return {i, i, 0.0f};
        }
        const double xc = std::clamp(x, 0.0, static_cast<double>(n_in - 1));
        const int64_t i0 = static_cast<int64_t>(std::floor(xc));
        return {i0, std::min(i0 + 1, n_in - 1), static_cast<float>(xc - static_cast<double>(i0))};
    }
    // `planes` [H, W] planes to [OH, OW]. Both passes are separable: the gathering (horizontal)
    // pass runs over the fewer rows (the input's when upsampling, so each input row is gathered
    // once, not once per output row that reads it), the other pass blends whole rows.
    void resize_planes(const float* x, int64_t H, int64_t W, float* y, int64_t OH, int64_t OW, int64_t planes,
                       double sh, double sw) const {
        std::vector<Tap> rows(static_cast<size_t>(OH));
        for (int64_t j = 0; j < OH; ++j) rows[static_cast<size_t>(j)] = tap(j, H, OH, sh);
        std::vector<int64_t> c0(static_cast<size_t>(OW)), c1(static_cast<size_t>(OW));
        std::vector<float> cw(static_cast<size_t>(OW));
        for (int64_t j = 0; j < OW; ++j) {
            const Tap t = tap(j, W, OW, sw);
            c0[static_cast<size_t>(j)] = t.i0;
            c1[static_cast<size_t>(j)] = t.i1;
            cw[static_cast<size_t>(j)] = t.w1;
        }
        const bool same_w = W == OW && sw == 1.0;
        const bool columns_first = H < OH;  // gather H rows instead of OH
        // dst[ow] = src blended across columns (or a copy when the width stays).
        auto columns = [&](const float* src, float* dst) {
            if (same_w) {
                std::copy(src, src + W, dst);
                return;
            }
            const int64_t* i0 = c0.data();
            const int64_t* i1 = c1.data();
            const float* w1 = cw.data();
            for (int64_t ow = 0; ow < OW; ++ow) {
                const float a = src[i0[ow]];  // a weight of 0 (nearest) reads one input: inf stays inf
                dst[ow] = w1[ow] == 0.0f ? a : a + w1[ow] * (src[i1[ow]] - a);
            }
        };
        auto blend = [](const float* r0, const float* r1, float w1, int64_t n, float* dst) {
            if (w1 == 0.0f) {
                std::copy(r0, r0 + n, dst);
                return;
            }
            for (int64_t i = 0; i < n; ++i) dst[i] = r0[i] + w1 * (r1[i] - r0[i]);
        };
        parallel_for(planes, [&](int64_t p) {
            thread_local std::vector<float> buf;
            const float* xp = x + p * H * W;
            float* yp = y + p * OH * OW;
            if (columns_first) {
                buf.resize(static_cast<size_t>(H * OW));
                for (int64_t h = 0; h < H; ++h) columns(xp + h * W, buf.data() + h * OW);
                for (int64_t oh = 0; oh < OH; ++oh) {
                    const Tap& t = rows[static_cast<size_t>(oh)];
                    blend(buf.data() + t.i0 * OW, buf.data() + t.i1 * OW, t.w1, OW, yp + oh * OW);
                }
                return;
            }
            buf.resize(static_cast<size_t>(W));
            for (int64_t oh = 0; oh < OH; ++oh) {
                const Tap& t = rows[static_cast<size_t>(oh)];
                blend(xp + t.i0 * W, xp + t.i1 * W, t.w1, W, buf.data());
                columns(buf.data(), yp + oh * OW);
            }
        });
    }
    // The input coordinate of output index j (ONNX's coordinate_transformation_mode). As in
    // ONNX, the resized length is n_in · scale, unrounded (it differs from n_out with scales).
    double source(int64_t j, int64_t n_in, int64_t n_out, double scale) const {
        const double x = static_cast<double>(j);
        const double len = static_cast<double>(n_in) * scale;
        if (coord_ == "half_pixel_symmetric") {  // half_pixel, re-centred on the rounded length
            const double offset = static_cast<double>(n_in) / 2.0 * (1.0 - static_cast<double>(n_out) / len);
            return offset + (x + 0.5) / scale - 0.5;
        }
        if (coord_ == "asymmetric") return x / scale;
        if (coord_ == "align_corners") return len <= 1.0 ? 0.0 : x * static_cast<double>(n_in - 1) / (len - 1.0);
        if (coord_ == "pytorch_half_pixel" && len <= 1.0) return 0.0;
        return (x + 0.5) / scale - 0.5;
    }
    int64_t round_nearest(double x) const {
        if (nearest_ == "floor") return static_cast<int64_t>(std::floor(x));
        if (nearest_ == "ceil") return static_cast<int64_t>(std::ceil(x));
        const double f = std::floor(x);
        if (x - f == 0.5) return static_cast<int64_t>(nearest_ == "round_prefer_floor" ? f : f + 1.0);
        return static_cast<int64_t>(std::round(x));
    }
    std::vector<int64_t> sizes_;
    std::vector<double> scales_;
    std::string mode_, coord_, nearest_, param_;
    std::vector<int64_t> axes_;
    std::string policy_;
};

}  // namespace

std::unique_ptr<Op> make_Resize(const Attrs& a) { return std::make_unique<ResizeOp>(a); }

}  // namespace pyengine
