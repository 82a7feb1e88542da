// SPDX-License-Identifier: Apache-2.0
// When the memory-bound blocked-layout ops (padding copy, pooling, BatchNorm, per-channel
// binary ops, channel gathers) split over the pool, and the loop that does it.
#pragma once

#include <cstdint>

#include "platform/thread_pool.h"

namespace pyengine {

// Memory-bound blocked ops split over threads from this many floats (1 MB) on: below it a
// fork-join (tens of microseconds to wake a worker on a busy VM) costs more than it saves.
constexpr int64_t kNchwcInlineFloats = int64_t(1) << 18;
// Convolutions (direct and Winograd) below this many multiply-adds (about 20 us on one AVX-512
// core) run on the calling thread: waking a worker costs tens of microseconds on a busy VM.
constexpr int64_t kNchwcInlineMacs = int64_t(1) << 20;
// The smallest convolution task worth handing to another thread (about 5 us).
constexpr int64_t kNchwcTaskMacs = int64_t(1) << 18;

// Runs fn(image, block) for N images x `blocks` blocks, over the pool when the tensor is big
// enough to pay for it, else inline on the calling thread.
template <class Fn>
void nchwc_for_blocks(int64_t N, int64_t blocks, int64_t floats_per_block, const Fn& fn) {
    if (num_threads() > 1 && N * blocks > 1 && N * blocks * floats_per_block >= kNchwcInlineFloats) {
        parallel_for(N * blocks, [&](int64_t t) { fn(t / blocks, t % blocks); });
    } else {
        for (int64_t t = 0; t < N * blocks; ++t) fn(t / blocks, t % blocks);
    }
}

}  // namespace pyengine
