// SPDX-License-Identifier: Apache-2.0
// The CUDA kernels' element bodies (device/cuda/kernels_body.h), run on the host over every
// index, against the CPU kernels; and the executor's convolution paths (im2col or the input
// itself as the GEMM's columns) against the reference convolution. Needs no GPU and no nvcc.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "device/cuda/kernels_body.h"
#include "kernels/elementwise.h"
#include "test_util.h"

using namespace pyengine;
using namespace pyengine::cuda;

namespace {

std::mt19937 rng(1234);

std::vector<float> rand_vec(int64_t n, float lo = -1.0f, float hi = 1.0f) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = d(rng);
    return v;
}

bool close(const std::vector<float>& a, const std::vector<float>& b, const char* what, float tol = 1e-5f) {
    if (a.size() != b.size()) {
        std::printf("  %s: sizes %zu vs %zu\n", what, a.size(), b.size());
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        if (!(std::fabs(a[i] - b[i]) <= tol * (1.0f + std::fabs(b[i])))) {
            std::printf("  %s: element %zu is %g, expected %g\n", what, i, double(a[i]), double(b[i]));
            return false;
        }
    }
    return true;
}

Conv2DParams conv_params(Layout layout, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t KH, int64_t KW,
                         int64_t stride, int64_t dil, int64_t pad, int64_t groups, Activation act) {
    Conv2DParams p;
    p.layout = layout;
    p.N = N; p.C = C; p.H = H; p.W = W; p.O = O; p.KH = KH; p.KW = KW;
    p.stride_h = p.stride_w = stride;
    p.dilation_h = p.dilation_w = dil;
    p.pad_top = p.pad_left = pad;
    p.OH = (H + 2 * pad - ((KH - 1) * dil + 1)) / stride + 1;
    p.OW = (W + 2 * pad - ((KW - 1) * dil + 1)) / stride + 1;
    p.groups = groups;
    p.ep.act = act;
    p.ep.alpha = 0.1f;
    return p;
}

std::vector<Conv2DParams> conv_cases() {
    std::vector<Conv2DParams> cs;
    for (Layout l : {Layout::NCHW, Layout::NHWC}) {
        cs.push_back(conv_params(l, 2, 5, 9, 11, 7, 3, 3, 1, 1, 1, 1, Activation::Relu6));
        cs.push_back(conv_params(l, 3, 4, 13, 10, 6, 3, 2, 2, 2, 2, 1, Activation::LeakyRelu));
        cs.push_back(conv_params(l, 2, 25, 6, 7, 9, 1, 1, 1, 1, 0, 1, Activation::None));      // pointwise
        cs.push_back(conv_params(l, 2, 12, 10, 9, 12, 3, 3, 2, 1, 1, 12, Activation::Tanh));  // depthwise
        cs.push_back(conv_params(l, 1, 8, 7, 7, 6, 3, 3, 1, 1, 0, 2, Activation::Sigmoid));   // grouped
    }
    return cs;
}

// The same test as the executor's: a 1x1, stride-1, unpadded convolution reads x as its columns.
bool pointwise(const Conv2DParams& p) {
    return p.KH == 1 && p.KW == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 && p.pad_left == 0 &&
           p.OH == p.H && p.OW == p.W;
}

}  // namespace

TEST_CASE(conv2d_direct_matches_reference) {
    for (Conv2DParams p : conv_cases()) {
        const auto x = rand_vec(p.N * p.C * p.H * p.W), w = rand_vec(p.O * (p.C / p.groups) * p.KH * p.KW);
        const auto b = rand_vec(p.O);
        p.ep.bias = b.data();
        std::vector<float> want(static_cast<size_t>(p.N * p.O * p.OH * p.OW)), got(want.size());
        conv2d_generic(p, x.data(), w.data(), want.data());
        for (size_t i = 0; i < got.size(); ++i) got[i] = conv2d_direct_at(p, x.data(), w.data(), static_cast<int64_t>(i));
        CHECK(close(got, want, "conv2d_direct", 1e-4f));
    }
}

TEST_CASE(im2col_gemm_paths_match_reference) {
    for (Conv2DParams p : conv_cases()) {
        if (p.groups != 1) continue;  // the executor runs grouped convolutions directly
        const auto x = rand_vec(p.N * p.C * p.H * p.W), w = rand_vec(p.O * p.C * p.KH * p.KW), b = rand_vec(p.O);
        p.ep.bias = b.data();
        std::vector<float> want(static_cast<size_t>(p.N * p.O * p.OH * p.OW)), got(want.size());
        conv2d_generic(p, x.data(), w.data(), want.data());
        const int64_t ckk = p.C * p.KH * p.KW, ohw = p.OH * p.OW;
        std::vector<float> cols = x;
        if (!pointwise(p)) {
            cols.resize(static_cast<size_t>(p.N * ckk * ohw));
            for (size_t i = 0; i < cols.size(); ++i) cols[i] = im2col_at(p, x.data(), static_cast<int64_t>(i));
        }
        // The products the executor asks cuBLAS for, as plain loops.
        if (p.layout == Layout::NHWC) {  // Y[N*OHW, O] = cols[N*OHW, CKK] * W[O, CKK]^T
            for (int64_t r = 0; r < p.N * ohw; ++r)
                for (int64_t o = 0; o < p.O; ++o) {
                    float s = 0.0f;
                    for (int64_t k = 0; k < ckk; ++k) s += cols[static_cast<size_t>(r * ckk + k)] * w[static_cast<size_t>(o * ckk + k)];
                    got[static_cast<size_t>(r * p.O + o)] = s;
                }
        } else {  // per image: Y_n[O, OHW] = W[O, CKK] * cols_n[CKK, OHW]
            for (int64_t n = 0; n < p.N; ++n)
                for (int64_t o = 0; o < p.O; ++o)
                    for (int64_t q = 0; q < ohw; ++q) {
                        float s = 0.0f;
                        for (int64_t k = 0; k < ckk; ++k) {
                            s += w[static_cast<size_t>(o * ckk + k)] * cols[static_cast<size_t>((n * ckk + k) * ohw + q)];
                        }
                        got[static_cast<size_t>((n * p.O + o) * ohw + q)] = s;
                    }
        }
        const int64_t div = p.layout == Layout::NHWC ? 1 : ohw;
        for (size_t i = 0; i < got.size(); ++i) {
            got[i] = bias_act_at(got[i], static_cast<int64_t>(i), b.data(), div, p.O, p.ep.act, p.ep.alpha, p.ep.beta);
        }
        CHECK(close(got, want, pointwise(p) ? "pointwise conv" : "im2col conv", 1e-4f));
    }
}

TEST_CASE(pool2d_matches_reference) {
    for (Layout l : {Layout::NCHW, Layout::NHWC}) {
        for (int variant = 0; variant < 4; ++variant) {
            Pool2DParams p;
            p.layout = l;
            p.is_max = variant % 2 == 0;
            p.count_include_pad = variant == 3;
            p.N = 2; p.C = 5; p.H = 11; p.W = 9;
            p.KH = 3; p.KW = 2; p.stride_h = 2; p.stride_w = 2;
            p.pad_top = 1; p.pad_left = variant >= 2 ? 1 : 0; p.pad_bottom = 2; p.pad_right = 1;
            p.OH = (p.H + p.pad_top + p.pad_bottom - p.KH) / p.stride_h + 1;
            p.OW = (p.W + p.pad_left + p.pad_right - p.KW) / p.stride_w + 1;
            const auto x = rand_vec(p.N * p.C * p.H * p.W);
            std::vector<float> want(static_cast<size_t>(p.N * p.C * p.OH * p.OW)), got(want.size());
            pool2d_generic(p, x.data(), want.data());
            for (size_t i = 0; i < got.size(); ++i) got[i] = pool2d_at(p, x.data(), static_cast<int64_t>(i));
            CHECK(close(got, want, "pool2d"));
        }
    }
}

TEST_CASE(binary_broadcast_matches_reference) {
    const std::vector<std::vector<Shape>> cases = {{{2, 3, 4, 5}, {3, 1, 5}, {2, 3, 4, 5}}, {{4, 1}, {1, 6}, {4, 6}},
                                                   {{7}, {2, 3, 7}, {2, 3, 7}}, {{}, {3, 2}, {3, 2}}};
    for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) {
        for (const auto& c : cases) {
            const auto a = rand_vec(shape_numel(c[0]), 0.5f, 2.0f), b = rand_vec(shape_numel(c[1]), 0.5f, 2.0f);
            std::vector<float> want(static_cast<size_t>(shape_numel(c[2]))), got(want.size());
            binary_broadcast(op, a.data(), c[0], b.data(), c[1], want.data(), c[2]);
            const BinaryArgs g = binary_args(c[0], c[1], c[2]);
            for (size_t i = 0; i < got.size(); ++i) got[i] = binary_at(op, a.data(), b.data(), g, static_cast<int64_t>(i));
            CHECK(close(got, want, "binary"));
        }
    }
}

TEST_CASE(activations_and_softmax_match_reference) {
    const auto x = rand_vec(4 * 1000, -8.0f, 8.0f);
    for (Activation a : {Activation::None, Activation::Relu, Activation::Relu6, Activation::LeakyRelu,
                         Activation::Sigmoid, Activation::Tanh, Activation::Clip, Activation::HardSigmoid,
                         Activation::HardSwish, Activation::Silu}) {
        Epilogue e;
        e.act = a;
        e.alpha = a == Activation::Clip ? -0.5f : 0.2f;
        e.beta = 0.25f;
        std::vector<float> want(x.size()), got(x.size());
        activation_apply_generic(x.data(), want.data(), static_cast<int64_t>(x.size()), e);
        for (size_t i = 0; i < x.size(); ++i) got[i] = activate_hd(x[i], e.act, e.alpha, e.beta);
        CHECK(close(got, want, "activation"));
    }
    for (auto dims : {std::vector<int64_t>{4, 1000, 1}, {2, 5, 12}, {3, 1, 7}}) {
        const int64_t outer = dims[0], axis = dims[1], inner = dims[2];
        const auto v = rand_vec(outer * axis * inner, -5.0f, 5.0f);
        std::vector<float> want(v.size()), got(v.size());
        softmax_generic(v.data(), want.data(), outer, axis, inner);
        for (int64_t t = 0; t < outer * inner; ++t) softmax_column(v.data(), got.data(), axis, inner, t);
        CHECK(close(got, want, "softmax"));
    }
}

TEST_CASE(batchnorm_matches_folded_affine) {
    const int64_t outer = 2, C = 6, inner = 15;
    const auto x = rand_vec(outer * C * inner), g = rand_vec(C), b = rand_vec(C), m = rand_vec(C);
    const auto v = rand_vec(C, 0.5f, 1.5f);
    const float eps = 1e-3f;
    std::vector<float> scale(C), shift(C), want(x.size()), got(x.size());
    for (int64_t c = 0; c < C; ++c) {  // the fold BatchNormOp::prepare does
        scale[static_cast<size_t>(c)] = g[static_cast<size_t>(c)] / std::sqrt(v[static_cast<size_t>(c)] + eps);
        shift[static_cast<size_t>(c)] = b[static_cast<size_t>(c)] - m[static_cast<size_t>(c)] * scale[static_cast<size_t>(c)];
    }
    channel_affine(x.data(), scale.data(), shift.data(), outer, C, inner, want.data());
    for (size_t i = 0; i < x.size(); ++i) {
        got[i] = batchnorm_at(x.data(), g.data(), b.data(), m.data(), v.data(), eps, C, inner, static_cast<int64_t>(i));
    }
    CHECK(close(got, want, "batchnorm"));
}

TEST_CASE(transpose_pad_mean_match_reference) {
    const Shape s = {2, 3, 4, 5};
    const auto x = rand_vec(shape_numel(s));
    for (auto perm : {std::vector<int64_t>{0, 2, 3, 1}, {3, 2, 1, 0}, {1, 0, 2, 3}}) {
        std::vector<float> want(x.size()), got(x.size());
        transpose(x.data(), s, perm, want.data());
        const TransposeArgs t = transpose_args(s, perm);
        CHECK(t.total == static_cast<int64_t>(x.size()));
        for (size_t i = 0; i < got.size(); ++i) got[i] = transpose_at(x.data(), t, static_cast<int64_t>(i));
        CHECK(close(got, want, "transpose"));
    }
    for (PadMode mode : {PadMode::Constant, PadMode::Reflect, PadMode::Edge}) {
        const std::vector<int64_t> begin = {0, 2, 1, 3}, end = {1, 1, 3, 4};
        const PadArgs a = pad_args(s, begin, end, mode, 0.5f);
        std::vector<float> want(static_cast<size_t>(a.total)), got(want.size());
        pad(x.data(), s, begin, end, mode, 0.5f, want.data());
        for (size_t i = 0; i < got.size(); ++i) got[i] = pad_at(x.data(), a, static_cast<int64_t>(i));
        CHECK(close(got, want, "pad"));
    }
    for (auto axes : {std::vector<int64_t>{2, 3}, {0, 1, 2, 3}, {1}, {0, 2}}) {
        const MeanArgs m = mean_args(s, axes);
        std::vector<float> want(static_cast<size_t>(m.total)), got(want.size());
        reduce_mean(x.data(), s, axes, want.data());
        for (size_t i = 0; i < got.size(); ++i) got[i] = mean_at(x.data(), m, static_cast<int64_t>(i));
        CHECK(close(got, want, "mean"));
    }
}

TEST_MAIN()
