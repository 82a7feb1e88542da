// SPDX-License-Identifier: Apache-2.0
// int8 GEMM with AVX-512 VNNI: vpdpbusd multiplies 4 u8 activations by 4 s8 weights and adds
// the 4 products to an int32 lane, 64 multiply-adds per instruction (16 for a float FMA).
// Tile: 4 rows x 64 columns in 16 zmm accumulators. Compiled for VNNI by function attribute;
// the table sets it only after cpu_support_x86_avx512_vnni().
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_* through, which trips a false
// -Wmaybe-uninitialized (GCC bug 105593), as in gemm_x86_avx512.cpp.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/conv2d.h"
#include "kernels/qgemm.h"

#if defined(__AVX512F__)

namespace pyengine {

namespace {

#define PYENGINE_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

// Rows [m, m+R) against column panels [nb, nb + NB*16), all full.
template <int R, int NB>
PYENGINE_VNNI inline void tile(int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C, int64_t ldc,
                               int64_t n_valid) {
    __m512i acc[R][NB];
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_setzero_si512();
    const int64_t panel = Kp * kQgemmNr;  // bytes per 16-column panel
    for (int64_t k = 0; k < Kp; k += 4) {
        __m512i b[NB];
        for (int j = 0; j < NB; ++j) b[j] = _mm512_loadu_si512(Bp + j * panel + k * kQgemmNr);
        for (int r = 0; r < R; ++r) {
            int32_t a4;
            std::memcpy(&a4, A + r * lda + k, 4);
            const __m512i a = _mm512_set1_epi32(a4);
            for (int j = 0; j < NB; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], a, b[j]);
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int j = 0; j < NB; ++j) {
            const int64_t left = n_valid - j * kQgemmNr;
            if (left <= 0) break;
            const __mmask16 mask = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
            _mm512_mask_storeu_epi32(C + r * ldc + j * kQgemmNr, mask, acc[r][j]);
        }
    }
}

template <int NB>
PYENGINE_VNNI void rows(int64_t M, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
                        int64_t ldc, int64_t n_valid) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) tile<4, NB>(Kp, A + m * lda, lda, Bp, C + m * ldc, ldc, n_valid);
    for (; m < M; ++m) tile<1, NB>(Kp, A + m * lda, lda, Bp, C + m * ldc, ldc, n_valid);
}

}  // namespace

PYENGINE_VNNI void qgemm_avx512_vnni(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda,
                                     const int8_t* Bp, int32_t* C, int64_t ldc) {
    // Rows in chunks that keep their A bytes in L1 while 64 columns of B stream past.
    constexpr int64_t kRowChunk = 64;
    for (int64_t m0 = 0; m0 < M; m0 += kRowChunk) {
        const int64_t mc = M - m0 < kRowChunk ? M - m0 : kRowChunk;
        for (int64_t nb = 0; nb < N; nb += 4 * kQgemmNr) {
            const int64_t left = N - nb;
            const int8_t* b = Bp + nb * Kp;
            const uint8_t* a = A + m0 * lda;
            int32_t* c = C + m0 * ldc + nb;
            if (left > 3 * kQgemmNr) rows<4>(mc, Kp, a, lda, b, c, ldc, left);
            else if (left > 2 * kQgemmNr) rows<3>(mc, Kp, a, lda, b, c, ldc, left);
            else if (left > kQgemmNr) rows<2>(mc, Kp, a, lda, b, c, ldc, left);
            else rows<1>(mc, Kp, a, lda, b, c, ldc, left);
        }
    }
}

namespace {

// Depthwise over a run of pixels, 16 channels at a time with their weights in registers and four
// pixels in flight (four independent sums hide the multiply-add latency). kVnni: one vpdpwssd
// per tap: the u8 values and the int16 weights sit in the low half of each 32-bit lane with a
// zero (value) beside them, so the pair's dot product is the one product. It is written in
// inline asm so this file needs no VNNI target; the table takes it only on a VNNI CPU.
// Without: vpmulld and vpaddd.
template <bool kVnni>
inline __m512i dw_mul_add(__m512i acc, __m512i x, __m512i w) {
    if constexpr (kVnni) {
        __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
        return acc;
    } else {
        return _mm512_add_epi32(acc, _mm512_mullo_epi32(x, w));
    }
}

inline __m512i dw_load(const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

template <bool kVnni>
void dw_row(const uint8_t* const* tap_x, int64_t taps, int64_t pix_step, const int16_t* w, int64_t C, int64_t n,
            int32_t* acc) {
    constexpr int64_t kMaxTaps = 25;  // up to 5x5 with the weights in registers
    if (taps > kMaxTaps) {
        qdw_row(tap_x, taps, pix_step, w, C, n, acc);
        return;
    }
    int64_t c = 0;
    for (; c + 16 <= C; c += 16) {
        __m512i wv[kMaxTaps];
        for (int64_t t = 0; t < taps; ++t) {
            wv[t] = _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + t * C + c)));
        }
        int64_t p = 0;
        for (; p + 4 <= n; p += 4) {
            __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t t = 0; t < taps; ++t) {
                const uint8_t* xt = tap_x[t] + p * pix_step + c;
                a0 = dw_mul_add<kVnni>(a0, dw_load(xt), wv[t]);
                a1 = dw_mul_add<kVnni>(a1, dw_load(xt + pix_step), wv[t]);
                a2 = dw_mul_add<kVnni>(a2, dw_load(xt + 2 * pix_step), wv[t]);
                a3 = dw_mul_add<kVnni>(a3, dw_load(xt + 3 * pix_step), wv[t]);
            }
            int32_t* out = acc + p * C + c;
            _mm512_storeu_si512(out, a0);
            _mm512_storeu_si512(out + C, a1);
            _mm512_storeu_si512(out + 2 * C, a2);
            _mm512_storeu_si512(out + 3 * C, a3);
        }
        for (; p < n; ++p) {
            __m512i a = _mm512_setzero_si512();
            for (int64_t t = 0; t < taps; ++t) a = dw_mul_add<kVnni>(a, dw_load(tap_x[t] + p * pix_step + c), wv[t]);
            _mm512_storeu_si512(acc + p * C + c, a);
        }
    }
    for (; c < C; ++c) {  // the channels past the last 16
        for (int64_t p = 0; p < n; ++p) {
            int32_t s = 0;
            for (int64_t t = 0; t < taps; ++t) s += int32_t(tap_x[t][p * pix_step + c]) * w[t * C + c];
            acc[p * C + c] = s;
        }
    }
}

}  // namespace

// Depthwise 3x3 stride 1 with two taps per vpdpwssd: each 32-bit lane holds the values of two
// horizontally adjacent pixels of one channel as int16, P(j) = (X(j - 1), X(j)), and the weights
// of kernel columns 0 and 1 likewise, so one instruction does both products (qdw_row's lanes
// waste their upper half). Output column ow takes P(ow) against (w0, w1) and P(ow + 2) against
// (w2, 0): per kernel row two multiply-adds for three taps, from plain loads. The P row of an
// input row is built once (two byte interleaves and a widening per 16 channels) and serves the
// three output rows that read it. The widening is AVX512BW: the table takes this kernel only
// on VNNI CPUs, which have BW.
namespace {

#define PYENGINE_BW __attribute__((target("avx512f,avx512bw")))

struct PixelPairs {  // P(j) for 16 channels
    int32_t lanes[16];
};
inline __m512i load_pairs(const PixelPairs& p) { return _mm512_loadu_si512(p.lanes); }

// P(0) .. P(W + 1) of input row ih, channels [c, c + 16).
PYENGINE_BW void build_pairs(const uint8_t* x, int64_t ih, int64_t H, int64_t W, int64_t xs, int64_t c, uint8_t pad,
                             PixelPairs* row) {
    const bool inside = ih >= 0 && ih < H;
    const __m128i pad_v = _mm_set1_epi8(static_cast<char>(pad));
    const uint8_t* src = x + ih * W * xs + c;
    __m128i prev = pad_v;  // X(-1)
    for (int64_t j = 0; j < W + 2; ++j) {
        const __m128i cur =
            inside && j < W ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j * xs)) : pad_v;
        // bytes (X(j-1)[k], X(j)[k]) for k < 16 in channel order, widened to int16 pairs
        const __m256i pairs = _mm256_set_m128i(_mm_unpackhi_epi8(prev, cur), _mm_unpacklo_epi8(prev, cur));
        _mm512_storeu_si512(row[j].lanes, _mm512_cvtepu8_epi16(pairs));
        prev = cur;
    }
}

}  // namespace

PYENGINE_BW void qdw3x3s1_avx512_vnni(const uint8_t* x, int64_t H, int64_t W, int64_t xs, int64_t C, uint8_t pad,
                                      const int16_t* w, int64_t oh0, int64_t oh1, int32_t* acc) {
    const int64_t cols = W + 2;
    // Scratch from baseline code (conv_scratch): a std::vector here would leave weak symbols
    // compiled for AVX-512 that baseline code could end up calling.
    PixelPairs* rows_buf = reinterpret_cast<PixelPairs*>(conv_scratch(0, static_cast<size_t>(3 * cols * 16)));
    for (int64_t c = 0; c < C; c += 16) {
        // (w0, w1) and (w2, 0) per kernel row, low half first.
        __m512i w01[3], w2[3];
        for (int kh = 0; kh < 3; ++kh) {
            const int16_t* wk = w + kh * 3 * C + c;
            const __m512i t0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk)));
            const __m512i t1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + C)));
            w01[kh] = _mm512_or_si512(t0, _mm512_slli_epi32(t1, 16));
            w2[kh] = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + 2 * C)));
        }
        int64_t held[3] = {-9, -9, -9};  // the input row each third of rows_buf holds
        for (int64_t oh = oh0; oh < oh1; ++oh) {
            const PixelPairs* r[3];
            for (int kh = 0; kh < 3; ++kh) {
                const int64_t ih = oh + kh - 1, slot = (ih + 3) % 3;
                PixelPairs* row = rows_buf + slot * cols;
                if (held[slot] != ih) {
                    build_pairs(x, ih, H, W, xs, c, pad, row);
                    held[slot] = ih;
                }
                r[kh] = row;
            }
            int32_t* out = acc + (oh - oh0) * W * C + c;
            int64_t ow = 0;
            for (; ow + 4 <= W; ow += 4) {
                __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
                for (int kh = 0; kh < 3; ++kh) {
                    const PixelPairs* q = r[kh] + ow;
                    const __m512i p2 = load_pairs(q[2]), p3 = load_pairs(q[3]);
                    a0 = dw_mul_add<true>(a0, load_pairs(q[0]), w01[kh]);
                    a1 = dw_mul_add<true>(a1, load_pairs(q[1]), w01[kh]);
                    a2 = dw_mul_add<true>(a2, p2, w01[kh]);
                    a3 = dw_mul_add<true>(a3, p3, w01[kh]);
                    a0 = dw_mul_add<true>(a0, p2, w2[kh]);
                    a1 = dw_mul_add<true>(a1, p3, w2[kh]);
                    a2 = dw_mul_add<true>(a2, load_pairs(q[4]), w2[kh]);
                    a3 = dw_mul_add<true>(a3, load_pairs(q[5]), w2[kh]);
                }
                _mm512_storeu_si512(out + ow * C, a0);
                _mm512_storeu_si512(out + (ow + 1) * C, a1);
                _mm512_storeu_si512(out + (ow + 2) * C, a2);
                _mm512_storeu_si512(out + (ow + 3) * C, a3);
            }
            for (; ow < W; ++ow) {
                __m512i a = _mm512_setzero_si512();
                for (int kh = 0; kh < 3; ++kh) {
                    a = dw_mul_add<true>(a, load_pairs(r[kh][ow]), w01[kh]);
                    a = dw_mul_add<true>(a, load_pairs(r[kh][ow + 2]), w2[kh]);
                }
                _mm512_storeu_si512(out + ow * C, a);
            }
        }
    }
}

void qdw_row_avx512(const uint8_t* const* tap_x, int64_t taps, int64_t pix_step, const int16_t* w, int64_t C,
                    int64_t n, int32_t* acc) {
    dw_row<false>(tap_x, taps, pix_step, w, C, n, acc);
}

void qdw_row_avx512_vnni(const uint8_t* const* tap_x, int64_t taps, int64_t pix_step, const int16_t* w, int64_t C,
                         int64_t n, int32_t* acc) {
    dw_row<true>(tap_x, taps, pix_step, w, C, n, acc);
}

namespace {

// The epilogue's lane steps, shared by the float and the code epilogues (the portable ones'
// operations, lane by lane, so the results are the same bit for bit): per 16 columns the
// integer offset and scale; per sum the real value (one rounding to float, the scale, the
// activation clamp) and its point on the output grid, clamped to the output's range.
//
// The grid point takes one clamp, not two: x -> fl(x / y_scale) (as fl(x * inv_y)) and the
// clamp to the output's range are monotone, so clamping the real value to [lo, hi] and then its
// grid point to [q_lo, q_hi] is clamping the unclamped grid point to
// [clamp(fl(lo * inv_y)), clamp(fl(hi * inv_y))] (clamp: to [q_lo, q_hi]), bit for bit.
class EpilogueLanes {
public:
    explicit EpilogueLanes(const QEpilogue& e)
        : e_(e), lo_(_mm512_set1_ps(e.lo)), hi_(_mm512_set1_ps(e.hi)), inv_y_(_mm512_set1_ps(1.0f / e.y_scale)),
          grid_lo_(_mm512_set1_ps(grid_bound(e, e.lo))), grid_hi_(_mm512_set1_ps(grid_bound(e, e.hi))),
          xzp_(_mm512_set1_epi32(e.x_zero_point)) {}

    // Columns [n, n + 16) masked to N: their offsets (bias - x_zero_point * wsum) and scales.
    __mmask16 columns(int64_t n, int64_t N, __m512i* off, __m512* scale) const {
        const __mmask16 mask = N - n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (N - n)) - 1);
        *off = _mm512_mullo_epi32(xzp_, _mm512_maskz_loadu_epi32(mask, e_.wsum + n));
        *off = _mm512_sub_epi32(e_.bias ? _mm512_maskz_loadu_epi32(mask, e_.bias + n) : _mm512_setzero_si512(), *off);
        *scale = _mm512_maskz_loadu_ps(mask, e_.scale + n);
        return mask;
    }
    __m512 real(__m512i acc, __m512i off, __m512 scale) const {
        return _mm512_min_ps(_mm512_max_ps(unclamped(acc, off, scale), lo_), hi_);
    }
    // The real value's grid point, relative to the output's zero point, not yet rounded.
    __m512 grid(__m512i acc, __m512i off, __m512 scale) const {
        return _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(unclamped(acc, off, scale), inv_y_), grid_lo_), grid_hi_);
    }

private:
    static __m512 unclamped(__m512i acc, __m512i off, __m512 scale) {
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc, off)), scale);
    }
    static float grid_bound(const QEpilogue& e, float v) {
        const float q = v * (1.0f / e.y_scale);
        return std::min(std::max(q, static_cast<float>(e.q_lo - e.y_zero_point)),
                        static_cast<float>(e.q_hi - e.y_zero_point));
    }

    const QEpilogue& e_;
    const __m512 lo_, hi_, inv_y_, grid_lo_, grid_hi_;
    const __m512i xzp_;
};

}  // namespace

void qepilogue_avx512(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, float* y, int64_t y_m,
                      int64_t y_n) {
    if (y_n != 1) {  // columns strided in y (an NCHW output): the portable tile-and-transpose
        qepilogue(e, C, ldc, M, N, y, y_m, y_n);
        return;
    }
    const EpilogueLanes lanes(e);
    const __m512 y_scale = _mm512_set1_ps(e.y_scale);
    for (int64_t n = 0; n < N; n += 16) {
        __m512i off;
        __m512 scale;
        const __mmask16 mask = lanes.columns(n, N, &off, &scale);
        for (int64_t m = 0; m < M; ++m) {
            const __m512i acc = _mm512_maskz_loadu_epi32(mask, C + m * ldc + n);
            __m512 v;
            if (e.requantize) {
                // Round half to even (roundscale, exact on the clamped grid); adding +0 turns the
                // -0 it gives for (-0.5, 0) into the +0 the portable rounding gives.
                const __m512 q = _mm512_roundscale_ps(lanes.grid(acc, off, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                v = _mm512_mul_ps(_mm512_add_ps(q, _mm512_setzero_ps()), y_scale);
            } else {
                v = lanes.real(acc, off, scale);
            }
            _mm512_mask_storeu_ps(y + m * y_m + n, mask, v);
        }
    }
}

namespace {

// 64 codes (four vectors of int32 in 0..255) to 64 bytes in order: two signed packs to int16
// and one unsigned pack to bytes (exact on 0..255) leave each 128-bit lane holding 4 codes of
// each vector, and one dword permute puts them back in order: 4 instructions for what four
// vpmovdb (2 each) and four stores do. The packs are AVX512BW, written in inline asm so this
// file needs no BW target; the table takes this path only where the CPU has BW.
inline __m512i pack_codes(__m512i q0, __m512i q1, __m512i q2, __m512i q3) {
    __m512i w01, w23, b;
    __asm__("vpackssdw %2, %1, %0" : "=v"(w01) : "v"(q0), "v"(q1));
    __asm__("vpackssdw %2, %1, %0" : "=v"(w23) : "v"(q2), "v"(q3));
    __asm__("vpackuswb %2, %1, %0" : "=v"(b) : "v"(w01), "v"(w23));
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), b);
}

template <bool kPack>
void codes_epilogue(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, uint8_t* y, int64_t y_m,
                    int32_t shift) {
    const EpilogueLanes lanes(e);
    const __m512i code0 = _mm512_set1_epi32(e.y_zero_point + shift);
    // Up to 64 columns at a time with their offsets and scales in registers, row by row, so the
    // sums are read and the codes written in runs along each row.
    constexpr int kGroup = 4;
    // The packs saturate where vpmovdb wraps: only for codes that fit a byte, as they do on an
    // int8 grid shifted by 128 or a uint8 grid unshifted.
    const bool pack = kPack && e.q_lo + shift >= 0 && e.q_hi + shift <= 255;
    for (int64_t n0 = 0; n0 < N; n0 += kGroup * 16) {
        const int vecs = static_cast<int>(std::min<int64_t>(kGroup, (N - n0 + 15) / 16));
        __m512i off[kGroup];
        __m512 scale[kGroup];
        __mmask16 mask[kGroup];
        for (int j = 0; j < vecs; ++j) mask[j] = lanes.columns(n0 + 16 * j, N, &off[j], &scale[j]);
        const int64_t last = std::min<int64_t>(16, N - n0 - 16 * (vecs - 1));  // columns in the last vector
        for (int64_t m = 0; m < M; ++m) {
            const int32_t* c = C + m * ldc + n0;
            uint8_t* out = y + m * y_m + n0;
            // vcvtps2dq rounds half to even; the grid point is clamped, so the code is 0..255.
            __m512i q[kGroup];
            for (int j = 0; j < vecs; ++j) {
                const __m512 g = lanes.grid(_mm512_maskz_loadu_epi32(mask[j], c + 16 * j), off[j], scale[j]);
                q[j] = _mm512_add_epi32(_mm512_cvtps_epi32(g), code0);
            }
            if (pack && vecs == kGroup && last == 16) {
                _mm512_storeu_si512(out, pack_codes(q[0], q[1], q[2], q[3]));
                continue;
            }
            for (int j = 0; j < vecs; ++j) {
                const __m128i bytes = _mm512_cvtepi32_epi8(q[j]);
                if (j + 1 < vecs || last == 16) {
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 * j), bytes);
                } else {
                    alignas(16) uint8_t tmp[16];
                    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
                    std::memcpy(out + 16 * j, tmp, static_cast<size_t>(last));
                }
            }
        }
    }
}

}  // namespace

void qepilogue_codes_avx512(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, uint8_t* y,
                            int64_t y_m, int32_t shift) {
    codes_epilogue<false>(e, C, ldc, M, N, y, y_m, shift);
}

void qepilogue_codes_avx512_bw(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, uint8_t* y,
                               int64_t y_m, int32_t shift) {
    codes_epilogue<true>(e, C, ldc, M, N, y, y_m, shift);
}

namespace {
// 16 floats to 16 u8 codes (quantize_u8_avx512's lanes).
// x / s, correctly rounded as a division is, from the reciprocal (a quarter of a division's
// cost): q = x * (1/s), then one Markstein step q + (x - q * s) * (1/s) (the residual exact by
// FMA) gives the correctly rounded quotient when 1/s is the correctly rounded reciprocal
// (checked against vdivps on 640 million values). Infinite and NaN quotients skip the step,
// which would make them NaN.
inline __m512 divide(__m512 x, __m512 s, __m512 inv) {
    const __m512 q = _mm512_mul_ps(x, inv);
    const __mmask16 finite = _mm512_cmp_ps_mask(_mm512_abs_ps(q), _mm512_set1_ps(INFINITY), _CMP_LT_OQ);
    return _mm512_mask_mov_ps(q, finite, _mm512_fmadd_ps(_mm512_fnmadd_ps(q, s, x), inv, q));
}

inline __m128i quantize16(__m512 x, __m512 s, __m512 inv, __m512 lo, __m512 hi, __m512i off) {
    __m512 r = divide(x, s, inv);
    r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r, r, _CMP_ORD_Q), r);
    r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
    return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(r), off));
}
}  // namespace

void quantize_u8_avx512(const float* x, int64_t n, float scale, int32_t zero_point, int32_t q_lo, int32_t q_hi,
                        int32_t shift, uint8_t* out) {
    // Clamping x / scale to [q_lo - zp, q_hi - zp] (integers) before rounding equals rounding,
    // adding zp and saturating; NaN lanes become 0 (the zero point), as quantize_value does.
    // vcvtps2dq rounds half to even under the default MXCSR.
    const __m512 s = _mm512_set1_ps(scale), inv = _mm512_set1_ps(1.0f / scale);
    const __m512 lo = _mm512_set1_ps(static_cast<float>(q_lo - zero_point));
    const __m512 hi = _mm512_set1_ps(static_cast<float>(q_hi - zero_point));
    const __m512i off = _mm512_set1_epi32(zero_point + shift);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), quantize16(_mm512_loadu_ps(x + i), s, inv, lo, hi, off));
    }
    for (; i < n; ++i) out[i] = static_cast<uint8_t>(quantize_value(x[i], scale, zero_point, q_lo, q_hi) + shift);
}

void quantize_u8_rows_avx512(const float* x, int64_t rows, int64_t width, int64_t x_stride, float scale,
                             int32_t zero_point, int32_t q_lo, int32_t q_hi, int32_t shift, uint8_t* out,
                             int64_t out_stride) {
    if (width != 16) {
        for (int64_t r = 0; r < rows; ++r) {
            quantize_u8_avx512(x + r * x_stride, width, scale, zero_point, q_lo, q_hi, shift, out + r * out_stride);
        }
        return;
    }
    const __m512 s = _mm512_set1_ps(scale), inv = _mm512_set1_ps(1.0f / scale);
    const __m512 lo = _mm512_set1_ps(static_cast<float>(q_lo - zero_point));
    const __m512 hi = _mm512_set1_ps(static_cast<float>(q_hi - zero_point));
    const __m512i off = _mm512_set1_epi32(zero_point + shift);
    for (int64_t r = 0; r < rows; ++r) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + r * out_stride),
                         quantize16(_mm512_loadu_ps(x + r * x_stride), s, inv, lo, hi, off));
    }
}

}  // namespace pyengine

#endif  // defined(__AVX512F__)
