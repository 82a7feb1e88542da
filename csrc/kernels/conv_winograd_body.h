// SPDX-License-Identifier: Apache-2.0
// Winograd F(4x4, 3x3) kernels over GCC/Clang vector types of one channel block, one body for
// every variant (as conv_nchwc_body.h): kernels/conv_winograd.cpp (generic, blocks 4/8/16),
// x86/conv_winograd_x86_avx2.cpp (8), x86/conv_winograd_x86_avx512.cpp (16) and
// arm/conv_winograd_arm_neon.cpp (4). The includer defines act_row and includes
// conv_nchwc_body.h first (its epilogue store is shared).
//
// A task (image, run of tiles, run of output blocks) goes through its tiles `tb` at a time:
//  1. input transform of every input block of those tiles into V[36][tb][ICP] (ICP: the input
//     channels padded to whole blocks), one block-wide vector per channel block, so that each
//     position is a row-major [tiles x ICP] matrix;
//  2. per position k, the GEMM M[k] = V[k] x U[k] in register tiles of F output blocks x T
//     tiles: F weight vectors and T broadcast scalars per input channel, as the direct
//     kernel's inner loop (U[k] for F blocks, F * ICP * CB floats, stays in L2 across the
//     tiles, and each weight is read once per `tb` tiles);
//  3. output transform of the 36 products of each (tile, output block) with the epilogue,
//     writing only the outputs inside OH x OW (tiles at the bottom and right edge are partial).
// No std:: containers here (their out-of-line code could be kept from the ISA copy).
#pragma once

#include <cstdint>

#include "kernels/conv_nchwc.h"
#include "kernels/conv_winograd.h"

namespace pyengine {
namespace {

// One 6-point input transform (a row or a column of B^T d B).
template <int CB, typename V = float __attribute__((vector_size(CB * sizeof(float))))>
inline __attribute__((always_inline)) void wino_in6(const V& d0, const V& d1, const V& d2, const V& d3, const V& d4,
                                                    const V& d5, V* o) {
    o[0] = (d0 * 4.0f - d2 * 5.0f) + d4;
    o[1] = (d3 + d4) - (d1 + d2) * 4.0f;
    o[2] = (d4 - d3) + (d1 - d2) * 4.0f;
    o[3] = (d4 - d2) + (d3 - d1) * 2.0f;
    o[4] = (d4 - d2) + (d1 - d3) * 2.0f;
    o[5] = (d1 * 4.0f - d3 * 5.0f) + d5;
}

// One 6 -> 4 output transform (A^T m).
template <int CB, typename V = float __attribute__((vector_size(CB * sizeof(float))))>
inline __attribute__((always_inline)) void wino_out6(const V& m0, const V& m1, const V& m2, const V& m3, const V& m4,
                                                     const V& m5, V* o) {
    const V a = m1 + m2, b = m1 - m2, s = m3 + m4, d = m3 - m4;
    o[0] = (m0 + a) + s;
    o[1] = b + d * 2.0f;
    o[2] = a + s * 4.0f;
    o[3] = (b + d * 8.0f) + m5;
}

// Tile `tile`'s input block xb ([H][W][CB]) transformed into the 36 rows at v (stride `ks`
// floats between positions).
template <int CB>
void wino_input_tile(const Conv2DParams& p, const float* xb, int64_t ih0, int64_t iw0, float* v, int64_t ks) {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    V d[6][6];
    const bool inside = ih0 >= 0 && iw0 >= 0 && ih0 + kWinoIn <= p.H && iw0 + kWinoIn <= p.W;
    for (int r = 0; r < 6; ++r) {
        const int64_t ih = ih0 + r;
        const float* row = xb + (ih * p.W + iw0) * CB;
        for (int c = 0; c < 6; ++c) {
            if (inside || (ih >= 0 && ih < p.H && iw0 + c >= 0 && iw0 + c < p.W)) {
                PE_NC_LOAD(d[r][c], row + c * CB);
            } else {
                d[r][c] = V{} + 0.0f;
            }
        }
    }
    V t[6][6];
    for (int c = 0; c < 6; ++c) {
        V o[6];
        wino_in6<CB>(d[0][c], d[1][c], d[2][c], d[3][c], d[4][c], d[5][c], o);
        for (int r = 0; r < 6; ++r) t[r][c] = o[r];
    }
    for (int r = 0; r < 6; ++r) {
        V o[6];
        wino_in6<CB>(t[r][0], t[r][1], t[r][2], t[r][3], t[r][4], t[r][5], o);
        for (int c = 0; c < 6; ++c) PE_NC_STORE(v + (r * 6 + c) * ks, o[c]);
    }
}

// acc[F][T]: F output blocks x T tiles of one position over ICP input channels. u: the weights
// of the first block (`us` floats to the next); v: the first tile's row (ICP floats apart);
// m: the first tile's product row (`ms` floats to the next tile).
template <int CB, int F, int T>
void wino_gemm_tile(const float* u, int64_t us, const float* v, int64_t icp, float* m, int64_t ms) {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    V acc[F][T];
    for (int f = 0; f < F; ++f) {
        for (int t = 0; t < T; ++t) acc[f][t] = V{} + 0.0f;
    }
    const float* vp[T];
    const float* up[F];
    for (int t = 0; t < T; ++t) vp[t] = v + t * icp;
    for (int f = 0; f < F; ++f) up[f] = u + f * us;
#pragma GCC unroll 4
    for (int64_t ic = 0; ic < icp; ++ic) {
        V wv[F];
        for (int f = 0; f < F; ++f) PE_NC_LOAD(wv[f], up[f] + ic * CB);
        for (int t = 0; t < T; ++t) {
            const float s = vp[t][ic];
            for (int f = 0; f < F; ++f) acc[f][t] += wv[f] * s;
        }
    }
    for (int t = 0; t < T; ++t) {
        for (int f = 0; f < F; ++f) PE_NC_STORE(m + t * ms + f * CB, acc[f][t]);
    }
}

// The instantiation for f <= F blocks x t <= T tiles.
template <int CB, int F, int T>
inline void wino_gemm_n(int f, int t, const float* u, int64_t us, const float* v, int64_t icp, float* m, int64_t ms) {
    if (f == F && t == T) {
        wino_gemm_tile<CB, F, T>(u, us, v, icp, m, ms);
    } else if (f < F) {
        if constexpr (F > 1) wino_gemm_n<CB, F - 1, T>(f, t, u, us, v, icp, m, ms);
    } else {
        if constexpr (T > 1) wino_gemm_n<CB, F, T - 1>(f, t, u, us, v, icp, m, ms);
    }
}

// The 36 products at m (`ks` floats apart) of one tile and output block back to its outputs
// at y (tile origin oh0, ow0 of the block's OH x OW plane), with bias b, residual r and the
// activation.
template <int CB>
void wino_output_tile(const Conv2DParams& p, const float* m, int64_t ks, const float* bias, float* y, const float* r,
                      int64_t oh0, int64_t ow0) {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    V s[4][6];
    for (int c = 0; c < 6; ++c) {
        V mv[6];
        for (int k = 0; k < 6; ++k) PE_NC_LOAD(mv[k], m + (k * 6 + c) * ks);
        V o[4];
        wino_out6<CB>(mv[0], mv[1], mv[2], mv[3], mv[4], mv[5], o);
        for (int a = 0; a < 4; ++a) s[a][c] = o[a];
    }
    V b = V{} + 0.0f;
    if (bias != nullptr) PE_NC_LOAD(b, bias);
    const int64_t rows = p.OH - oh0 < kWinoOut ? p.OH - oh0 : kWinoOut;
    const int64_t cols = p.OW - ow0 < kWinoOut ? p.OW - ow0 : kWinoOut;
    const bool inline_act = nchwc_act_inline(p.ep.act);
    for (int64_t a = 0; a < rows; ++a) {
        V o[4];
        wino_out6<CB>(s[a][0], s[a][1], s[a][2], s[a][3], s[a][4], s[a][5], o);
        const int64_t at = ((oh0 + a) * p.OW + ow0) * CB;
        for (int64_t c = 0; c < cols; ++c) {
            nchwc_store<CB>(o[c] + b, y + at + c * CB, r != nullptr ? r + at + c * CB : nullptr, p.ep);
        }
        if (!inline_act) act_row(y + at, cols * CB, p.ep);
    }
}

// The task entry point (NchwcWinogradKernel) for block CB with register tiles of F output
// blocks x T tiles.
template <int CB, int F, int T>
void wino_body(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1, int64_t t0,
               int64_t t1, int64_t tb, float* scratch) {
    const Conv2DParams& p = c.p;
    const int64_t icb_n = (p.C + CB - 1) / CB, icp = icb_n * CB;
    const int64_t OB = (p.O + CB - 1) / CB, obs = ob1 - ob0;
    const int64_t tiles_w = (p.OW + kWinoOut - 1) / kWinoOut;
    const int64_t plane = p.H * p.W * CB, out_plane = p.OH * p.OW * CB;
    const float* xn = x + n * icb_n * plane;
    float* vs = scratch;                       // [36][tb][icp]
    float* ms = scratch + kWinoPos * tb * icp;  // [36][tb][obs][CB]
    const int64_t mt = obs * CB;               // floats between tiles in ms
    for (int64_t ts = t0; ts < t1; ts += tb) {
        const int64_t nt = t1 - ts < tb ? t1 - ts : tb;
        for (int64_t i = 0; i < nt; ++i) {
            const int64_t th = (ts + i) / tiles_w, tw = (ts + i) - th * tiles_w;
            const int64_t ih0 = th * kWinoOut - p.pad_top, iw0 = tw * kWinoOut - p.pad_left;
            for (int64_t icb = 0; icb < icb_n; ++icb) {
                wino_input_tile<CB>(p, xn + icb * plane, ih0, iw0, vs + i * icp + icb * CB, tb * icp);
            }
        }
        for (int64_t k = 0; k < kWinoPos; ++k) {
            const float* vk = vs + k * tb * icp;
            float* mk = ms + k * tb * mt;
            const float* uk = c.w + k * OB * icp * CB;
            for (int64_t ob = ob0; ob < ob1; ob += F) {
                const int f = static_cast<int>(ob1 - ob < F ? ob1 - ob : F);
                for (int64_t i = 0; i < nt; i += T) {
                    const int t = static_cast<int>(nt - i < T ? nt - i : T);
                    wino_gemm_n<CB, F, T>(f, t, uk + ob * icp * CB, icp * CB, vk + i * icp, icp,
                                          mk + i * mt + (ob - ob0) * CB, mt);
                }
            }
        }
        for (int64_t i = 0; i < nt; ++i) {
            const int64_t th = (ts + i) / tiles_w, tw = (ts + i) - th * tiles_w;
            for (int64_t ob = ob0; ob < ob1; ++ob) {
                const int64_t at = (n * OB + ob) * out_plane;
                wino_output_tile<CB>(p, ms + i * mt + (ob - ob0) * CB, tb * mt,
                                     c.bias != nullptr ? c.bias + ob * CB : nullptr, y + at,
                                     c.residual != nullptr ? c.residual + at : nullptr, th * kWinoOut, tw * kWinoOut);
            }
        }
    }
}

}  // namespace
}  // namespace pyengine
