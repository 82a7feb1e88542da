// SPDX-License-Identifier: Apache-2.0
// Numpy broadcasting for the generic (any-rank) elementwise ops: the output shape, per-operand
// strides, and an odometer walk over the output.
#pragma once

#include <algorithm>
#include <vector>

#include "common.h"
#include "graph/op.h"

namespace pyengine {

// Row-major strides of `s`, with 0 for the dimensions `s` broadcasts (size 1) into `out`
// (`s` right-aligned against `out`).
inline std::vector<int64_t> broadcast_strides(const Shape& s, const Shape& out) {
    std::vector<int64_t> st(out.size(), 0);
    int64_t stride = 1;
    for (size_t k = 0; k < s.size(); ++k) {
        const size_t i = s.size() - 1 - k, o = out.size() - 1 - k;
        st[o] = s[i] == 1 ? 0 : stride;
        stride *= s[i];
    }
    return st;
}

inline Shape broadcast_shape(const Shape& a, const Shape& b) {
    const size_t rank = std::max(a.size(), b.size());
    Shape out(rank);
    for (size_t i = 0; i < rank; ++i) {
        const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
        const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
        if (da != db && da != 1 && db != 1) {
            shape_error(str("shapes ", shape_str(a), " and ", shape_str(b), " do not broadcast"));
        }
        out[i] = da == 1 ? db : da;
    }
    return out;
}

// Calls f(out_index, offsets) for every element of `out`, walking an odometer; offsets[k] is the
// element of operand k (strides from broadcast_strides).
template <class F>
void for_each_broadcast_n(const Shape& out, const std::vector<std::vector<int64_t>>& strides, F f) {
    const int64_t n = shape_numel(out);
    std::vector<int64_t> idx(out.size(), 0), off(strides.size(), 0);
    for (int64_t e = 0; e < n; ++e) {
        f(e, off.data());
        for (size_t d = out.size(); d-- > 0;) {
            for (size_t k = 0; k < strides.size(); ++k) off[k] += strides[k][d];
            if (++idx[d] < out[d]) break;
            for (size_t k = 0; k < strides.size(); ++k) off[k] -= strides[k][d] * out[d];
            idx[d] = 0;
        }
    }
}

// The two-operand form: f(out_index, a_offset, b_offset).
template <class F>
void for_each_broadcast(const Shape& out, const std::vector<int64_t>& sa, const std::vector<int64_t>& sb, F f) {
    for_each_broadcast_n(out, {sa, sb}, [&](int64_t e, const int64_t* off) { f(e, off[0], off[1]); });
}

}  // namespace pyengine
