// SPDX-License-Identifier: Apache-2.0
#include "kernels/bytes.h"

#include <cstring>

namespace pyengine {

void transpose_bytes(const void* x, size_t elem, const Shape& s, const std::vector<int64_t>& perm, void* y) {
    const size_t r = s.size();
    std::vector<int64_t> in_stride(r, 1), out_shape(r), step(r);
    for (size_t i = r; i-- > 1;) in_stride[i - 1] = in_stride[i] * s[i];
    for (size_t i = 0; i < r; ++i) {
        out_shape[i] = s[static_cast<size_t>(perm[i])];
        step[i] = in_stride[static_cast<size_t>(perm[i])];
    }
    const int64_t n = shape_numel(s);
    const char* src = static_cast<const char*>(x);
    char* dst = static_cast<char*>(y);
    std::vector<int64_t> idx(r, 0);
    int64_t off = 0;  // element offset in x of output element e
    for (int64_t e = 0; e < n; ++e) {
        std::memcpy(dst + static_cast<size_t>(e) * elem, src + static_cast<size_t>(off) * elem, elem);
        for (size_t d = r; d-- > 0;) {
            off += step[d];
            if (++idx[d] < out_shape[d]) break;
            off -= step[d] * out_shape[d];
            idx[d] = 0;
        }
    }
}

void concat_bytes(const std::vector<const void*>& xs, size_t elem, const std::vector<int64_t>& axis_sizes,
                  int64_t outer, int64_t inner, void* y) {
    char* dst = static_cast<char*>(y);
    for (int64_t o = 0; o < outer; ++o) {
        for (size_t i = 0; i < xs.size(); ++i) {
            const size_t row = static_cast<size_t>(axis_sizes[i] * inner) * elem;
            std::memcpy(dst, static_cast<const char*>(xs[i]) + static_cast<size_t>(o) * row, row);
            dst += row;
        }
    }
}

}  // namespace pyengine
