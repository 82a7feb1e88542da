// SPDX-License-Identifier: Apache-2.0
// ConvTranspose2D (ONNX ConvTranspose, NCHW, 2-D; the importer reshapes 1-D): per image and
// group, one GEMM of the transposed weights by the input ([O/g·kh·kw, C/g] x [C/g, H·W], the
// dispatched vector GEMM), then a col2im scatter-add of those columns into the output.
// Host-only (lower() stays false).
#include <algorithm>
#include <vector>

#include "common.h"
#include "graph/op.h"
#include "kernels/dispatch.h"

namespace pyengine {

namespace {

// x [N, C, H, W], w [C, O / groups, kh, kw] (ONNX's layout), bias [O] (optional);
// y [N, O, (H-1)·s - pad_top - pad_bottom + (kh-1)·d + 1 + output_padding, ... for W].
class ConvTransposeOp : public Op {
public:
    explicit ConvTransposeOp(const Attrs& a)
        : strides_(a.get_ints("strides", 2, {1, 1}, 1)),
          dilations_(a.get_ints("dilations", 2, {1, 1}, 1)),
          pads_(a.get_ints("pads", 4, {0, 0, 0, 0}, 0)),
          output_padding_(a.get_ints("output_padding", 2, {0, 0}, 0)),
          groups_(a.get_int("groups", 1)) {
        if (groups_ < 1) a.fail(str("attribute 'groups' must be >= 1, got ", groups_));
        for (int i = 0; i < 2; ++i) {
            const size_t k = static_cast<size_t>(i);
            if (output_padding_[k] >= std::max(strides_[k], dilations_[k])) {
                a.fail(str("attribute 'output_padding' (", output_padding_[k],
                           ") must be smaller than the stride or the dilation"));
            }
        }
    }
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& x = in[0];
        const Shape& w = in[1];
        if (x.size() != 4 || w.size() != 4) {
            shape_error(str("ConvTranspose2D needs 4-D x and w, got ", shape_str(x), " and ", shape_str(w)));
        }
        if (w[0] != x[1] || x[1] % groups_ != 0) {
            shape_error(str("ConvTranspose2D: weight ", shape_str(w), " does not fit input ", shape_str(x),
                            " with ", groups_, " groups"));
        }
        const int64_t out_c = w[1] * groups_;
        if (in.size() > 2 && (in[2].size() != 1 || in[2][0] != out_c)) {
            shape_error(str("ConvTranspose2D bias ", shape_str(in[2]), " must be [", out_c, "]"));
        }
        Shape y = {x[0], out_c, 0, 0};
        for (size_t i = 0; i < 2; ++i) {
            y[i + 2] = (x[i + 2] - 1) * strides_[i] - pads_[i] - pads_[i + 2] + (w[i + 2] - 1) * dilations_[i] + 1 +
                       output_padding_[i];
            if (y[i + 2] < 1) shape_error(str("ConvTranspose2D output would be empty for input ", shape_str(x)));
        }
        return {y};
    }
    void prepare(const std::vector<const Tensor*>& constants) override {
        if (constants.size() > 1 && constants[1]) wt_ = transposed(*constants[1]);
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& xs = in[0]->shape;
        const Shape& ws = in[1]->shape;
        const Shape& ys = out[0]->shape;
        const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
        const int64_t Og = ws[1], KH = ws[2], KW = ws[3], O = ys[1], OH = ys[2], OW = ys[3];
        const int64_t Cg = C / groups_, rows = Og * KH * KW, HW = H * W;
        const std::vector<float> wt_run = wt_.empty() ? transposed(*in[1]) : std::vector<float>();
        const float* wt = wt_.empty() ? wt_run.data() : wt_.data();
        const float* x = in[0]->f32();
        float* y = out[0]->f32();
        std::vector<float> cols(static_cast<size_t>(rows * HW));
        const KernelTable& k = kernels();
        for (int64_t n = 0; n < N; ++n) {
            for (int64_t o = 0; o < O; ++o) {
                const float b = in.size() > 2 && in[2] ? in[2]->f32()[o] : 0.0f;
                std::fill(y + (n * O + o) * OH * OW, y + (n * O + o + 1) * OH * OW, b);
            }
            for (int64_t g = 0; g < groups_; ++g) {
                // cols[(og, kh, kw), (ih, iw)] = sum_c w[c, og, kh, kw] · x[c, ih, iw]
                k.gemm(rows, HW, Cg, wt + g * rows * Cg, Cg, x + (n * C + g * Cg) * HW, HW, false, cols.data(), HW,
                       Epilogue{});
                for (int64_t r = 0; r < rows; ++r) {
                    const int64_t og = r / (KH * KW), kh = r / KW % KH, kw = r % KW;
                    float* yo = y + (n * O + g * Og + og) * OH * OW;
                    const float* cr = cols.data() + r * HW;
                    // The input columns iw whose output column lands inside [0, OW).
                    const int64_t off_w = kw * dilations_[1] - pads_[1], sw = strides_[1];
                    const int64_t iw0 = off_w >= 0 ? 0 : (-off_w + sw - 1) / sw;
                    const int64_t last = OW - 1 - off_w;
                    const int64_t iw1 = last < 0 ? 0 : std::min(W, last / sw + 1);
                    for (int64_t ih = 0; ih < H; ++ih) {
                        const int64_t oh = ih * strides_[0] - pads_[0] + kh * dilations_[0];
                        if (oh < 0 || oh >= OH) continue;
                        float* yrow = yo + oh * OW;
                        const float* crow = cr + ih * W;
                        for (int64_t iw = iw0; iw < iw1; ++iw) yrow[iw * sw + off_w] += crow[iw];
                    }
                }
            }
        }
    }

private:
    // w [C, Og, kh, kw] -> per group [Og·kh·kw, C/groups] (the GEMM's A).
    std::vector<float> transposed(const Tensor& w) const {
        const int64_t C = w.shape[0], rows = w.shape[1] * w.shape[2] * w.shape[3], Cg = C / groups_;
        std::vector<float> t(static_cast<size_t>(w.numel()));
        const float* src = w.f32();
        for (int64_t c = 0; c < C; ++c) {
            const int64_t g = c / Cg, cg = c % Cg;
            for (int64_t r = 0; r < rows; ++r) t[static_cast<size_t>((g * rows + r) * Cg + cg)] = src[c * rows + r];
        }
        return t;
    }
    std::vector<int64_t> strides_, dilations_, pads_, output_padding_;
    int64_t groups_;
    std::vector<float> wt_;
};

}  // namespace

std::unique_ptr<Op> make_ConvTranspose2D(const Attrs& a) { return std::make_unique<ConvTransposeOp>(a); }

}  // namespace pyengine
