// SPDX-License-Identifier: Apache-2.0
// Local response normalization (AlexNet, GoogLeNet, ZFNet).
#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "graph/op.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

// LRN across channels, ONNX semantics: for channel c,
//   y = x / (bias + alpha / size * sum of x^2 over channels [c - (size-1)/2, c + ceil((size-1)/2)])^beta
// over the channel axis `axis` (1 for NCHW, -1 for NHWC). Converters map each framework's
// parameters onto these (TensorFlow's depth_radius r is size 2r + 1 with alpha scaled by size).
class LrnOp : public Op {
public:
    explicit LrnOp(const Attrs& a)
        : size_(a.get_int_required("size")),
          alpha_(a.get_float("alpha", 1e-4f)),
          beta_(a.get_float("beta", 0.75f)),
          bias_(a.get_float("bias", 1.0f)),
          axis_(a.get_int("axis", 1)) {
        if (size_ < 1) a.fail(str("attribute 'size' must be >= 1, got ", size_));
        if (!(bias_ > 0.0f) && !(alpha_ > 0.0f)) {
            a.fail(str("attributes 'bias' (", bias_, ") and 'alpha' (", alpha_, ") cannot both be <= 0: ",
                       "the denominator would be 0 for a zero input"));
        }
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        if (in[0].size() < 2) shape_error(str("LRN input must have rank >= 2, got ", shape_str(in[0])));
        normalize_axis(axis_, in[0].size(), "LRN");
        return {in[0]};
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "LRN"));
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < axis; ++i) outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
        const int64_t C = s[axis];
        const int64_t lo = (size_ - 1) / 2, hi = size_ - 1 - lo;
        const float scale = alpha_ / static_cast<float>(size_);
        const float* x = in[0]->f32();
        float* y = out[0]->f32();
        // A task is one channel of one outer index over `inner` contiguous elements.
        constexpr int64_t kMinTaskElements = 1 << 14;
        auto channel = [&](int64_t t) {
            const int64_t o = t / C, c = t % C;
            const float* base = x + o * C * inner;
            thread_local std::vector<float> sum;
            sum.assign(static_cast<size_t>(inner), 0.0f);
            for (int64_t j = std::max<int64_t>(0, c - lo); j <= std::min(C - 1, c + hi); ++j) {
                const float* xj = base + j * inner;
                for (int64_t i = 0; i < inner; ++i) sum[static_cast<size_t>(i)] += xj[i] * xj[i];
            }
            const float* xc = base + c * inner;
            float* yc = y + (o * C + c) * inner;
            for (int64_t i = 0; i < inner; ++i) {
                yc[i] = xc[i] * std::pow(bias_ + scale * sum[static_cast<size_t>(i)], -beta_);
            }
        };
        const int64_t tasks = outer * C;
        if (tasks > 1 && tasks * inner * size_ >= kMinTaskElements) {
            parallel_for(tasks, channel);
        } else {
            for (int64_t t = 0; t < tasks; ++t) channel(t);
        }
    }

    bool lower(const std::vector<Shape>& in, DeviceStep* st) const override {
        const Shape& s = in[0];
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "LRN"));
        st->kind = DeviceStep::Lrn;
        st->outer = st->inner = 1;
        for (size_t i = 0; i < axis; ++i) st->outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) st->inner *= s[i];
        st->axis = s[axis];
        st->lrn_size = size_;
        st->lrn_alpha = alpha_;
        st->lrn_beta = beta_;
        st->lrn_bias = bias_;
        return true;
    }

    OpRunInfo run_info(const std::vector<Shape>& in) const override {
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, in[0].size(), "LRN"));
        return {in[0].size() == 4 ? (axis == 1 ? "NCHW" : axis == 3 ? "NHWC" : "") : "", "generic across channels"};
    }

private:
    int64_t size_;
    float alpha_, beta_, bias_;
    int64_t axis_;
};

}  // namespace

std::unique_ptr<Op> make_LRN(const Attrs& a) { return std::make_unique<LrnOp>(a); }

}  // namespace pyengine
