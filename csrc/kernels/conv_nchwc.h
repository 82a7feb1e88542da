// SPDX-License-Identifier: Apache-2.0
// Convolution, pooling and reorders in the channel-blocked layout NCHW[c] ("NCHWc").
//
// A tensor of logical shape [N, C, H, W] with block c is stored as [N, ceil(C/c), H, W, c]:
// element (n, ch, h, w) lies at ((n * CB + ch / c) * H + h) * W * c + w * c + ch % c, where
// CB = ceil(C/c). Channels C..CB*c-1 are padding; every producer writes them (conv writes what
// zero weights give, reorders write zeros), so they always hold finite values, and the packed
// weights of the padded input channels are zero, so padding never reaches a real channel.
// The block is the vector width of the kernel variant: 16 (AVX-512), 8 (AVX2, generic), 4 (NEON).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "format/tensor.h"
#include "kernels/conv2d.h"
#include "kernels/elementwise.h"
#include "kernels/pool.h"

namespace pyengine {

// A convolution in the blocked layout. The output is always blocked; the input is blocked
// (in_block == cb) or plain NCHW (in_block == 1: the first convolution of a net, C < cb).
struct NchwcConv {
    Conv2DParams p;               // geometry; p.ep gives the activation (its bias is unused)
    int cb = 8;                   // block of the output (and of a blocked input)
    int in_block = 8;             // cb, or 1 for a plain NCHW input
    bool depthwise = false;       // groups == C == O: weights [OB][KH][KW][cb]
    int64_t ob_per_group = 0;     // output blocks per group
    int64_t icb_per_group = 0;    // input blocks (of in_block channels) per group
    const float* w = nullptr;     // nchwc_pack_conv_weights
    const float* bias = nullptr;  // OB * cb floats (padding zero), or nullptr
    const float* residual = nullptr;  // added before the activation; the output's layout
};

// Computes output blocks [ob0, ob1) x output pixels [q0, q1) (of the flattened OH x OW plane)
// of image n. A direct (not depthwise) convolution's taps must all lie inside the input:
// conv_nchwc_run hands it an input copy with the padding written out.
using NchwcConvKernel = void (*)(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0,
                                 int64_t ob1, int64_t q0, int64_t q1);

// Fills the grouping fields of `c` from c.p, c.cb and c.in_block; false when this convolution
// has no blocked form (groups whose channel counts are not multiples of the block).
bool nchwc_conv_setup(NchwcConv* c);
// The blocked form of an NCHW convolution with OIHW weight shape `oihw`, `groups` and block
// `cb`: fills c->p's channel and kernel sizes, c->cb, c->in_block (1 when a plain input of
// fewer than cb channels is read directly) and the grouping fields. False when it has none.
// The one rule for the load-time repack and the converter's stored form (they must agree).
bool nchwc_conv_for_weights(const Shape& oihw, int64_t groups, int cb, NchwcConv* c);
// OIHW weights repacked for `c` (after nchwc_conv_setup): [OB][ICBg][KH][KW][in_block][cb], or
// [OB][KH][KW][cb] when depthwise; padded channels are zero.
std::vector<float> nchwc_pack_conv_weights(const NchwcConv& c, const float* w);
// The shape of nchwc_pack_conv_weights's result, as a .pyem file stores it.
Shape nchwc_packed_weight_shape(const NchwcConv& c);
// Runs the convolution over the thread pool, split by (image, output blocks, output pixels),
// with the kernel of the variant in use (or the generic one for another block).
void conv_nchwc(const NchwcConv& c, const float* x, float* y);
// The same with kernel `kernel`, whose tiles cover `oc_tile` output blocks (tests pick it).
void conv_nchwc_run(NchwcConvKernel kernel, int oc_tile, const NchwcConv& c, const float* x, float* y);
// The portable kernel for block cb (4, 8 or 16); nullptr for any other block.
NchwcConvKernel conv_nchwc_generic(int cb);

// Max / average / global pooling of a blocked tensor (layout field ignored).
void pool2d_nchwc(const Pool2DParams& p, int cb, const float* x, float* y);
// Plain NCHW [N, C, HW] <-> blocked; `to_blocked` chooses the direction.
void nchwc_reorder(const float* src, float* dst, int64_t N, int64_t C, int64_t HW, int cb, bool to_blocked);
// y = act(x * scale[c] + shift[c]) per channel of a blocked [N, C, HW] tensor; scale and shift
// have whole blocks (padding 0). The activation (act.act may be None) runs on each block right
// after its affine pass, while the block is in cache.
void nchwc_channel_affine(const float* x, const float* scale, const float* shift, int64_t N, int64_t C,
                          int64_t HW, int cb, const Epilogue& act, float* y);
// y = a op b, a blocked [N, C, HW], b blocked [Nb, C, 1] with Nb = N or 1 (squeeze-excite).
void nchwc_binary_channel(BinaryOp op, const float* a, const float* b, int64_t N, int64_t C, int64_t HW,
                          bool b_per_image, int cb, float* y);
// Floats a blocked [N, C, H, W] tensor occupies.
inline int64_t nchwc_numel(int64_t N, int64_t C, int64_t HW, int cb) { return N * ((C + cb - 1) / cb) * cb * HW; }

}  // namespace pyengine
