// SPDX-License-Identifier: Apache-2.0
// erf / GELU: the generic variant and the dispatching entry point (kernels/erf.h).
#include "kernels/erf.h"

#include <algorithm>

#include "kernels/erf_body.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"

namespace pyengine {

void erf_apply_generic(const float* x, float* y, int64_t n, bool gelu) { erf_body::run(x, y, n, gelu); }

void erf_apply(const float* x, float* y, int64_t n, bool gelu) {
    // Chunks big enough that a task outweighs the pool's hand-off.
    constexpr int64_t kChunk = 1 << 14;
    const auto fn = kernels().erf_apply;
    const int64_t tasks = (n + kChunk - 1) / kChunk;
    if (tasks <= 1 || num_threads() <= 1) {
        fn(x, y, n, gelu);
        return;
    }
    parallel_for(tasks, [&](int64_t t) {
        const int64_t lo = t * kChunk;
        fn(x + lo, y + lo, std::min(kChunk, n - lo), gelu);
    });
}

}  // namespace pyengine
