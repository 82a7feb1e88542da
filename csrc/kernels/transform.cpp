// SPDX-License-Identifier: Apache-2.0
#include "kernels/transform.h"

#include <cstring>

namespace pyengine {

namespace {

std::vector<int64_t> strides_of(const Shape& s) {
    std::vector<int64_t> st(s.size(), 1);
    for (size_t i = s.size(); i-- > 1;) st[i - 1] = st[i] * s[i];
    return st;
}

// Calls f(out_index, idx) for each element of `shape` in row-major order.
template <typename F>
void for_each_index(const Shape& shape, F f) {
    const int64_t total = shape_numel(shape);
    std::vector<int64_t> idx(shape.size(), 0);
    for (int64_t i = 0; i < total; ++i) {
        f(i, idx);
        for (size_t d = shape.size(); d-- > 0;) {
            if (++idx[d] < shape[d]) break;
            idx[d] = 0;
        }
    }
}

}  // namespace

void transpose(const float* x, const Shape& x_shape, const std::vector<int64_t>& perm, float* y) {
    const auto xs = strides_of(x_shape);
    Shape y_shape(perm.size());
    std::vector<int64_t> step(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) {
        y_shape[i] = x_shape[static_cast<size_t>(perm[i])];
        step[i] = xs[static_cast<size_t>(perm[i])];
    }
    for_each_index(y_shape, [&](int64_t i, const std::vector<int64_t>& idx) {
        int64_t off = 0;
        for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * step[d];
        y[i] = x[off];
    });
}

void concat(const std::vector<const float*>& xs, const std::vector<int64_t>& axis_sizes,
            int64_t outer, int64_t inner, float* y) {
    int64_t total = 0;
    for (int64_t s : axis_sizes) total += s;
    for (int64_t o = 0; o < outer; ++o) {
        float* dst = y + o * total * inner;
        for (size_t i = 0; i < xs.size(); ++i) {
            const int64_t n = axis_sizes[i] * inner;
            std::memcpy(dst, xs[i] + o * n, static_cast<size_t>(n) * sizeof(float));
            dst += n;
        }
    }
}

void pad(const float* x, const Shape& x_shape, const std::vector<int64_t>& begin,
         const std::vector<int64_t>& end, PadMode mode, float value, float* y) {
    Shape y_shape(x_shape.size());
    for (size_t d = 0; d < x_shape.size(); ++d) y_shape[d] = x_shape[d] + begin[d] + end[d];
    const auto xs = strides_of(x_shape);
    for_each_index(y_shape, [&](int64_t i, const std::vector<int64_t>& idx) {
        int64_t off = 0;
        for (size_t d = 0; d < idx.size(); ++d) {
            int64_t s = idx[d] - begin[d];
            const int64_t n = x_shape[d];
            if (s < 0 || s >= n) {
                if (mode == PadMode::Constant || n == 0) { y[i] = value; return; }
                if (mode == PadMode::Edge) {
                    s = s < 0 ? 0 : n - 1;
                } else {  // reflect without repeating the edge; the op checks pads < n
                    const int64_t period = 2 * (n - 1);
                    s = period == 0 ? 0 : ((s % period) + period) % period;
                    if (s >= n) s = period - s;
                }
            }
            off += s * xs[d];
        }
        y[i] = x[off];
    });
}

void reduce_mean(const float* x, const Shape& x_shape, const std::vector<int64_t>& axes, float* y) {
    Shape out = x_shape;
    int64_t count = 1;
    for (int64_t a : axes) {
        count *= x_shape[static_cast<size_t>(a)];
        out[static_cast<size_t>(a)] = 1;
    }
    const auto os = strides_of(out);
    const int64_t n_out = shape_numel(out);
    for (int64_t i = 0; i < n_out; ++i) y[i] = 0.0f;
    for_each_index(x_shape, [&](int64_t i, const std::vector<int64_t>& idx) {
        int64_t off = 0;
        for (size_t d = 0; d < idx.size(); ++d) if (out[d] != 1 || x_shape[d] == 1) off += idx[d] * os[d];
        y[off] += x[i];
    });
    const float inv = count > 0 ? 1.0f / static_cast<float>(count) : 0.0f;
    for (int64_t i = 0; i < n_out; ++i) y[i] *= inv;
}

void channel_affine(const float* x, const float* scale, const float* shift, int64_t outer,
                    int64_t channels, int64_t inner, float* y) {
    for (int64_t o = 0; o < outer; ++o) {
        for (int64_t c = 0; c < channels; ++c) {
            const float s = scale[c], t = shift[c];
            const int64_t base = (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; ++i) y[base + i] = x[base + i] * s + t;
        }
    }
}

}  // namespace pyengine
