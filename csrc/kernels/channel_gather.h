// SPDX-License-Identifier: Apache-2.0
// Channel gathers in the blocked layout NCHW[c] (kernels/conv_nchwc.h): output channel c of
// image n is input channel map[c] of one of several inputs, for every pixel. Concat, Slice and
// Split on channels and ShuffleNet's channel shuffle (Reshape-Transpose-Reshape) are all such
// maps, and so is any chain of them; channel counts need not be multiples of the block.
//
// A map is compiled per output block into parts: each part names one source block (an input
// and a block of it) and, per output lane, which lane of that block it takes (or none). A
// kernel builds each output vector from its parts' vectors with one lane permutation and one
// masked merge per part, so a shuffle costs about one load, permute and merge per source
// block instead of a scalar copy per channel.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace pyengine {

// One source block of one output block.
struct NchwcGatherPart {
    int32_t input = 0;        // which input
    int32_t src_block = 0;    // the input's channel block
    int32_t lane[16] = {};    // per output lane: the source lane (lanes >= the block unused)
    int32_t take[16] = {};    // per output lane: -1 when this part supplies it, else 0
};

// A compiled gather for one output: parts of output block b are parts[begin[b], begin[b+1]).
// Output lanes no part supplies (the padding past the last channel) are written 0.
struct NchwcGatherMap {
    int cb = 0;
    int64_t out_channels = 0;
    std::vector<NchwcGatherPart> parts;
    std::vector<int32_t> begin;  // output blocks + 1 entries
    // True when every output block is one source block copied unchanged (a memcpy).
    bool is_copy(int64_t b) const;
};

// Builds the map of an output whose channel c is channel src[c].second of input
// src[c].first, for block cb (4, 8 or 16).
NchwcGatherMap nchwc_gather_compile(const std::vector<std::pair<int, int64_t>>& src, int cb);
// Parts per output block at most, for the planner's choice of how far to compose gathers.
int nchwc_gather_max_parts(const NchwcGatherMap& m);

// Writes output block `ob`'s HW pixels at y from the parts [parts, parts + n_parts); srcs[i]
// is input i's first block of the same image.
using NchwcGatherKernel = void (*)(const NchwcGatherPart* parts, int n_parts, const float* const* srcs,
                                   float* y, int64_t HW);
// The portable kernel for block cb (4, 8 or 16); nullptr for any other block.
NchwcGatherKernel nchwc_gather_generic(int cb);

// Runs map `m` over N images of HW pixels: x[i] is input i (blocked, x_channels[i] channels),
// y the blocked output. Uses the variant's kernel when its block is m.cb (tests pass another
// `kernel`); splits over the pool only when the copy is big enough to pay for a fork-join.
void nchwc_gather(const NchwcGatherMap& m, const float* const* x, const int64_t* x_channels, int n_inputs,
                  float* y, int64_t N, int64_t HW, NchwcGatherKernel kernel = nullptr);

}  // namespace pyengine
