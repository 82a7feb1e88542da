// SPDX-License-Identifier: Apache-2.0
// The per-element bodies of the CUDA kernels, and the host-side argument preparation they use.
//
// Plain C++ that nvcc compiles for the device (__host__ __device__) and any C++ compiler
// compiles for the host, so tests/cpp/test_cuda_bodies.cpp checks every kernel's arithmetic
// and indexing against the CPU reference kernels on machines without a GPU or nvcc.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "format/tensor.h"
#include "kernels/activation.h"
#include "kernels/conv2d.h"
#include "kernels/elementwise.h"
#include "kernels/pool.h"
#include "kernels/transform.h"

#ifdef __CUDACC__
#define PYENGINE_HD __host__ __device__ __forceinline__
#else
#define PYENGINE_HD inline
#endif  // __CUDACC__

namespace pyengine::cuda {

// Up to kMaxRank dimensions, passed to kernels by value.
struct Dims {
    int rank = 0;
    int64_t d[kMaxRank] = {};
};

PYENGINE_HD int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
PYENGINE_HD int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

PYENGINE_HD float activate_hd(float v, Activation act, float alpha, float beta) {
    switch (act) {
        case Activation::None: return v;
        case Activation::Relu: return v > 0.0f ? v : 0.0f;
        case Activation::Relu6: return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
        case Activation::LeakyRelu: return v >= 0.0f ? v : v * alpha;
        case Activation::Sigmoid: return 1.0f / (1.0f + expf(-v));
        case Activation::Tanh: return tanhf(v);
        case Activation::Clip: return v < alpha ? alpha : (v > beta ? beta : v);
        case Activation::HardSigmoid:
        case Activation::HardSwish: {
            float t = alpha * v + beta;
            t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
            return act == Activation::HardSwish ? v * t : t;
        }
        case Activation::Silu: return v / (1.0f + expf(-v));
    }
    return v;
}

// act(y[i] + bias[(i / div) % mod]).
PYENGINE_HD float bias_act_at(float y, int64_t i, const float* bias, int64_t div, int64_t mod, Activation act,
                              float alpha, float beta) {
    if (bias) y += bias[(i / div) % mod];
    return activate_hd(y, act, alpha, beta);
}

// Output element i of a direct convolution (any groups, either layout), bias and activation applied.
PYENGINE_HD float conv2d_direct_at(const Conv2DParams& p, const float* x, const float* w, int64_t i) {
    const int64_t cg = p.C / p.groups, og = p.O / p.groups;
    const bool nhwc = p.layout == Layout::NHWC;
    int64_t n, o, oh, ow;
    if (nhwc) {
        o = i % p.O;
        int64_t r = i / p.O;
        ow = r % p.OW;
        r /= p.OW;
        oh = r % p.OH;
        n = r / p.OH;
    } else {
        ow = i % p.OW;
        int64_t r = i / p.OW;
        oh = r % p.OH;
        r /= p.OH;
        o = r % p.O;
        n = r / p.O;
    }
    const int64_t g = o / og;
    const float* wo = w + o * cg * p.KH * p.KW;
    float s = 0.0f;
    for (int64_t ci = 0; ci < cg; ++ci) {
        const int64_t c = g * cg + ci;
        for (int64_t kh = 0; kh < p.KH; ++kh) {
            const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            if (ih < 0 || ih >= p.H) continue;
            for (int64_t kw = 0; kw < p.KW; ++kw) {
                const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
                if (iw < 0 || iw >= p.W) continue;
                const int64_t xi = nhwc ? ((n * p.H + ih) * p.W + iw) * p.C + c : ((n * p.C + c) * p.H + ih) * p.W + iw;
                s += x[xi] * wo[(ci * p.KH + kh) * p.KW + kw];
            }
        }
    }
    const float b = p.ep.bias ? p.ep.bias[o] : 0.0f;
    return activate_hd(s + b, p.ep.act, p.ep.alpha, p.ep.beta);
}

// Element i of the im2col matrix (groups == 1). NCHW: [N][C*KH*KW][OH*OW]; NHWC:
// [N*OH*OW][C*KH*KW]; the patch row order (c, kh, kw) matches OIHW weights.
PYENGINE_HD float im2col_at(const Conv2DParams& p, const float* x, int64_t i) {
    const int64_t ckk = p.C * p.KH * p.KW, ohw = p.OH * p.OW;
    const bool nhwc = p.layout == Layout::NHWC;
    int64_t n, r, q;  // image, patch row, output pixel
    if (nhwc) {
        r = i % ckk;
        const int64_t t = i / ckk;
        q = t % ohw;
        n = t / ohw;
    } else {
        q = i % ohw;
        const int64_t t = i / ohw;
        r = t % ckk;
        n = t / ckk;
    }
    const int64_t kw = r % p.KW, kh = (r / p.KW) % p.KH, c = r / (p.KW * p.KH);
    const int64_t oh = q / p.OW, ow = q % p.OW;
    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
    const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
    if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) return 0.0f;
    return x[nhwc ? ((n * p.H + ih) * p.W + iw) * p.C + c : ((n * p.C + c) * p.H + ih) * p.W + iw];
}

// Output element i of max/average pooling, with the CPU kernel's window and count rules.
PYENGINE_HD float pool2d_at(const Pool2DParams& p, const float* x, int64_t i) {
    const bool nhwc = p.layout == Layout::NHWC;
    int64_t n, c, oh, ow;
    if (nhwc) {
        c = i % p.C;
        int64_t r = i / p.C;
        ow = r % p.OW;
        r /= p.OW;
        oh = r % p.OH;
        n = r / p.OH;
    } else {
        ow = i % p.OW;
        int64_t r = i / p.OW;
        oh = r % p.OH;
        r /= p.OH;
        c = r % p.C;
        n = r / p.C;
    }
    const int64_t h0 = oh * p.stride_h - p.pad_top;
    const int64_t h1 = min64(h0 + p.KH, p.H + p.pad_bottom);
    const int64_t hs = max64(h0, 0), he = min64(h1, p.H);
    const int64_t w0 = ow * p.stride_w - p.pad_left;
    const int64_t w1 = min64(w0 + p.KW, p.W + p.pad_right);
    const int64_t ws = max64(w0, 0), we = min64(w1, p.W);
    float acc = p.is_max ? -INFINITY : 0.0f;
    for (int64_t h = hs; h < he; ++h) {
        for (int64_t w = ws; w < we; ++w) {
            const float v = nhwc ? x[((n * p.H + h) * p.W + w) * p.C + c] : x[((n * p.C + c) * p.H + h) * p.W + w];
            acc = p.is_max ? (v > acc ? v : acc) : acc + v;
        }
    }
    if (!p.is_max) {
        const int64_t count = p.count_include_pad ? (h1 - h0) * (w1 - w0) : (he - hs) * (we - ws);
        return count > 0 ? acc / static_cast<float>(count) : 0.0f;
    }
    return (he <= hs || we <= ws) ? 0.0f : acc;  // a window wholly in the padding gives 0, as on the CPU
}

struct BinaryArgs {
    Dims a_stride, b_stride, out;  // input strides right-aligned to out's rank; 0 where broadcast
};

inline BinaryArgs binary_args(const Shape& a_shape, const Shape& b_shape, const Shape& out) {
    BinaryArgs r;
    const size_t rank = out.size();
    auto strides = [&](const Shape& s, Dims& st) {
        st.rank = static_cast<int>(rank);
        int64_t step = 1;
        for (size_t i = 0; i < s.size(); ++i) {
            const size_t d = s.size() - 1 - i, o = rank - 1 - i;
            st.d[o] = s[d] == 1 ? 0 : step;
            step *= s[d];
        }
    };
    strides(a_shape, r.a_stride);
    strides(b_shape, r.b_stride);
    r.out.rank = static_cast<int>(rank);
    for (size_t i = 0; i < rank; ++i) r.out.d[i] = out[i];
    return r;
}

PYENGINE_HD float binary_at(BinaryOp op, const float* a, const float* b, const BinaryArgs& g, int64_t i) {
    int64_t r = i, ao = 0, bo = 0;
    for (int d = g.out.rank - 1; d >= 0; --d) {
        const int64_t k = r % g.out.d[d];
        r /= g.out.d[d];
        ao += k * g.a_stride.d[d];
        bo += k * g.b_stride.d[d];
    }
    const float u = a[ao], v = b[bo];
    switch (op) {
        case BinaryOp::Add: return u + v;
        case BinaryOp::Sub: return u - v;
        case BinaryOp::Mul: return u * v;
        case BinaryOp::Div: return u / v;
    }
    return 0.0f;
}

// Softmax of column t (of outer * inner) over the middle axis, in the CPU kernel's order.
PYENGINE_HD void softmax_column(const float* x, float* y, int64_t axis, int64_t inner, int64_t t) {
    const int64_t o = t / inner, i = t % inner;
    const float* xp = x + o * axis * inner + i;
    float* yp = y + o * axis * inner + i;
    float m = xp[0];
    for (int64_t a = 1; a < axis; ++a) m = xp[a * inner] > m ? xp[a * inner] : m;
    float s = 0.0f;
    for (int64_t a = 0; a < axis; ++a) {
        const float e = expf(xp[a * inner] - m);
        yp[a * inner] = e;
        s += e;
    }
    const float inv = 1.0f / s;
    for (int64_t a = 0; a < axis; ++a) yp[a * inner] *= inv;
}

// Element i of inference batch norm, folded as the CPU op folds it.
PYENGINE_HD float batchnorm_at(const float* x, const float* g, const float* b, const float* m, const float* v,
                               float eps, int64_t channels, int64_t inner, int64_t i) {
    const int64_t c = (i / inner) % channels;
    const float s = g[c] / sqrtf(v[c] + eps);
    return x[i] * s + (b[c] - m[c] * s);
}

// Element i of LRN across the middle axis of [outer, channels, inner], in the CPU op's order:
// the window's squares summed from its first channel, then x * (bias + alpha / size * sum)^-beta.
PYENGINE_HD float lrn_at(const float* x, int64_t channels, int64_t inner, int64_t size, float alpha, float beta,
                         float bias, int64_t i) {
    const int64_t c = (i / inner) % channels;
    const float* base = x + (i - c * inner);  // channel 0 at this position
    const int64_t lo = (size - 1) / 2, hi = size - 1 - lo;
    float sum = 0.0f;
    for (int64_t j = max64(0, c - lo); j <= min64(channels - 1, c + hi); ++j) sum += base[j * inner] * base[j * inner];
    return x[i] * powf(bias + alpha / static_cast<float>(size) * sum, -beta);
}

struct TransposeArgs {
    Dims y_shape, step;  // step[d]: the input stride of output dimension d
    int64_t total = 0;
};

inline TransposeArgs transpose_args(const Shape& x_shape, const std::vector<int64_t>& perm) {
    TransposeArgs t;
    std::vector<int64_t> xs(x_shape.size(), 1);
    for (size_t i = x_shape.size(); i-- > 1;) xs[i - 1] = xs[i] * x_shape[i];
    t.y_shape.rank = t.step.rank = static_cast<int>(perm.size());
    t.total = 1;
    for (size_t i = 0; i < perm.size(); ++i) {
        t.y_shape.d[i] = x_shape[static_cast<size_t>(perm[i])];
        t.step.d[i] = xs[static_cast<size_t>(perm[i])];
        t.total *= t.y_shape.d[i];
    }
    return t;
}

PYENGINE_HD float transpose_at(const float* x, const TransposeArgs& t, int64_t i) {
    int64_t r = i, off = 0;
    for (int d = t.y_shape.rank - 1; d >= 0; --d) {
        off += (r % t.y_shape.d[d]) * t.step.d[d];
        r /= t.y_shape.d[d];
    }
    return x[off];
}

struct PadArgs {
    Dims x_shape, x_stride, y_shape, begin;
    PadMode mode = PadMode::Constant;
    float value = 0.0f;
    int64_t total = 0;
};

inline PadArgs pad_args(const Shape& x_shape, const std::vector<int64_t>& begin, const std::vector<int64_t>& end,
                        PadMode mode, float value) {
    PadArgs a;
    const int rank = static_cast<int>(x_shape.size());
    a.x_shape.rank = a.x_stride.rank = a.y_shape.rank = a.begin.rank = rank;
    a.mode = mode;
    a.value = value;
    a.total = 1;
    int64_t step = 1;
    for (int d = rank - 1; d >= 0; --d) {
        const size_t u = static_cast<size_t>(d);
        a.x_shape.d[d] = x_shape[u];
        a.x_stride.d[d] = step;
        step *= x_shape[u];
        a.begin.d[d] = begin[u];
        a.y_shape.d[d] = x_shape[u] + begin[u] + end[u];
        a.total *= a.y_shape.d[d];
    }
    return a;
}

PYENGINE_HD float pad_at(const float* x, const PadArgs& a, int64_t i) {
    int64_t r = i, off = 0;
    for (int d = a.y_shape.rank - 1; d >= 0; --d) {
        int64_t s = r % a.y_shape.d[d] - a.begin.d[d];
        r /= a.y_shape.d[d];
        const int64_t n = a.x_shape.d[d];
        if (s < 0 || s >= n) {
            if (a.mode == PadMode::Constant || n == 0) return a.value;
            if (a.mode == PadMode::Edge) {
                s = s < 0 ? 0 : n - 1;
            } else {  // reflect without repeating the edge
                const int64_t period = 2 * (n - 1);
                s = period == 0 ? 0 : ((s % period) + period) % period;
                if (s >= n) s = period - s;
            }
        }
        off += s * a.x_stride.d[d];
    }
    return x[off];
}

struct MeanArgs {
    Dims kept, kept_stride, red, red_stride;  // kept and reduced dimensions, input strides
    int64_t count = 1, total = 1;
    float inv = 0.0f;
};

inline MeanArgs mean_args(const Shape& x_shape, const std::vector<int64_t>& axes) {
    MeanArgs m;
    std::vector<int64_t> xs(x_shape.size(), 1);
    for (size_t i = x_shape.size(); i-- > 1;) xs[i - 1] = xs[i] * x_shape[i];
    for (size_t d = 0; d < x_shape.size(); ++d) {
        bool reduced = false;
        for (int64_t a : axes) reduced = reduced || a == static_cast<int64_t>(d);
        if (reduced) {
            m.red.d[m.red.rank] = x_shape[d];
            m.red_stride.d[m.red.rank++] = xs[d];
            m.count *= x_shape[d];
        } else {
            m.kept.d[m.kept.rank] = x_shape[d];
            m.kept_stride.d[m.kept.rank++] = xs[d];
            m.total *= x_shape[d];
        }
    }
    m.inv = m.count > 0 ? 1.0f / static_cast<float>(m.count) : 0.0f;
    return m;
}

// Output element i: the reduced elements summed in the input's row-major order, times 1/count.
PYENGINE_HD float mean_at(const float* x, const MeanArgs& m, int64_t i) {
    int64_t r = i, base = 0;
    for (int d = m.kept.rank - 1; d >= 0; --d) {
        base += (r % m.kept.d[d]) * m.kept_stride.d[d];
        r /= m.kept.d[d];
    }
    float s = 0.0f;
    for (int64_t k = 0; k < m.count; ++k) {
        int64_t q = k, off = base;
        for (int d = m.red.rank - 1; d >= 0; --d) {
            off += (q % m.red.d[d]) * m.red_stride.d[d];
            q /= m.red.d[d];
        }
        s += x[off];
    }
    return s * m.inv;
}

}  // namespace pyengine::cuda
