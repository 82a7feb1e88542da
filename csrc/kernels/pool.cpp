// SPDX-License-Identifier: Apache-2.0
#include "kernels/pool.h"

#include <algorithm>
#include <limits>

#include "runtime/dispatch.h"

namespace pyengine {

void pool2d_generic(const Pool2DParams& p, const float* x, float* y) {
    const bool nhwc = p.layout == Layout::NHWC;
    for (int64_t n = 0; n < p.N; ++n) {
        for (int64_t c = 0; c < p.C; ++c) {
            for (int64_t oh = 0; oh < p.OH; ++oh) {
                const int64_t h0 = oh * p.stride_h - p.pad_top;
                const int64_t h1 = std::min(h0 + p.KH, p.H + p.pad_bottom);
                const int64_t hs = std::max<int64_t>(h0, 0), he = std::min(h1, p.H);
                for (int64_t ow = 0; ow < p.OW; ++ow) {
                    const int64_t w0 = ow * p.stride_w - p.pad_left;
                    const int64_t w1 = std::min(w0 + p.KW, p.W + p.pad_right);
                    const int64_t ws = std::max<int64_t>(w0, 0), we = std::min(w1, p.W);
                    float acc = p.is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
                    for (int64_t h = hs; h < he; ++h) {
                        for (int64_t w = ws; w < we; ++w) {
                            const float v = nhwc ? x[((n * p.H + h) * p.W + w) * p.C + c]
                                                 : x[((n * p.C + c) * p.H + h) * p.W + w];
                            acc = p.is_max ? std::max(acc, v) : acc + v;
                        }
                    }
                    if (!p.is_max) {
                        const int64_t count = p.count_include_pad ? (h1 - h0) * (w1 - w0) : (he - hs) * (we - ws);
                        acc = count > 0 ? acc / static_cast<float>(count) : 0.0f;
                    } else if (he <= hs || we <= ws) {
                        acc = 0.0f;  // a window lying wholly in the padding
                    }
                    const int64_t yi = nhwc ? ((n * p.OH + oh) * p.OW + ow) * p.C + c
                                            : ((n * p.C + c) * p.OH + oh) * p.OW + ow;
                    y[yi] = acc;
                }
            }
        }
    }
}

void pool2d(const Pool2DParams& p, const float* x, float* y) { kernels().pool2d(p, x, y); }

}  // namespace pyengine
