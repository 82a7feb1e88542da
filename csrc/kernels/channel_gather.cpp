// SPDX-License-Identifier: Apache-2.0
// Channel gathers in the blocked layout: compiling a channel map into parts, the driver, and
// the generic kernels for blocks 4, 8 and 16.
#include "kernels/channel_gather.h"

#include <algorithm>
#include <cstring>

#include "kernels/channel_gather_body.h"
#include "kernels/nchwc_tasks.h"
#include "kernels/dispatch.h"

namespace pyengine {

bool NchwcGatherMap::is_copy(int64_t b) const {
    if (begin[static_cast<size_t>(b) + 1] - begin[static_cast<size_t>(b)] != 1) return false;
    const NchwcGatherPart& p = parts[static_cast<size_t>(begin[static_cast<size_t>(b)])];
    // Lanes past the last channel may take the source's lanes too: padding only has to be finite.
    const int64_t real = std::min<int64_t>(cb, out_channels - b * cb);
    for (int l = 0; l < cb; ++l) {
        if (l < real ? (p.take[l] == 0 || p.lane[l] != l) : (p.take[l] != 0 && p.lane[l] != l)) return false;
    }
    return true;
}

NchwcGatherMap nchwc_gather_compile(const std::vector<std::pair<int, int64_t>>& src, int cb) {
    NchwcGatherMap m;
    m.cb = cb;
    m.out_channels = static_cast<int64_t>(src.size());
    const int64_t OB = (m.out_channels + cb - 1) / cb;
    m.begin.push_back(0);
    for (int64_t b = 0; b < OB; ++b) {
        const size_t first = m.parts.size();
        for (int l = 0; l < cb && b * cb + l < m.out_channels; ++l) {
            const auto& s = src[static_cast<size_t>(b * cb + l)];
            const int32_t blk = static_cast<int32_t>(s.second / cb);
            size_t k = first;
            while (k < m.parts.size() && (m.parts[k].input != s.first || m.parts[k].src_block != blk)) ++k;
            if (k == m.parts.size()) {
                NchwcGatherPart p;
                p.input = s.first;
                p.src_block = blk;
                m.parts.push_back(p);
            }
            m.parts[k].lane[l] = static_cast<int32_t>(s.second % cb);
            m.parts[k].take[l] = -1;
        }
        m.begin.push_back(static_cast<int32_t>(m.parts.size()));
    }
    return m;
}

int nchwc_gather_max_parts(const NchwcGatherMap& m) {
    int most = 0;
    for (size_t b = 0; b + 1 < m.begin.size(); ++b) most = std::max(most, m.begin[b + 1] - m.begin[b]);
    return most;
}

namespace {
void gather_generic4(const NchwcGatherPart* p, int n, const float* const* s, float* y, int64_t HW) {
    nchwc_gather_body<4>(p, n, s, y, HW);
}
void gather_generic8(const NchwcGatherPart* p, int n, const float* const* s, float* y, int64_t HW) {
    nchwc_gather_body<8>(p, n, s, y, HW);
}
void gather_generic16(const NchwcGatherPart* p, int n, const float* const* s, float* y, int64_t HW) {
    nchwc_gather_body<16>(p, n, s, y, HW);
}
}  // namespace

NchwcGatherKernel nchwc_gather_generic(int cb) {
    switch (cb) {
        case 4: return gather_generic4;
        case 8: return gather_generic8;
        case 16: return gather_generic16;
        default: return nullptr;
    }
}

void nchwc_gather(const NchwcGatherMap& m, const float* const* x, const int64_t* x_channels, int n_inputs,
                  float* y, int64_t N, int64_t HW, NchwcGatherKernel kernel) {
    const int cb = m.cb;
    if (kernel == nullptr) {
        kernel = kernels().nchwc_block == cb ? kernels().nchwc_gather : nchwc_gather_generic(cb);
    }
    const int64_t OB = (m.out_channels + cb - 1) / cb;
    // Each input's first block of each image.
    std::vector<const float*> srcs(static_cast<size_t>(N * n_inputs));
    for (int64_t n = 0; n < N; ++n) {
        for (int i = 0; i < n_inputs; ++i) {
            srcs[static_cast<size_t>(n * n_inputs + i)] = x[i] + n * ((x_channels[i] + cb - 1) / cb) * HW * cb;
        }
    }
    nchwc_for_blocks(N, OB, HW * cb, [&](int64_t n, int64_t b) {
        float* yb = y + (n * OB + b) * HW * cb;
        const int32_t p0 = m.begin[static_cast<size_t>(b)];
        const NchwcGatherPart* parts = m.parts.data() + p0;
        const float* const* s = srcs.data() + n * n_inputs;
        if (m.is_copy(b)) {
            std::memcpy(yb, s[parts->input] + static_cast<int64_t>(parts->src_block) * HW * cb,
                        static_cast<size_t>(HW * cb) * sizeof(float));
        } else {
            kernel(parts, m.begin[static_cast<size_t>(b) + 1] - p0, s, yb, HW);
        }
    });
}

}  // namespace pyengine
