// SPDX-License-Identifier: Apache-2.0
// Blocked (NCHWc) convolution kernels over GCC/Clang vector types of one block of channels, so
// that one body serves every variant: kernels/conv_nchwc.cpp (generic, blocks 4/8/16),
// x86/conv_nchwc_x86_avx2.cpp (8), x86/conv_nchwc_x86_avx512.cpp (16) and
// arm/conv_nchwc_arm_neon.cpp (4) each compile it for their own instruction set (internal
// linkage). The includer defines `act_row(float* row, int64_t n, const Epilogue&)` first.
//
// Direct convolution: a tile of F output blocks x T output pixels (flattened, so a tile may
// span rows) is kept in F*T vector accumulators over the reduction (input blocks x KH x KW x
// the block's channels, in L1-sized chunks); each step loads F weight vectors (c output
// channels of one input channel) and broadcasts T input scalars. A 1x1 convolution is the
// same loop with one tap: a GEMM over blocks. The driver hands direct convolutions an input
// with the padding written out, so their tiles check no bounds; depthwise on long rows checks
// taps in one-pixel edge tiles instead.
// No std:: containers here (their out-of-line code could be kept from the ISA copy).
#pragma once

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif  // defined(__AVX512F__)

#include "kernels/conv_nchwc.h"

namespace pyengine {
namespace {

#define PE_NC_LOAD(v, ptr) __builtin_memcpy(&(v), (ptr), sizeof(v))
#define PE_NC_STORE(ptr, v) __builtin_memcpy((ptr), &(v), sizeof(v))

// [lo, hi): output columns whose taps all lie inside [0, W).
inline void nchwc_interior(const Conv2DParams& p, int64_t* lo, int64_t* hi) {
    const int64_t sw = p.stride_w, last = (p.KW - 1) * p.dilation_w;
    int64_t l = (p.pad_left + sw - 1) / sw;
    const int64_t top = p.W - 1 + p.pad_left - last;  // ow * sw <= top
    int64_t h = top < 0 ? 0 : top / sw + 1;
    if (h > p.OW) h = p.OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

// e^x for a vector (Cephes' expf: 2^n * e^r, |r| <= ln2/2, a degree-5 polynomial; about 1
// ulp), for the sigmoid family in the epilogue without leaving registers.
// In place (a vector by value or as the result would change the ABI for generic code).
template <typename V>
inline __attribute__((always_inline)) void nchwc_exp(V& x) {
#if defined(__AVX512F__)
    // AVX-512: round to nearest and scale by 2^n in one instruction each, half the operations
    // of the portable version (a fused SiLU is bound by them). Same polynomial.
    if constexpr (sizeof(V) == 64) {
        __m512 v = reinterpret_cast<__m512>(x);
        // The maskz forms: GCC 12's unmasked ones read an undefined register (-Wmaybe-uninitialized).
        const __mmask16 all = 0xFFFF;
        v = _mm512_maskz_max_ps(all, v, _mm512_set1_ps(-87.3365447505531f));
        v = _mm512_maskz_min_ps(all, v, _mm512_set1_ps(88.3762626647949f));
        const __m512 n = _mm512_maskz_roundscale_ps(all, _mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), v);
        v = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), v);
        __m512 y = _mm512_set1_ps(1.9875691500e-4f);
        y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(1.3981999507e-3f));
        y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(8.3334519073e-3f));
        y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(4.1665795894e-2f));
        y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(1.6666665459e-1f));
        y = _mm512_fmadd_ps(y, v, _mm512_set1_ps(5.0000001201e-1f));
        y = _mm512_fmadd_ps(_mm512_mul_ps(y, v), v, _mm512_add_ps(v, _mm512_set1_ps(1.0f)));
        x = reinterpret_cast<V>(_mm512_maskz_scalef_ps(all, y, n));
        return;
    }
#endif  // defined(__AVX512F__)
    typedef int VI __attribute__((vector_size(sizeof(V))));
    const V zero = V{} + 0.0f, one = zero + 1.0f;
    x = x < zero + 88.3762626647949f ? x : zero + 88.3762626647949f;
    x = x > zero - 87.3365447505531f ? x : zero - 87.3365447505531f;
    V fx = x * 1.44269504088896341f + 0.5f;
    V fl = __builtin_convertvector(__builtin_convertvector(fx, VI), V);  // truncation
    fl = fl > fx ? fl - one : fl;                                         // floor
    x = x - fl * 0.693359375f + fl * 2.12194440e-4f;
    V y = zero + 1.9875691500e-4f;
    y = y * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * x * x + x + one;
    const VI bits = (__builtin_convertvector(fl, VI) + 127) << 23;
    V pow2;
    __builtin_memcpy(&pow2, &bits, sizeof(pow2));
    x = y * pow2;
}

// Applies bias, residual and the activation to acc and stores it; Tanh goes through act_row
// afterwards (see nchwc_act_inline).
template <int CB, typename V>
inline __attribute__((always_inline)) void nchwc_store(V v, float* y, const float* r, const Epilogue& e) {
    if (r != nullptr) {
        V rv;
        PE_NC_LOAD(rv, r);
        v += rv;
    }
    const V zero = V{} + 0.0f;
    switch (e.act) {
        case Activation::Relu: v = v > zero ? v : zero; break;
        case Activation::Relu6: {
            const V six = zero + 6.0f;
            v = v > zero ? v : zero;
            v = v < six ? v : six;
            break;
        }
        case Activation::Clip: {
            const V lo = zero + e.alpha, hi = zero + e.beta;
            v = v > lo ? v : lo;
            v = v < hi ? v : hi;
            break;
        }
        case Activation::LeakyRelu: v = v >= zero ? v : v * e.alpha; break;
        case Activation::Sigmoid:
        case Activation::Silu: {
            V en = -v;
            nchwc_exp(en);
            v = (e.act == Activation::Silu ? v : zero + 1.0f) / (en + 1.0f);
            break;
        }
        case Activation::HardSigmoid:
        case Activation::HardSwish: {
            V t = v * e.alpha + e.beta;
            t = t > zero ? t : zero;
            t = t < zero + 1.0f ? t : zero + 1.0f;
            v = e.act == Activation::HardSwish ? v * t : t;
            break;
        }
        default: break;
    }
    PE_NC_STORE(y, v);
}

inline bool nchwc_act_inline(Activation a) { return a != Activation::Tanh; }

// Output blocks [ob, ob + F) x output pixels [q0, q0 + T) of the flattened OH x OW plane (a
// tile may span rows). The input needs no bounds checks: conv_nchwc gives the kernel an input
// copy with the padding written out. xg: the group's first input block of this image; w: the
// weights of block ob; y, r: output / residual at (ob, q0).
// The reduction is split into chunks of input blocks [icb0, icb1) whose weights fit in L1:
// the first starts from the bias, the others from the partial sums stored in y, and only the
// last applies the residual and activation.
struct NchwcChunk {
    int64_t icb0, icb1;
    bool first, last;
};

template <int CB, int IB, int F, int T>
void nchwc_tile(const NchwcConv& c, const NchwcChunk& k, const float* xg, const float* w, float* y, const float* r,
                int64_t q0) {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    const Conv2DParams& p = c.p;
    const int64_t KK = p.KH * p.KW;
    const int64_t wf = c.icb_per_group * KK * IB * CB;  // floats between output blocks' weights
    const int64_t yf = p.OH * p.OW * CB;               // between output blocks
    const int64_t plane = p.H * p.W * IB;              // one input block
    V acc[F][T];
    for (int f = 0; f < F; ++f) {
        if (!k.first) {
            for (int t = 0; t < T; ++t) PE_NC_LOAD(acc[f][t], y + f * yf + t * CB);
            continue;
        }
        V b = V{} + 0.0f;
        if (c.bias != nullptr) {
            const int64_t ob = (w - c.w) / wf + f;
            PE_NC_LOAD(b, c.bias + ob * CB);
        }
        for (int t = 0; t < T; ++t) acc[f][t] = b;
    }
    // One pointer per pixel and per output block, offset by ic only: with a runtime stride in
    // the index the compiler hoists an address for every (pixel, ic) pair out of the loops.
    const float* xp[T];
    int64_t oh = q0 / p.OW, ow = q0 - oh * p.OW;  // one division per tile, not one per pixel
    for (int t = 0; t < T; ++t) {
        xp[t] = xg + (oh * p.stride_h * p.W + ow * p.stride_w) * IB;
        if (++ow == p.OW) {
            ow = 0;
            ++oh;
        }
    }
    for (int64_t icb = k.icb0; icb < k.icb1; ++icb) {
        for (int64_t kh = 0; kh < p.KH; ++kh) {
            for (int64_t kw = 0; kw < p.KW; ++kw) {
                const int64_t off = icb * plane + (kh * p.dilation_h * p.W + kw * p.dilation_w) * IB;
                const float* xq[T];
                const float* wq[F];
                for (int t = 0; t < T; ++t) xq[t] = xp[t] + off;
                for (int f = 0; f < F; ++f) wq[f] = w + ((icb * p.KH + kh) * p.KW + kw) * IB * CB + f * wf;
#pragma GCC unroll 16
                for (int ic = 0; ic < IB; ++ic) {
                    V wv[F];
                    for (int f = 0; f < F; ++f) PE_NC_LOAD(wv[f], wq[f] + ic * CB);
                    for (int t = 0; t < T; ++t) {
                        const float s = xq[t][ic];
                        for (int f = 0; f < F; ++f) acc[f][t] += wv[f] * s;
                    }
                }
            }
        }
    }
    if (!k.last) {
        for (int f = 0; f < F; ++f) {
            for (int t = 0; t < T; ++t) PE_NC_STORE(y + f * yf + t * CB, acc[f][t]);
        }
        return;
    }
    const bool inline_act = nchwc_act_inline(p.ep.act);
    for (int f = 0; f < F; ++f) {
        float* yo = y + f * yf;
        const float* ro = r != nullptr ? r + f * yf : nullptr;
        for (int t = 0; t < T; ++t) nchwc_store<CB>(acc[f][t], yo + t * CB, ro != nullptr ? ro + t * CB : nullptr, p.ep);
        if (!inline_act) act_row(yo, T * CB, p.ep);
    }
}

// Picks the instantiation for a run of t <= T pixels.
template <int CB, int IB, int F, int T>
inline void nchwc_tile_n(int t, const NchwcConv& c, const NchwcChunk& k, const float* xg, const float* w, float* y,
                         const float* r, int64_t q0) {
    if (t == T) {
        nchwc_tile<CB, IB, F, T>(c, k, xg, w, y, r, q0);
    } else if constexpr (T > 1) {
        nchwc_tile_n<CB, IB, F, T - 1>(t, c, k, xg, w, y, r, q0);
    }
}

// Pixels [q0, q1) in tiles of T and T - 1 pixels, as evenly as that goes: a 7 x 7 plane is
// 4 x 6 + 5 x 5 rather than 8 x 6 + 1, whose one-pixel tile does F multiply-adds per F weight
// loads. y, r at (ob, pixel 0).
template <int CB, int IB, int F, int T>
void nchwc_tiles(const NchwcConv& c, const NchwcChunk& k, const float* xg, const float* w, float* y, const float* r,
                 int64_t q0, int64_t q1) {
    const int64_t n = q1 - q0, tiles = (n + T - 1) / T;
    int64_t full = T > 1 ? n - tiles * (T - 1) : tiles;  // tiles of T; the others take T - 1
    if (T > 1 && full < 0) full = 0;
    int64_t q = q0;
    for (int64_t i = 0; i < full && q + T <= q1; ++i, q += T) {
        nchwc_tile<CB, IB, F, T>(c, k, xg, w, y + q * CB, r ? r + q * CB : nullptr, q);
    }
    if constexpr (T > 1) {
        for (; q + (T - 1) <= q1; q += T - 1) {
            nchwc_tile<CB, IB, F, T - 1>(c, k, xg, w, y + q * CB, r ? r + q * CB : nullptr, q);
        }
    }
    if (q < q1) nchwc_tile_n<CB, IB, F, T>(static_cast<int>(q1 - q), c, k, xg, w, y + q * CB, r ? r + q * CB : nullptr, q);
}

// Pixels [q0, q1) of F blocks; y, r at (ob, pixel 0).
template <int CB, int IB, int F, int T>
void nchwc_range(const NchwcConv& c, const float* xg, const float* w, float* y, const float* r, int64_t q0,
                 int64_t q1) {
    const Conv2DParams& p = c.p;
    // Input blocks whose weights for F output blocks fit in about 32 KB (L1).
    int64_t chunk = 8192 / (F * p.KH * p.KW * IB * CB);
    if (chunk < 1) chunk = 1;
    if (chunk >= c.icb_per_group) {
        const NchwcChunk k{0, c.icb_per_group, true, true};
        nchwc_tiles<CB, IB, F, T>(c, k, xg, w, y, r, q0, q1);
        return;
    }
    // Runs of 8 tiles: their partial sums stay in cache while every chunk passes over them.
    for (int64_t qs = q0; qs < q1; qs += 8 * T) {
        const int64_t qe = qs + 8 * T < q1 ? qs + 8 * T : q1;
        for (int64_t icb = 0; icb < c.icb_per_group; icb += chunk) {
            const int64_t end = icb + chunk < c.icb_per_group ? icb + chunk : c.icb_per_group;
            const NchwcChunk k{icb, end, icb == 0, end == c.icb_per_group};
            nchwc_tiles<CB, IB, F, T>(c, k, xg, w, y, r, qs, qe);
        }
    }
}

// Pixels per tile for a run of F output blocks when the widest tile is F0 x T0: narrower runs
// take longer tiles (up to 2 x T0) so that the accumulators still hide the FMA latency.
template <int F, int F0, int T0>
constexpr int nchwc_tile_pixels() {
    return F0 * T0 / F < 2 * T0 ? F0 * T0 / F : 2 * T0;
}

template <int CB, int IB, int F0, int T0, int F = F0>
inline void nchwc_range_f(int f, const NchwcConv& c, const float* xg, const float* w, float* y, const float* r,
                          int64_t q0, int64_t q1) {
    if (f == F) {
        nchwc_range<CB, IB, F, nchwc_tile_pixels<F, F0, T0>()>(c, xg, w, y, r, q0, q1);
    } else if constexpr (F > 1) {
        nchwc_range_f<CB, IB, F0, T0, F - 1>(f, c, xg, w, y, r, q0, q1);
    }
}

// Depthwise: T pixels of one block, one vector FMA per tap and pixel.
template <int CB, int T, bool EDGE>
void nchwc_dw_tile(const NchwcConv& c, const float* xb, const float* w, const float* bias, float* y, const float* r,
                   int64_t oh, int64_t ow0) {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    const Conv2DParams& p = c.p;
    V acc[T];
    V b = V{} + 0.0f;
    if (bias != nullptr) PE_NC_LOAD(b, bias);
    for (int t = 0; t < T; ++t) acc[t] = b;
    const int64_t ih0 = oh * p.stride_h - p.pad_top;
    const int64_t iw0 = ow0 * p.stride_w - p.pad_left;
    const int64_t xs = p.stride_w * CB;
    for (int64_t kh = 0; kh < p.KH; ++kh) {
        const int64_t ih = ih0 + kh * p.dilation_h;
        if (static_cast<uint64_t>(ih) >= static_cast<uint64_t>(p.H)) continue;
        const float* xr = xb + ih * p.W * CB;
        for (int64_t kw = 0; kw < p.KW; ++kw) {
            const int64_t iw = iw0 + kw * p.dilation_w;
            if (EDGE && static_cast<uint64_t>(iw) >= static_cast<uint64_t>(p.W)) continue;
            V wv;
            PE_NC_LOAD(wv, w + (kh * p.KW + kw) * CB);
            const float* xp = xr + iw * CB;
            for (int t = 0; t < T; ++t) {
                V xv;
                PE_NC_LOAD(xv, xp + t * xs);
                acc[t] += wv * xv;
            }
        }
    }
    for (int t = 0; t < T; ++t) nchwc_store<CB>(acc[t], y + t * CB, r != nullptr ? r + t * CB : nullptr, p.ep);
    if (!nchwc_act_inline(p.ep.act)) act_row(y, T * CB, p.ep);
}

// Depthwise, T pixels of one row for a K-wide kernel at stride S without dilation (3x3 and 5x5
// at stride 1 or 2: nearly every depthwise layer): each input row segment is loaded once into
// registers and reused by the K taps that read it, so a row costs (T - 1) * S + K loads
// instead of K * T. EDGE: some taps fall in the left or right padding (read as zeros).
template <int CB, int T, int K, int S, bool EDGE>
void nchwc_dw_slide(const NchwcConv& c, const float* xb, const float* w, const float* bias, float* y, const float* r,
                    int64_t oh, int64_t ow0) {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    constexpr int kIn = (T - 1) * S + K;
    const Conv2DParams& p = c.p;
    V acc[T];
    V b = V{} + 0.0f;
    if (bias != nullptr) PE_NC_LOAD(b, bias);
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[t] = b;
    const int64_t ih0 = oh * p.stride_h - p.pad_top;
    const float* xc = xb + (ow0 * S - p.pad_left) * CB;
    for (int64_t kh = 0; kh < p.KH; ++kh) {
        const int64_t ih = ih0 + kh * p.dilation_h;
        if (static_cast<uint64_t>(ih) >= static_cast<uint64_t>(p.H)) continue;
        const float* xr = xc + ih * p.W * CB;
        V xv[kIn];
        if constexpr (EDGE) {
            const int64_t iw0 = ow0 * S - p.pad_left;
#pragma GCC unroll 32
            for (int i = 0; i < kIn; ++i) {
                xv[i] = V{} + 0.0f;
                if (static_cast<uint64_t>(iw0 + i) < static_cast<uint64_t>(p.W)) PE_NC_LOAD(xv[i], xr + i * CB);
            }
        } else {
#pragma GCC unroll 32
            for (int i = 0; i < kIn; ++i) PE_NC_LOAD(xv[i], xr + i * CB);
        }
#pragma GCC unroll 8
        for (int kw = 0; kw < K; ++kw) {
            V wv;
            PE_NC_LOAD(wv, w + (kh * K + kw) * CB);
#pragma GCC unroll 16
            for (int t = 0; t < T; ++t) acc[t] += wv * xv[t * S + kw];
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) nchwc_store<CB>(acc[t], y + t * CB, r != nullptr ? r + t * CB : nullptr, p.ep);
    if (!nchwc_act_inline(p.ep.act)) act_row(y, T * CB, p.ep);
}

// A tile of n <= T pixels at column ow: checked for the padding when it reaches outside the
// interior columns [lo, hi).
template <int CB, int T, int K, int S>
inline void nchwc_dw_slide_n(int n, const NchwcConv& c, const float* xb, const float* w, const float* bias, float* y,
                             const float* r, int64_t oh, int64_t ow, int64_t lo, int64_t hi) {
    if (n == T) {
        if (ow < lo || ow + T > hi) {
            nchwc_dw_slide<CB, T, K, S, true>(c, xb, w, bias, y, r, oh, ow);
        } else {
            nchwc_dw_slide<CB, T, K, S, false>(c, xb, w, bias, y, r, oh, ow);
        }
    } else if constexpr (T > 1) {
        nchwc_dw_slide_n<CB, T - 1, K, S>(n, c, xb, w, bias, y, r, oh, ow, lo, hi);
    }
}

// Columns [ow, b) of one depthwise row in sliding tiles of up to T pixels, the last one shorter;
// only tiles that reach the left or right padding check their loads.
template <int CB, int T, int K, int S>
void nchwc_dw_slide_row(const NchwcConv& c, const float* xb, const float* w, const float* bias, float* yr,
                        const float* rr, int64_t oh, int64_t ow, int64_t b, int64_t lo, int64_t hi) {
    while (ow < b) {
        const int n = static_cast<int>(b - ow < T ? b - ow : T);
        nchwc_dw_slide_n<CB, T, K, S>(n, c, xb, w, bias, yr + ow * CB, rr ? rr + ow * CB : nullptr, oh, ow, lo, hi);
        ow += n;
    }
}

// Depthwise over flattened output pixels [q0, q0 + T) when no tap leaves the input (the
// driver wrote the padding out): one input pointer per pixel, so tiles span rows.
template <int CB, int T>
void nchwc_dw_flat(const NchwcConv& c, const float* xb, const float* w, const float* bias, float* y, const float* r,
                   int64_t q0) {
    typedef float V __attribute__((vector_size(CB * sizeof(float))));
    const Conv2DParams& p = c.p;
    V acc[T];
    V b = V{} + 0.0f;
    if (bias != nullptr) PE_NC_LOAD(b, bias);
    const float* xp[T];
    int64_t oh = q0 / p.OW, ow = q0 - oh * p.OW;
    for (int t = 0; t < T; ++t) {
        acc[t] = b;
        xp[t] = xb + (oh * p.stride_h * p.W + ow * p.stride_w) * CB;
        if (++ow == p.OW) {
            ow = 0;
            ++oh;
        }
    }
    for (int64_t kh = 0; kh < p.KH; ++kh) {
        for (int64_t kw = 0; kw < p.KW; ++kw) {
            const int64_t off = (kh * p.dilation_h * p.W + kw * p.dilation_w) * CB;
            V wv;
            PE_NC_LOAD(wv, w + (kh * p.KW + kw) * CB);
            for (int t = 0; t < T; ++t) {
                V xv;
                PE_NC_LOAD(xv, xp[t] + off);
                acc[t] += wv * xv;
            }
        }
    }
    for (int t = 0; t < T; ++t) nchwc_store<CB>(acc[t], y + t * CB, r != nullptr ? r + t * CB : nullptr, p.ep);
    if (!nchwc_act_inline(p.ep.act)) act_row(y, T * CB, p.ep);
}

template <int CB, int T>
inline void nchwc_dw_flat_n(int t, const NchwcConv& c, const float* xb, const float* w, const float* bias, float* y,
                            const float* r, int64_t q0) {
    if (t == T) {
        nchwc_dw_flat<CB, T>(c, xb, w, bias, y, r, q0);
    } else if constexpr (T > 1) {
        nchwc_dw_flat_n<CB, T - 1>(t, c, xb, w, bias, y, r, q0);
    }
}

template <int CB, int T>
void nchwc_dw(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1, int64_t q0,
              int64_t q1) {
    const Conv2DParams& p = c.p;
    const int64_t OB = (p.O + CB - 1) / CB;
    int64_t lo = 0, hi = 0;
    nchwc_interior(p, &lo, &hi);
    const bool no_edges = lo == 0 && hi == p.OW && p.pad_top == 0 && (p.OH - 1) * p.stride_h + (p.KH - 1) * p.dilation_h < p.H;
    // The sliding row kernel for the common kernel widths and strides (AVX2's 16 registers hold
    // half the tile).
    constexpr int TS = CB == 8 ? 4 : 8;
    using Slide = void (*)(const NchwcConv&, const float*, const float*, const float*, float*, const float*, int64_t,
                           int64_t, int64_t, int64_t, int64_t);
    Slide slide = nullptr;
    if (p.dilation_w == 1 && p.KW == 3 && p.stride_w == 1) slide = nchwc_dw_slide_row<CB, TS, 3, 1>;
    if (p.dilation_w == 1 && p.KW == 3 && p.stride_w == 2) slide = nchwc_dw_slide_row<CB, TS, 3, 2>;
    if (p.dilation_w == 1 && p.KW == 5 && p.stride_w == 1) slide = nchwc_dw_slide_row<CB, TS, 5, 1>;
    if (p.dilation_w == 1 && p.KW == 5 && p.stride_w == 2) slide = nchwc_dw_slide_row<CB, TS, 5, 2>;
    for (int64_t ob = ob0; ob < ob1; ++ob) {
        const float* xb = x + (n * OB + ob) * p.H * p.W * CB;
        const float* w = c.w + ob * p.KH * p.KW * CB;
        const float* bias = c.bias != nullptr ? c.bias + ob * CB : nullptr;
        const int64_t at = (n * OB + ob) * p.OH * p.OW * CB;
        if (no_edges) {
            const float* rr = c.residual != nullptr ? c.residual + at : nullptr;
            int64_t q = q0;
            for (; q + T <= q1; q += T) nchwc_dw_flat<CB, T>(c, xb, w, bias, y + at + q * CB, rr ? rr + q * CB : nullptr, q);
            if (q < q1) {
                nchwc_dw_flat_n<CB, T>(static_cast<int>(q1 - q), c, xb, w, bias, y + at + q * CB, rr ? rr + q * CB : nullptr, q);
            }
            continue;
        }
        for (int64_t oh = q0 / p.OW; oh * p.OW < q1; ++oh) {
            const int64_t a = q0 > oh * p.OW ? q0 - oh * p.OW : 0;  // this row's columns [a, b)
            const int64_t b = q1 < (oh + 1) * p.OW ? q1 - oh * p.OW : p.OW;
            float* yr = y + at + oh * p.OW * CB;
            const float* rr = c.residual != nullptr ? c.residual + at + oh * p.OW * CB : nullptr;
            if (slide != nullptr) {
                slide(c, xb, w, bias, yr, rr, oh, a, b, lo, hi);
                continue;
            }
            auto one = [&](int64_t ow, bool edge) {
                if (edge) {
                    nchwc_dw_tile<CB, 1, true>(c, xb, w, bias, yr + ow * CB, rr ? rr + ow * CB : nullptr, oh, ow);
                } else {
                    nchwc_dw_tile<CB, 1, false>(c, xb, w, bias, yr + ow * CB, rr ? rr + ow * CB : nullptr, oh, ow);
                }
            };
            const int64_t ilo = lo > a ? lo : a, ihi = hi < b ? hi : b;
            int64_t ow = a;
            for (; ow < b && ow < ilo; ++ow) one(ow, true);
            for (; ow + T <= ihi; ow += T) {
                nchwc_dw_tile<CB, T, false>(c, xb, w, bias, yr + ow * CB, rr ? rr + ow * CB : nullptr, oh, ow);
            }
            for (; ow < ihi; ++ow) one(ow, false);
            for (; ow < b; ++ow) one(ow, true);
        }
    }
}

// The task entry point (NchwcConvKernel) for block CB with tiles of up to F blocks x T pixels.
template <int CB, int F, int T>
void nchwc_conv_body(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                     int64_t q0, int64_t q1) {
    if (c.depthwise) {
        nchwc_dw<CB, (T > 4 ? 8 : 4)>(c, x, y, n, ob0, ob1, q0, q1);
        return;
    }
    const Conv2DParams& p = c.p;
    const int64_t OB = (p.O + CB - 1) / CB;
    const int ib = c.in_block;
    const int64_t in_blocks = ib == 1 ? p.C : (p.C + CB - 1) / CB;
    const float* xn = x + n * in_blocks * p.H * p.W * ib;
    const int64_t wob = c.icb_per_group * p.KH * p.KW * ib * CB;
    for (int64_t ob = ob0; ob < ob1;) {
        // Runs of F blocks or fewer, evened out (9 blocks: 3 + 3 + 3, not 4 + 4 + 1).
        const int64_t g = ob / c.ob_per_group;
        const int64_t end = ob1 < (g + 1) * c.ob_per_group ? ob1 : (g + 1) * c.ob_per_group;
        const int64_t runs = (end - ob + F - 1) / F;
        const int64_t f = (end - ob + runs - 1) / runs;
        const float* xg = xn + g * c.icb_per_group * p.H * p.W * ib;
        const int64_t o = (n * OB + ob) * p.OH * p.OW * CB;
        const float* rr = c.residual != nullptr ? c.residual + o : nullptr;
        if (ib == 1) {
            nchwc_range_f<CB, 1, F, T>(static_cast<int>(f), c, xg, c.w + ob * wob, y + o, rr, q0, q1);
        } else {
            nchwc_range_f<CB, CB, F, T>(static_cast<int>(f), c, xg, c.w + ob * wob, y + o, rr, q0, q1);
        }
        ob += f;
    }
}

}  // namespace
}  // namespace pyengine
