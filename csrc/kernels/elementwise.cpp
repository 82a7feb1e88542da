// SPDX-License-Identifier: Apache-2.0
#include "kernels/elementwise.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/dispatch.h"

namespace pyengine {

void binary_generic(BinaryOp op, const float* a, int64_t as, const float* b, int64_t bs, float* y,
                    int64_t n) {
    switch (op) {
        case BinaryOp::Add: for (int64_t i = 0; i < n; ++i) y[i] = a[i * as] + b[i * bs]; break;
        case BinaryOp::Sub: for (int64_t i = 0; i < n; ++i) y[i] = a[i * as] - b[i * bs]; break;
        case BinaryOp::Mul: for (int64_t i = 0; i < n; ++i) y[i] = a[i * as] * b[i * bs]; break;
        case BinaryOp::Div: for (int64_t i = 0; i < n; ++i) y[i] = a[i * as] / b[i * bs]; break;
    }
}

void binary_broadcast(BinaryOp op, const float* a, const Shape& a_shape, const float* b,
                      const Shape& b_shape, float* y, const Shape& out) {
    const size_t rank = out.size();
    // Right-align both inputs to the output rank; stride 0 where a dimension broadcasts.
    std::vector<int64_t> as(rank, 0), bs(rank, 0);
    auto strides = [&](const Shape& s, std::vector<int64_t>& st) {
        int64_t step = 1;
        for (size_t i = 0; i < s.size(); ++i) {
            const size_t d = s.size() - 1 - i, o = rank - 1 - i;
            st[o] = s[d] == 1 ? 0 : step;
            step *= s[d];
        }
    };
    strides(a_shape, as);
    strides(b_shape, bs);
    const int64_t total = shape_numel(out);
    if (total == 0) return;
    const auto& k = kernels();
    if (rank == 0) { k.binary(op, a, 0, b, 0, y, 1); return; }
    // The innermost dimension is one contiguous run; loop over the outer index with a counter.
    const int64_t inner = out[rank - 1];
    const int64_t a_step = as[rank - 1] ? 1 : 0, b_step = bs[rank - 1] ? 1 : 0;
    std::vector<int64_t> idx(rank, 0);
    int64_t a_off = 0, b_off = 0;
    for (int64_t base = 0; base < total; base += inner) {
        k.binary(op, a + a_off, a_step, b + b_off, b_step, y + base, inner);
        for (size_t d = rank - 1; d-- > 0;) {
            if (++idx[d] < out[d]) { a_off += as[d]; b_off += bs[d]; break; }
            a_off -= as[d] * (out[d] - 1);
            b_off -= bs[d] * (out[d] - 1);
            idx[d] = 0;
        }
    }
}

void softmax_generic(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner) {
    for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; ++i) {
            const float* xp = x + o * axis * inner + i;
            float* yp = y + o * axis * inner + i;
            float m = xp[0];
            for (int64_t a = 1; a < axis; ++a) m = std::max(m, xp[a * inner]);
            float s = 0.0f;
            for (int64_t a = 0; a < axis; ++a) {
                const float e = std::exp(xp[a * inner] - m);
                yp[a * inner] = e;
                s += e;
            }
            const float inv = 1.0f / s;
            for (int64_t a = 0; a < axis; ++a) yp[a * inner] *= inv;
        }
    }
}

void softmax(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner) {
    kernels().softmax(x, y, outer, axis, inner);
}

}  // namespace pyengine
