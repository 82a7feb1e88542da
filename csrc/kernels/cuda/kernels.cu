// SPDX-License-Identifier: Apache-2.0
#include "kernels/cuda/kernels.cuh"

#include <stdexcept>
#include <string>

namespace pyengine::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

unsigned blocks_for(int64_t n) {
    const int64_t b = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b));
}

void check_launch(const char* kernel) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA kernel ") + kernel + " failed to launch: " + cudaGetErrorString(e));
}

#define GRID_STRIDE(i, n) \
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__device__ __forceinline__ float activate_dev(float v, Activation act, float alpha, float beta) {
    switch (act) {
        case Activation::None: return v;
        case Activation::Relu: return v > 0.0f ? v : 0.0f;
        case Activation::Relu6: return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
        case Activation::LeakyRelu: return v >= 0.0f ? v : v * alpha;
        case Activation::Sigmoid: return 1.0f / (1.0f + expf(-v));
        case Activation::Tanh: return tanhf(v);
        case Activation::Clip: return v < alpha ? alpha : (v > beta ? beta : v);
    }
    return v;
}

Dims dims_of(const Shape& s) {
    Dims d;
    d.rank = static_cast<int>(s.size());
    for (size_t i = 0; i < s.size(); ++i) d.d[i] = s[i];
    return d;
}

// Row-major strides of `s`.
Dims strides_of(const Shape& s) {
    Dims st;
    st.rank = static_cast<int>(s.size());
    int64_t step = 1;
    for (size_t i = s.size(); i-- > 0;) {
        st.d[i] = step;
        step *= s[i];
    }
    return st;
}

int64_t numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

// ---- kernels ----

__global__ void bias_act_kernel(float* y, int64_t n, const float* bias, int64_t div, int64_t mod,
                                Activation act, float alpha, float beta) {
    GRID_STRIDE(i, n) {
        float v = y[i];
        if (bias) v += bias[(i / div) % mod];
        y[i] = activate_dev(v, act, alpha, beta);
    }
}

__global__ void conv2d_direct_kernel(Conv2DParams p, const float* x, const float* w, float* y, int64_t total) {
    const int64_t cg = p.C / p.groups, og = p.O / p.groups;
    const bool nhwc = p.layout == Layout::NHWC;
    GRID_STRIDE(i, total) {
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
                    const int64_t xi = nhwc ? ((n * p.H + ih) * p.W + iw) * p.C + c
                                            : ((n * p.C + c) * p.H + ih) * p.W + iw;
                    s += x[xi] * wo[(ci * p.KH + kh) * p.KW + kw];
                }
            }
        }
        const float b = p.ep.bias ? p.ep.bias[o] : 0.0f;
        y[i] = activate_dev(s + b, p.ep.act, p.ep.alpha, p.ep.beta);
    }
}

__global__ void im2col_kernel(Conv2DParams p, const float* x, float* col, int64_t total) {
    const int64_t ckk = p.C * p.KH * p.KW, ohw = p.OH * p.OW;
    const bool nhwc = p.layout == Layout::NHWC;
    GRID_STRIDE(i, total) {
        int64_t n, r, q;  // image, row of the patch (c, kh, kw), output pixel
        if (nhwc) {       // col[(n * ohw + q) * ckk + r]
            r = i % ckk;
            const int64_t t = i / ckk;
            q = t % ohw;
            n = t / ohw;
        } else {          // col[(n * ckk + r) * ohw + q]
            q = i % ohw;
            const int64_t t = i / ohw;
            r = t % ckk;
            n = t / ckk;
        }
        const int64_t kw = r % p.KW, kh = (r / p.KW) % p.KH, c = r / (p.KW * p.KH);
        const int64_t oh = q / p.OW, ow = q % p.OW;
        const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
        const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
        float v = 0.0f;
        if (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W) {
            v = x[nhwc ? ((n * p.H + ih) * p.W + iw) * p.C + c : ((n * p.C + c) * p.H + ih) * p.W + iw];
        }
        col[i] = v;
    }
}

__global__ void pool2d_kernel(Pool2DParams p, const float* x, float* y, int64_t total) {
    const bool nhwc = p.layout == Layout::NHWC;
    GRID_STRIDE(i, total) {
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
        const int64_t h1 = min(h0 + p.KH, p.H + p.pad_bottom);
        const int64_t hs = max(h0, int64_t(0)), he = min(h1, p.H);
        const int64_t w0 = ow * p.stride_w - p.pad_left;
        const int64_t w1 = min(w0 + p.KW, p.W + p.pad_right);
        const int64_t ws = max(w0, int64_t(0)), we = min(w1, p.W);
        float acc = p.is_max ? -INFINITY : 0.0f;
        for (int64_t h = hs; h < he; ++h) {
            for (int64_t w = ws; w < we; ++w) {
                const float v = nhwc ? x[((n * p.H + h) * p.W + w) * p.C + c] : x[((n * p.C + c) * p.H + h) * p.W + w];
                acc = p.is_max ? fmaxf(acc, v) : acc + v;
            }
        }
        if (!p.is_max) {
            const int64_t count = p.count_include_pad ? (h1 - h0) * (w1 - w0) : (he - hs) * (we - ws);
            acc = count > 0 ? acc / static_cast<float>(count) : 0.0f;
        } else if (he <= hs || we <= ws) {
            acc = 0.0f;  // a window lying wholly in the padding, as on the CPU
        }
        y[i] = acc;
    }
}

__global__ void binary_kernel(BinaryOp op, const float* a, Dims as, const float* b, Dims bs, float* y,
                              Dims out, int64_t total) {
    GRID_STRIDE(i, total) {
        int64_t r = i, ao = 0, bo = 0;
        for (int d = out.rank - 1; d >= 0; --d) {
            const int64_t k = r % out.d[d];
            r /= out.d[d];
            ao += k * as.d[d];
            bo += k * bs.d[d];
        }
        const float u = a[ao], v = b[bo];
        float s = 0.0f;
        switch (op) {
            case BinaryOp::Add: s = u + v; break;
            case BinaryOp::Sub: s = u - v; break;
            case BinaryOp::Mul: s = u * v; break;
            case BinaryOp::Div: s = u / v; break;
        }
        y[i] = s;
    }
}

__global__ void unary_kernel(const float* x, float* y, int64_t n, Activation act, float alpha, float beta) {
    GRID_STRIDE(i, n) y[i] = activate_dev(x[i], act, alpha, beta);
}

// One thread per (outer, inner) column, three passes in the CPU kernel's order.
__global__ void softmax_kernel(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner) {
    GRID_STRIDE(t, outer * inner) {
        const int64_t o = t / inner, i = t % inner;
        const float* xp = x + o * axis * inner + i;
        float* yp = y + o * axis * inner + i;
        float m = xp[0];
        for (int64_t a = 1; a < axis; ++a) m = fmaxf(m, xp[a * inner]);
        float s = 0.0f;
        for (int64_t a = 0; a < axis; ++a) {
            const float e = expf(xp[a * inner] - m);
            yp[a * inner] = e;
            s += e;
        }
        const float inv = 1.0f / s;
        for (int64_t a = 0; a < axis; ++a) yp[a * inner] *= inv;
    }
}

__global__ void batchnorm_kernel(const float* x, const float* g, const float* b, const float* m, const float* v,
                                 float eps, int64_t channels, int64_t inner, float* y, int64_t total) {
    GRID_STRIDE(i, total) {
        const int64_t c = (i / inner) % channels;
        const float s = g[c] / sqrtf(v[c] + eps);
        y[i] = x[i] * s + (b[c] - m[c] * s);
    }
}

__global__ void transpose_kernel(const float* x, Dims y_shape, Dims step, float* y, int64_t total) {
    GRID_STRIDE(i, total) {
        int64_t r = i, off = 0;
        for (int d = y_shape.rank - 1; d >= 0; --d) {
            off += (r % y_shape.d[d]) * step.d[d];
            r /= y_shape.d[d];
        }
        y[i] = x[off];
    }
}

__global__ void pad_kernel(const float* x, Dims x_shape, Dims x_stride, Dims y_shape, Dims begin, PadMode mode,
                           float value, float* y, int64_t total) {
    GRID_STRIDE(i, total) {
        int64_t r = i, off = 0;
        bool fill = false;
        for (int d = y_shape.rank - 1; d >= 0; --d) {
            int64_t s = r % y_shape.d[d] - begin.d[d];
            r /= y_shape.d[d];
            const int64_t n = x_shape.d[d];
            if (s < 0 || s >= n) {
                if (mode == PadMode::Constant || n == 0) {
                    fill = true;
                    break;
                }
                if (mode == PadMode::Edge) {
                    s = s < 0 ? 0 : n - 1;
                } else {  // reflect without repeating the edge
                    const int64_t period = 2 * (n - 1);
                    s = period == 0 ? 0 : ((s % period) + period) % period;
                    if (s >= n) s = period - s;
                }
            }
            off += s * x_stride.d[d];
        }
        y[i] = fill ? value : x[off];
    }
}

// One thread per output element; reduced elements summed in the row-major order of the input.
__global__ void mean_kernel(const float* x, Dims kept, Dims kept_stride, Dims red, Dims red_stride,
                            int64_t count, float inv, float* y, int64_t total) {
    GRID_STRIDE(i, total) {
        int64_t r = i, base = 0;
        for (int d = kept.rank - 1; d >= 0; --d) {
            base += (r % kept.d[d]) * kept_stride.d[d];
            r /= kept.d[d];
        }
        float s = 0.0f;
        for (int64_t k = 0; k < count; ++k) {
            int64_t q = k, off = base;
            for (int d = red.rank - 1; d >= 0; --d) {
                off += (q % red.d[d]) * red_stride.d[d];
                q /= red.d[d];
            }
            s += x[off];
        }
        y[i] = s * inv;
    }
}

}  // namespace

// ---- launchers ----

void bias_act(float* y, int64_t n, const float* bias, int64_t bias_div, int64_t bias_mod, const Epilogue& ep,
              cudaStream_t stream) {
    if (n == 0 || (bias == nullptr && ep.act == Activation::None)) return;
    bias_act_kernel<<<blocks_for(n), kThreads, 0, stream>>>(y, n, bias, bias_div, bias_mod, ep.act, ep.alpha, ep.beta);
    check_launch("bias_act");
}

void conv2d_direct(const Conv2DParams& p, const float* x, const float* w, float* y, cudaStream_t stream) {
    const int64_t total = p.N * p.O * p.OH * p.OW;
    if (total == 0) return;
    conv2d_direct_kernel<<<blocks_for(total), kThreads, 0, stream>>>(p, x, w, y, total);
    check_launch("conv2d_direct");
}

void im2col(const Conv2DParams& p, const float* x, float* col, cudaStream_t stream) {
    const int64_t total = p.N * p.C * p.KH * p.KW * p.OH * p.OW;
    if (total == 0) return;
    im2col_kernel<<<blocks_for(total), kThreads, 0, stream>>>(p, x, col, total);
    check_launch("im2col");
}

void pool2d(const Pool2DParams& p, const float* x, float* y, cudaStream_t stream) {
    const int64_t total = p.N * p.C * p.OH * p.OW;
    if (total == 0) return;
    pool2d_kernel<<<blocks_for(total), kThreads, 0, stream>>>(p, x, y, total);
    check_launch("pool2d");
}

void binary(BinaryOp op, const float* a, const Shape& a_shape, const float* b, const Shape& b_shape, float* y,
            const Shape& out, cudaStream_t stream) {
    const int64_t total = numel(out);
    if (total == 0) return;
    const size_t rank = out.size();
    // Right-align both inputs to the output rank; stride 0 where a dimension broadcasts.
    auto strides = [&](const Shape& s) {
        Dims st;
        st.rank = static_cast<int>(rank);
        int64_t step = 1;
        for (size_t i = 0; i < s.size(); ++i) {
            const size_t d = s.size() - 1 - i, o = rank - 1 - i;
            st.d[o] = s[d] == 1 ? 0 : step;
            step *= s[d];
        }
        return st;
    };
    binary_kernel<<<blocks_for(total), kThreads, 0, stream>>>(op, a, strides(a_shape), b, strides(b_shape), y,
                                                              dims_of(out), total);
    check_launch("binary");
}

void unary(const float* x, float* y, int64_t n, const Epilogue& ep, cudaStream_t stream) {
    if (n == 0) return;
    unary_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, y, n, ep.act, ep.alpha, ep.beta);
    check_launch("unary");
}

void softmax(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner, cudaStream_t stream) {
    if (outer * inner == 0 || axis == 0) return;
    softmax_kernel<<<blocks_for(outer * inner), kThreads, 0, stream>>>(x, y, outer, axis, inner);
    check_launch("softmax");
}

void batchnorm(const float* x, const float* scale, const float* bias, const float* mean, const float* var, float eps,
               int64_t outer, int64_t channels, int64_t inner, float* y, cudaStream_t stream) {
    const int64_t total = outer * channels * inner;
    if (total == 0) return;
    batchnorm_kernel<<<blocks_for(total), kThreads, 0, stream>>>(x, scale, bias, mean, var, eps, channels, inner, y, total);
    check_launch("batchnorm");
}

void transpose(const float* x, const Shape& x_shape, const std::vector<int64_t>& perm, float* y, cudaStream_t stream) {
    const Dims xs = strides_of(x_shape);
    Shape y_shape(perm.size());
    Dims step;
    step.rank = static_cast<int>(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) {
        y_shape[i] = x_shape[static_cast<size_t>(perm[i])];
        step.d[i] = xs.d[perm[i]];
    }
    const int64_t total = numel(y_shape);
    if (total == 0) return;
    transpose_kernel<<<blocks_for(total), kThreads, 0, stream>>>(x, dims_of(y_shape), step, y, total);
    check_launch("transpose");
}

void pad(const float* x, const Shape& x_shape, const std::vector<int64_t>& begin, const std::vector<int64_t>& end,
         PadMode mode, float value, float* y, cudaStream_t stream) {
    Shape y_shape(x_shape.size());
    for (size_t d = 0; d < x_shape.size(); ++d) y_shape[d] = x_shape[d] + begin[d] + end[d];
    const int64_t total = numel(y_shape);
    if (total == 0) return;
    Dims b;
    b.rank = static_cast<int>(begin.size());
    for (size_t d = 0; d < begin.size(); ++d) b.d[d] = begin[d];
    pad_kernel<<<blocks_for(total), kThreads, 0, stream>>>(x, dims_of(x_shape), strides_of(x_shape), dims_of(y_shape),
                                                           b, mode, value, y, total);
    check_launch("pad");
}

void reduce_mean(const float* x, const Shape& x_shape, const std::vector<int64_t>& axes, float* y, cudaStream_t stream) {
    const Dims xs = strides_of(x_shape);
    Dims kept, kept_stride, red, red_stride;
    int64_t count = 1, total = 1;
    for (size_t d = 0; d < x_shape.size(); ++d) {
        bool reduced = false;
        for (int64_t a : axes) reduced = reduced || a == static_cast<int64_t>(d);
        if (reduced) {
            red.d[red.rank] = x_shape[d];
            red_stride.d[red.rank++] = xs.d[d];
            count *= x_shape[d];
        } else {
            kept.d[kept.rank] = x_shape[d];
            kept_stride.d[kept.rank++] = xs.d[d];
            total *= x_shape[d];
        }
    }
    if (total == 0) return;
    const float inv = count > 0 ? 1.0f / static_cast<float>(count) : 0.0f;
    mean_kernel<<<blocks_for(total), kThreads, 0, stream>>>(x, kept, kept_stride, red, red_stride, count, inv, y, total);
    check_launch("reduce_mean");
}

}  // namespace pyengine::cuda
