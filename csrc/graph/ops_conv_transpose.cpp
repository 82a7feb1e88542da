// SPDX-License-Identifier: Apache-2.0
// ConvTranspose2D (ONNX ConvTranspose, NCHW, 2-D; the importer reshapes 1-D): a generic
// scatter loop over the input (no vector variant yet). Host-only (lower() stays false).
#include <algorithm>
#include <vector>

#include "common.h"
#include "graph/op.h"

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
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& xs = in[0]->shape;
        const Shape& ws = in[1]->shape;
        const Shape& ys = out[0]->shape;
        const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
        const int64_t Og = ws[1], KH = ws[2], KW = ws[3], O = ys[1], OH = ys[2], OW = ys[3];
        const int64_t Cg = C / groups_;
        const float* x = in[0]->f32();
        const float* w = in[1]->f32();
        float* y = out[0]->f32();
        for (int64_t n = 0; n < N; ++n) {
            for (int64_t o = 0; o < O; ++o) {
                const float b = in.size() > 2 && in[2] ? in[2]->f32()[o] : 0.0f;
                std::fill(y + (n * O + o) * OH * OW, y + (n * O + o + 1) * OH * OW, b);
            }
            for (int64_t c = 0; c < C; ++c) {
                const int64_t g = c / Cg;
                const float* xc = x + (n * C + c) * H * W;
                for (int64_t og = 0; og < Og; ++og) {
                    float* yo = y + (n * O + g * Og + og) * OH * OW;
                    const float* wk = w + (c * Og + og) * KH * KW;
                    for (int64_t ih = 0; ih < H; ++ih) {
                        for (int64_t kh = 0; kh < KH; ++kh) {
                            const int64_t oh = ih * strides_[0] - pads_[0] + kh * dilations_[0];
                            if (oh < 0 || oh >= OH) continue;
                            for (int64_t iw = 0; iw < W; ++iw) {
                                const float xv = xc[ih * W + iw];
                                for (int64_t kw = 0; kw < KW; ++kw) {
                                    const int64_t ow = iw * strides_[1] - pads_[1] + kw * dilations_[1];
                                    if (ow >= 0 && ow < OW) yo[oh * OW + ow] += xv * wk[kh * KW + kw];
                                }
                            }
                        }
                    }
                }
            }
        }
    }

private:
    std::vector<int64_t> strides_, dilations_, pads_, output_padding_;
    int64_t groups_;
};

}  // namespace

std::unique_ptr<Op> make_ConvTranspose2D(const Attrs& a) { return std::make_unique<ConvTransposeOp>(a); }

}  // namespace pyengine
