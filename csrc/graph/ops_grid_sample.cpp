// SPDX-License-Identifier: Apache-2.0
// GridSample: ONNX's (opsets 16-22) sampling of x [N, C, D1..Dr] at the normalized points of
// grid [N, O1..Or, r] (r = 2 or 3; the grid's last axis lists the coordinates from the last
// spatial axis to the first), nearest (halves to even) or linear, with zeros, border or
// reflection padding, as onnx's reference computes it (coordinates in float32, each axis
// handled on its own). Generic loops over the planes (in parallel); host-only.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "graph/op.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

enum class Padding { Zeros, Border, Reflection };

class GridSampleOp : public Op {
public:
    explicit GridSampleOp(const Attrs& a)
        : linear_(a.get_string("mode", "linear", {"linear", "nearest"}) == "linear"),
          align_corners_(a.get_bool("align_corners", false)) {
        const std::string pad = a.get_string("padding_mode", "zeros", {"zeros", "border", "reflection"});
        padding_ = pad == "zeros" ? Padding::Zeros : pad == "border" ? Padding::Border : Padding::Reflection;
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& x = in[0];
        const Shape& g = in[1];
        if (x.size() != 4 && x.size() != 5) shape_error(str("GridSample input must be 4-D or 5-D, got ", shape_str(x)));
        const size_t r = x.size() - 2;
        if (g.size() != x.size() || g[0] != x[0] || g.back() != static_cast<int64_t>(r)) {
            shape_error(str("GridSample grid ", shape_str(g), " must be [", x[0], ", ", r == 2 ? "H, W" : "D, H, W", ", ", r,
                            "] for input ", shape_str(x)));
        }
        Shape y{x[0], x[1]};
        y.insert(y.end(), g.begin() + 1, g.end() - 1);
        return {y};
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& xs = in[0]->shape;
        const int r = static_cast<int>(xs.size()) - 2;
        const int64_t N = xs[0], C = xs[1];
        int64_t dims[3] = {1, 1, 1};
        int64_t plane = 1;
        for (int i = 0; i < r; ++i) {
            dims[i] = xs[static_cast<size_t>(2 + i)];
            plane *= dims[i];
        }
        const int64_t points = out[0]->numel() / std::max<int64_t>(N * C, 1);
        const float* x = in[0]->f32();
        const float* grid = in[1]->f32();
        float* y = out[0]->f32();
        auto task = [&](int64_t t) {
            const int64_t n = t / C, c = t % C;
            const float* src = x + (n * C + c) * plane;
            const float* g = grid + n * points * r;
            float* dst = y + (n * C + c) * points;
            for (int64_t p = 0; p < points; ++p) dst[p] = sample(src, dims, r, g + p * r);
        };
        const int64_t tasks = N * C;
        if (tasks > 1 && tasks * points >= (int64_t(1) << 14)) {
            parallel_for(tasks, task);
        } else {
            for (int64_t t = 0; t < tasks; ++t) task(t);
        }
    }

private:
    // Reflects v into [lo, hi] by its nearer border until it is inside (the reference's _gs_reflect).
    static double reflect(double v, double lo, double hi) {
        const double range = hi - lo;
        if (v < lo) {
            const double d = lo - v;
            const int64_t k = static_cast<int64_t>(d / range);
            const double rest = d - static_cast<double>(k) * range;
            return k % 2 == 0 ? lo + rest : hi - rest;
        }
        if (v > hi) {
            const double d = v - hi;
            const int64_t k = static_cast<int64_t>(d / range);
            const double rest = d - static_cast<double>(k) * range;
            return k % 2 == 0 ? hi - rest : lo + rest;
        }
        return v;
    }

    // Where index i of an axis of size d reads (false: outside, a zero) under the padding mode.
    bool index_at(int64_t i, int64_t d, int64_t* at) const {
        if (padding_ == Padding::Zeros) {
            *at = i;
            return i >= 0 && i < d;
        }
        if (padding_ == Padding::Border) {
            *at = std::min(std::max<int64_t>(i, 0), d - 1);
            return true;
        }
        const double lo = align_corners_ ? 0.0 : -0.5, hi = align_corners_ ? double(d - 1) : double(d) - 0.5;
        *at = std::min(std::max<int64_t>(static_cast<int64_t>(reflect(static_cast<double>(i), lo, hi)), 0), d - 1);
        return true;
    }

    float sample(const float* src, const int64_t* dims, int r, const float* g) const {
        float pos[3];
        for (int i = 0; i < r; ++i) {
            const float nv = g[r - 1 - i];  // the grid lists the last spatial axis first
            const float d = static_cast<float>(dims[i]);
            float v = align_corners_ ? (nv + 1.0f) / 2.0f * (d - 1.0f) : ((nv + 1.0f) * d - 1.0f) / 2.0f;
            if (!linear_) v = std::nearbyint(v);  // halves to even, as PyTorch and the reference
            const float lo = align_corners_ ? 0.0f : -0.5f, hi = align_corners_ ? d - 1.0f : d - 0.5f;
            if (v < lo || v > hi) {
                if (padding_ == Padding::Border) v = std::min(std::max(v, 0.0f), d - 1.0f);
                if (padding_ == Padding::Reflection) v = static_cast<float>(reflect(v, lo, hi));
            }
            pos[i] = v;
        }
        if (!linear_) {
            int64_t offset = 0;
            for (int i = 0; i < r; ++i) {
                int64_t at;
                if (!index_at(static_cast<int64_t>(pos[i]), dims[i], &at)) return 0.0f;
                offset = offset * dims[i] + at;
            }
            return src[offset];
        }
        // Linear: the corners' weights per axis, the innermost axis interpolated first.
        int64_t idx[3][2];
        bool inside[3][2];
        float w[3][2];
        for (int i = 0; i < r; ++i) {
            const float f = std::floor(pos[i]);
            const float t = std::fabs(pos[i] - f);
            const int64_t i0 = static_cast<int64_t>(f);
            w[i][0] = 1.0f - t;
            w[i][1] = t;
            inside[i][0] = index_at(i0, dims[i], &idx[i][0]);
            inside[i][1] = index_at(i0 + 1, dims[i], &idx[i][1]);
        }
        auto at = [&](int a, int b, int c) -> float {
            const int k[3] = {a, b, c};
            int64_t offset = 0;
            for (int i = 0; i < r; ++i) {
                if (!inside[i][k[i]]) return 0.0f;
                offset = offset * dims[i] + idx[i][k[i]];
            }
            return src[offset];
        };
        if (r == 2) {
            const float r0 = w[1][0] * at(0, 0, 0) + w[1][1] * at(0, 1, 0);
            const float r1 = w[1][0] * at(1, 0, 0) + w[1][1] * at(1, 1, 0);
            return w[0][0] * r0 + w[0][1] * r1;
        }
        float plane[2];
        for (int a = 0; a < 2; ++a) {
            const float r0 = w[2][0] * at(a, 0, 0) + w[2][1] * at(a, 0, 1);
            const float r1 = w[2][0] * at(a, 1, 0) + w[2][1] * at(a, 1, 1);
            plane[a] = w[1][0] * r0 + w[1][1] * r1;
        }
        return w[0][0] * plane[0] + w[0][1] * plane[1];
    }

    bool linear_;
    bool align_corners_;
    Padding padding_ = Padding::Zeros;
};

}  // namespace

std::unique_ptr<Op> make_GridSample(const Attrs& a) { return std::make_unique<GridSampleOp>(a); }

}  // namespace pyengine
