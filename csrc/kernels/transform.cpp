// SPDX-License-Identifier: Apache-2.0
#include "kernels/transform.h"

#include "common.h"

#include <algorithm>
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
    // Size-1 dimensions dropped and input dimensions that stay neighbours merged: attention's
    // [N, S, heads, d] -> [N, heads, S, d] becomes [S, heads, d] -> [heads, S, d] with rows of d.
    Shape dims;                  // merged input dimensions
    std::vector<int64_t> order;  // merged perm: output dimension i reads merged input order[i]
    {
        std::vector<int64_t> group(x_shape.size(), -1);  // input dim -> merged dim
        int64_t prev = -2;
        for (int64_t p : perm) {
            const size_t d = static_cast<size_t>(p);
            if (x_shape[d] == 1) continue;
            if (p == prev + 1 && group[static_cast<size_t>(prev)] >= 0) {
                group[d] = group[static_cast<size_t>(prev)];
            } else {
                group[d] = static_cast<int64_t>(order.size());
                order.push_back(static_cast<int64_t>(order.size()));
            }
            prev = p;
        }
        // Merged dims in input order, and each one's size.
        std::vector<int64_t> first(order.size(), -1);
        Shape size(order.size(), 1);
        for (size_t d = 0; d < x_shape.size(); ++d) {
            if (group[d] < 0) continue;
            const size_t g = static_cast<size_t>(group[d]);
            if (first[g] < 0) first[g] = static_cast<int64_t>(d);
            size[g] *= x_shape[d];
        }
        std::vector<int64_t> by_input(order.size());  // merged dims sorted by first input dim
        for (size_t g = 0; g < order.size(); ++g) by_input[g] = static_cast<int64_t>(g);
        std::sort(by_input.begin(), by_input.end(), [&](int64_t a, int64_t b) {
            return first[static_cast<size_t>(a)] < first[static_cast<size_t>(b)];
        });
        std::vector<int64_t> rank_of(order.size());
        for (size_t r = 0; r < by_input.size(); ++r) rank_of[static_cast<size_t>(by_input[r])] = static_cast<int64_t>(r);
        dims.resize(order.size());
        for (size_t g = 0; g < order.size(); ++g) dims[static_cast<size_t>(rank_of[g])] = size[g];
        for (size_t i = 0; i < order.size(); ++i) order[i] = rank_of[i];
    }
    const int64_t total = shape_numel(x_shape);
    const size_t r = dims.size();
    if (r <= 1) {  // nothing moves
        std::memcpy(y, x, static_cast<size_t>(total) * sizeof(float));
        return;
    }
    const auto xs = strides_of(dims);
    Shape ys(r);
    std::vector<int64_t> step(r);
    for (size_t i = 0; i < r; ++i) {
        ys[i] = dims[static_cast<size_t>(order[i])];
        step[i] = xs[static_cast<size_t>(order[i])];
    }
    // Rows of the last output dimension; an odometer over the others keeps the input offset.
    const int64_t inner = ys[r - 1], inner_step = step[r - 1];
    std::vector<int64_t> idx(r - 1, 0);
    int64_t off = 0;
    for (int64_t o = 0; o < total; o += inner) {
        float* dst = y + o;
        if (inner_step == 1) {
            std::memcpy(dst, x + off, static_cast<size_t>(inner) * sizeof(float));
        } else {
            const float* src = x + off;
            for (int64_t j = 0; j < inner; ++j) dst[j] = src[j * inner_step];
        }
        for (size_t d = r - 1; d-- > 0;) {
            off += step[d];
            if (++idx[d] < ys[d]) break;
            off -= step[d] * ys[d];
            idx[d] = 0;
        }
    }
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

namespace {

template <class T>
void pad_typed(const T* x, const Shape& x_shape, const std::vector<int64_t>& begin, const std::vector<int64_t>& end,
               PadMode mode, T value, T* y) {
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
                } else if (mode == PadMode::Wrap) {
                    s = ((s % n) + n) % n;
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

}  // namespace

void pad(const float* x, const Shape& x_shape, const std::vector<int64_t>& begin,
         const std::vector<int64_t>& end, PadMode mode, float value, float* y) {
    pad_typed(x, x_shape, begin, end, mode, value, y);
}

void pad_bytes(const void* x, size_t elem, const Shape& x_shape, const std::vector<int64_t>& begin,
               const std::vector<int64_t>& end, PadMode mode, const void* value, void* y) {
    // Padding only moves elements: any type of the same width pads the same.
    auto run = [&](auto zero) {
        using T = decltype(zero);
        T v;
        std::memcpy(&v, value, sizeof v);
        pad_typed(static_cast<const T*>(x), x_shape, begin, end, mode, v, static_cast<T*>(y));
    };
    switch (elem) {
        case 1: run(uint8_t{}); break;
        case 2: run(uint16_t{}); break;
        case 4: run(uint32_t{}); break;
        case 8: run(uint64_t{}); break;
        default: throw InvalidArgument(str("pad of ", elem, "-byte elements"));
    }
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
