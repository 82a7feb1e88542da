// SPDX-License-Identifier: Apache-2.0
// Winograd convolution F(4x4, 3x3) in the channel-blocked layout (kernels/conv_nchwc.h).
//
// A 3x3, stride-1, dilation-1, ungrouped convolution is computed per 4x4 output tile from its
// 6x6 input tile: the input tile is transformed (B^T d B, 36 positions, a vector of one channel
// block at a time), each of the 36 positions is a GEMM over the input channels against the
// weights transformed once at load (G g G^T), and the 36 products are transformed back
// (A^T m A) into the 16 outputs, where the epilogue (bias, residual, activation) is applied.
// That is 36 multiply-adds per (input, output channel) for 16 outputs instead of 144: 4x fewer,
// paid for by the transforms, 4x the weight bytes and scratch traffic; winograd_pick says
// where that wins. F(4x4) keeps the error of a deep fp32 chain near 1e-6 relative (the
// interpolation points 0, +-1, +-2 need no large constants); F(6x6) would not.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/conv_nchwc.h"

namespace pyengine {

// Output tile side and input tile side (= output + 2) of F(4x4, 3x3).
constexpr int64_t kWinoOut = 4;
constexpr int64_t kWinoIn = 6;
constexpr int64_t kWinoPos = kWinoIn * kWinoIn;

// PYENGINE_WINOGRAD: "0" never, "1" wherever the geometry allows, unset or "auto" where
// winograd_pick's rule says it is faster. Read once per call (ops read it at load).
enum class WinogradMode { Off, Auto, Always };
// Throws InvalidArgument naming the variable for any other value.
WinogradMode winograd_mode();

// True when convolution `c` (after nchwc_conv_setup; only its weight geometry and blocks are
// read) has a Winograd form: 3x3, stride 1, dilation 1, groups 1, a blocked input.
bool winograd_eligible(const NchwcConv& c);
// For a call whose geometry is in c.p: Winograd (true) or direct (false) under `mode`.
bool winograd_pick(const NchwcConv& c, WinogradMode mode);

// OIHW 3x3 weights transformed (in double precision) to [36][OB][ICB*cb][cb], padded lanes 0.
std::vector<float> winograd_pack_weights(const NchwcConv& c, const float* w);

// Image n, output tiles [t0, t1) (row-major over ceil(OH/4) x ceil(OW/4)), output blocks
// [ob0, ob1), processed `tb` tiles at a time; c.w is the transformed weight. `scratch` holds
// winograd_scratch_floats(c, tb, ob1 - ob0) floats owned by the caller for the call.
using NchwcWinogradKernel = void (*)(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0,
                                     int64_t ob1, int64_t t0, int64_t t1, int64_t tb, float* scratch);
int64_t winograd_scratch_floats(const NchwcConv& c, int64_t tb, int64_t obs);

// Runs it over the thread pool with the variant in use (or the generic kernel for another
// block); c.w must be winograd_pack_weights' output.
void conv_winograd(const NchwcConv& c, const float* x, float* y);
// The same with kernel `kernel`, whose register tiles cover `oc_tile` output blocks.
void conv_winograd_run(NchwcWinogradKernel kernel, int oc_tile, const NchwcConv& c, const float* x, float* y);
// The portable kernel for block cb (4, 8 or 16); nullptr for any other block.
NchwcWinogradKernel conv_winograd_generic(int cb);

}  // namespace pyengine
