// SPDX-License-Identifier: Apache-2.0
// int8 GEMM on AMX (Advanced Matrix Extensions, Sapphire Rapids and later): one tdpbusd takes a
// 16x64 u8 tile and a 64x16 s8 tile into 16x16 int32 sums, 16384 multiply-adds; vpdpbusd on a
// zmm does 64. Same sums as the other int8 GEMMs bit for bit (int32, no saturation).
//
// The packed weights (qgemm.h, [N/16][Kp/4][16][4]) are already in AMX's B-tile layout: k rows
// [k, k + 64) of a 16-column panel are 16 consecutive 64-byte tile rows. A block is 32 rows x 32
// columns in four accumulator tiles; two A tiles and two B tiles take the other four of the
// eight. Every tile has one shape, so one tile configuration serves the whole call: the last k
// tile of the weights comes zero padded from a copy, so an A tile may read whatever bytes lie
// past Kp (the next row's: they meet zero weights); only a block whose reads would run past
// A's last row, or that has rows past M, is copied, zero padded.
//
// Compiled for AMX by function attribute; the table picks it only after
// cpu_support_x86_amx_int8(), which also asks Linux for the tile state.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/conv2d.h"
#include "kernels/qgemm.h"

#if defined(__AVX512F__)

namespace pyengine {

void qgemm_avx512_vnni(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp,
                       int32_t* C, int64_t ldc);

namespace {

#define PYENGINE_AMX __attribute__((target("amx-tile,amx-int8,avx512f")))

constexpr int64_t kTileRows = 16, kTileBytes = 64;  // a tile: 16 rows of 64 bytes
constexpr int64_t kTileK = 64;                      // k per tdpbusd (u8 A columns)

// LDTILECFG's 64-byte operand (palette 1).
struct alignas(64) TileConfig {
    uint8_t palette = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

// Tiles 0-3: sums (rows i, columns j at 2 * i + j); 4, 5: A rows [0, 16) and [16, 32); 6, 7:
// B panels 0 and 1. All 16 rows x 64 bytes.
PYENGINE_AMX void configure_tiles() {
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) {
        cfg.colsb[t] = kTileBytes;
        cfg.rows[t] = kTileRows;
    }
    _tile_loadconfig(&cfg);
}

// A 16x16 sum tile into C (rows x cols of it valid), through a buffer where it is partial.
PYENGINE_AMX inline void store_sums(int tile_index, int32_t* C, int64_t ldc, int64_t rows, int64_t cols) {
    alignas(64) int32_t part[kTileRows * kTileRows];
    const bool full = rows == kTileRows && cols == kTileRows;
    int32_t* dst = full ? C : part;
    const int64_t stride = full ? ldc * 4 : kTileRows * 4;
    switch (tile_index) {  // tile numbers are immediates
        case 0: _tile_stored(0, dst, stride); break;
        case 1: _tile_stored(1, dst, stride); break;
        case 2: _tile_stored(2, dst, stride); break;
        default: _tile_stored(3, dst, stride); break;
    }
    if (full) return;
    for (int64_t r = 0; r < rows; ++r) std::memcpy(C + r * ldc, part + r * kTileRows, static_cast<size_t>(cols) * 4);
}

}  // namespace

PYENGINE_AMX void qgemm_amx(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp,
                            int32_t* C, int64_t ldc) {
    // A few rows fill a 16-row tile poorly: vpdpbusd is faster there.
    if (M < kTileRows) {
        qgemm_avx512_vnni(M, N, Kp, A, lda, Bp, C, ldc);
        return;
    }
    const int64_t Kr = (Kp + kTileK - 1) / kTileK * kTileK;  // k in whole tiles
    const int64_t k_last = Kr - kTileK;                      // where the last k tile starts
    const bool k_whole = Kr == Kp;
    const int64_t panels = (N + kQgemmNr - 1) / kQgemmNr, panel_bytes = Kp * kQgemmNr;
    // Scratch from baseline code (conv_scratch): a std::vector here would leave weak symbols
    // compiled for AVX-512 that baseline code could end up calling.
    const size_t tail_bytes = static_cast<size_t>(panels * kTileRows * kTileBytes);
    int8_t* b_tail = nullptr;
    if (!k_whole) {
        // Each panel's last, partial k tile, zero padded to 16 tile rows (read past Kp, the packed
        // weights would run into the next panel or off the end).
        b_tail = reinterpret_cast<int8_t*>(conv_scratch(1, (tail_bytes + 3) / 4));
        std::memset(b_tail, 0, tail_bytes);
        for (int64_t p = 0; p < panels; ++p) {
            std::memcpy(b_tail + p * kTileRows * kTileBytes, Bp + p * panel_bytes + k_last * kQgemmNr,
                        static_cast<size_t>((Kp - k_last) * kQgemmNr));
        }
    }
    auto b_tile = [&](int64_t p, int64_t k) -> const int8_t* {
        return !k_whole && k == k_last ? b_tail + p * kTileRows * kTileBytes : Bp + p * panel_bytes + k * kQgemmNr;
    };
    configure_tiles();
    for (int64_t m0 = 0; m0 < M; m0 += 2 * kTileRows) {
        const int64_t rows = std::min<int64_t>(2 * kTileRows, M - m0);
        const bool two_m = rows > kTileRows;
        const uint8_t* a = A + m0 * lda;
        int64_t a_stride = lda;
        const bool reads_past_a = (m0 + 2 * kTileRows - 1) * lda + Kr > (M - 1) * lda + Kp;  // A's last byte
        if (rows < 2 * kTileRows || (!k_whole && reads_past_a)) {
            const size_t pad_bytes = static_cast<size_t>(2 * kTileRows * Kr);
            uint8_t* a_pad = reinterpret_cast<uint8_t*>(conv_scratch(0, (pad_bytes + 3) / 4));
            std::memset(a_pad, 0, pad_bytes);
            for (int64_t r = 0; r < rows; ++r) std::memcpy(a_pad + r * Kr, A + (m0 + r) * lda, static_cast<size_t>(Kp));
            a = a_pad;
            a_stride = Kr;
        }
        for (int64_t p = 0; p < panels; p += 2) {
            const bool two_n = p + 1 < panels;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t k = 0; k < Kr; k += kTileK) {
                _tile_loadd(4, a + k, a_stride);
                _tile_loadd(6, b_tile(p, k), kTileBytes);
                _tile_dpbusd(0, 4, 6);
                if (two_n) {
                    _tile_loadd(7, b_tile(p + 1, k), kTileBytes);
                    _tile_dpbusd(1, 4, 7);
                }
                if (two_m) {
                    _tile_loadd(5, a + kTileRows * a_stride + k, a_stride);
                    _tile_dpbusd(2, 5, 6);
                    if (two_n) _tile_dpbusd(3, 5, 7);
                }
            }
            for (int i = 0; i < (two_m ? 2 : 1); ++i) {
                for (int j = 0; j < (two_n ? 2 : 1); ++j) {
                    const int64_t r0 = i * kTileRows, c0 = (p + j) * kQgemmNr;
                    store_sums(2 * i + j, C + (m0 + r0) * ldc + c0, ldc, std::min(kTileRows, rows - r0),
                               std::min(kQgemmNr, N - c0));
                }
            }
        }
    }
    _tile_release();  // back to the init state: no tile data to save at a context switch
}

}  // namespace pyengine

#endif  // defined(__AVX512F__)
