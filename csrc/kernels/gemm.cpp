// SPDX-License-Identifier: Apache-2.0
#include "kernels/gemm.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <cstdlib>
#include <memory>
#include <new>

#include "kernels/dispatch.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

// Cache blocking: a packed A block (kMC x kKC) stays in L2, a B panel (kKC x nr) in L1.
constexpr int64_t kKC = 256;
constexpr int64_t kMC = 96;
constexpr int64_t kNC = 4096;
// Below this many multiply-adds a GEMM runs on one thread (waking workers costs more).
constexpr int64_t kParallelMin = int64_t(1) << 18;

// Per-thread packing buffers, reused across calls.
struct PackBuffer {
    float* get(size_t floats) {
        if (floats > size) {
            std::free(data);
            size = (floats + 15) / 16 * 16;
            data = static_cast<float*>(std::aligned_alloc(64, size * sizeof(float)));
            if (data == nullptr) {
                size = 0;
                throw std::bad_alloc();
            }
        }
        return data;
    }
    ~PackBuffer() { std::free(data); }
    float* data = nullptr;
    size_t size = 0;
};
thread_local PackBuffer tls_pack_a, tls_pack_b;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Panel p of B (columns j0.. j0+nr, rows k0..k0+kc) as kc rows of nr floats, zero-padded.
void pack_b_panel(const float* B, int64_t ldb, bool trans_b, int64_t k0, int64_t kc, int64_t j0,
                  int64_t n, int nr, float* dst) {
    if (!trans_b) {
        // Whole rows of the common widths as fixed-size copies (inlined by the compiler).
        auto rows = [&](auto width) {
            constexpr int64_t kW = decltype(width)::value;
            for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * kW, B + (k0 + k) * ldb + j0, kW * sizeof(float));
        };
        if (n == nr && nr == 32) return rows(std::integral_constant<int64_t, 32>{});
        if (n == nr && nr == 16) return rows(std::integral_constant<int64_t, 16>{});
        if (n == nr && nr == 8) return rows(std::integral_constant<int64_t, 8>{});
        for (int64_t k = 0; k < kc; ++k) {
            const float* src = B + (k0 + k) * ldb + j0;
            float* d = dst + k * nr;
            int64_t j = 0;
            for (; j < n; ++j) d[j] = src[j];
            for (; j < nr; ++j) d[j] = 0.0f;
        }
    } else {
        for (int64_t j = 0; j < nr; ++j) {
            if (j < n) {
                const float* src = B + (j0 + j) * ldb + k0;
                for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = src[k];
            } else {
                for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = 0.0f;
            }
        }
    }
}

// Rows i0..i0+m of A (columns k0..k0+kc) as kc columns of mr floats, zero-padded.
void pack_a_panel(const float* A, int64_t lda, int64_t k0, int64_t kc, int64_t i0, int64_t m, int mr,
                  float* dst) {
    for (int64_t i = 0; i < mr; ++i) {
        if (i < m) {
            const float* src = A + (i0 + i) * lda + k0;
            for (int64_t k = 0; k < kc; ++k) dst[k * mr + i] = src[k];
        } else {
            for (int64_t k = 0; k < kc; ++k) dst[k * mr + i] = 0.0f;
        }
    }
}

// How many tasks to split `work` multiply-adds into.
int64_t task_count(int64_t work, int64_t max_tasks) {
    const int threads = num_threads();
    if (threads <= 1 || work < kParallelMin) return 1;
    return std::max<int64_t>(1, std::min<int64_t>(max_tasks, int64_t(threads) * 4));
}

}  // namespace

size_t gemm_packed_b_size(int nr, int64_t K, int64_t N) {
    return static_cast<size_t>(ceil_div(N, nr) * nr * K);
}

void gemm_pack_b(int nr, int64_t K, int64_t N, const float* B, int64_t ldb, bool trans_b, float* dst) {
    for (int64_t p = 0; p * nr < N; ++p) {
        const int64_t j0 = p * nr;
        pack_b_panel(B, ldb, trans_b, 0, K, j0, std::min<int64_t>(nr, N - j0), nr, dst + p * K * nr);
    }
}

size_t gemm_packed_a_size(int mr, int64_t M, int64_t K) {
    return static_cast<size_t>(ceil_div(M, mr) * mr * K);
}

void gemm_pack_a(int mr, int64_t M, int64_t K, const float* A, int64_t lda, float* dst) {
    for (int64_t q = 0; q * mr < M; ++q) {
        pack_a_panel(A, lda, 0, K, q * mr, std::min<int64_t>(mr, M - q * mr), mr, dst + q * K * mr);
    }
}

void gemm_driver(const GemmMicroKernel& uk, int64_t M, int64_t N, int64_t K, const float* A,
                 int64_t lda, const float* B, int64_t ldb, bool trans_b, float* C, int64_t ldc,
                 const Epilogue& ep, const float* packed_b, const float* packed_a) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {  // an empty sum: only the epilogue
        for (int64_t i = 0; i < M; ++i) {
            for (int64_t j = 0; j < N; ++j) {
                const float b = ep.bias ? ep.bias[ep.bias_per_row ? i : j] : 0.0f;
                C[i * ldc + j] = activate(b, ep);
            }
        }
        return;
    }
    const int mr = uk.mr, nr = uk.nr;
    const int64_t n_panels_all = ceil_div(N, nr);

    // One or two rows: a row kernel streams B rows as long contiguous runs.
    if (packed_b == nullptr && packed_a == nullptr && !trans_b && M <= 2 && uk.row != nullptr) {
        int64_t width = uk.row_nr;
        if (K * N * 4 > (int64_t(1) << 20)) {  // B beyond L2: one wide stream per thread
            const int64_t per_thread = ceil_div(N, task_count(M * N * K, ceil_div(N, uk.row_nr)));
            width = std::max(width, ceil_div(per_thread, uk.row_nr) * uk.row_nr);
        }
        const int64_t chunks = ceil_div(N, width);
        const int64_t tasks = task_count(M * N * K, M * chunks);
        parallel_for(tasks, [&](int64_t t) {
            const int64_t q0 = M * chunks * t / tasks, q1 = M * chunks * (t + 1) / tasks;
            for (int64_t q = q0; q < q1; ++q) {
                const int64_t i = q / chunks, j0 = (q % chunks) * width;
                const int n = static_cast<int>(std::min<int64_t>(width, N - j0));
                uk.row(K, A + i * lda, B + j0, ldb, C + i * ldc + j0, n, &ep, i, j0);
            }
        });
        return;
    }

    // Few rows of A: no packing. Each element of B is used at most M times, so copying B into
    // panels would cost as much as the multiply; the micro-kernel reads B rows in place.
    if (packed_b == nullptr && packed_a == nullptr && !trans_b && M <= 2 * mr) {
        // K in blocks so that consecutive column strips read neighbouring cache lines of the
        // same B rows (one long strip would stride a page per k and defeat the prefetcher).
        // Short blocks when B is larger than L2 (streamed once), long ones when it stays cached.
        const int64_t kb = K * N * 4 > (int64_t(1) << 20) ? 16 : 256;
        const int64_t tasks = task_count(M * N * K, n_panels_all);
        parallel_for(tasks, [&](int64_t t) {
            const int64_t p0 = n_panels_all * t / tasks, p1 = n_panels_all * (t + 1) / tasks;
            for (int64_t k0 = 0; k0 < K; k0 += kb) {
                const int64_t kc = std::min(kb, K - k0);
                const bool last = k0 + kc >= K;
                for (int64_t p = p0; p < p1; ++p) {
                    const int64_t j0 = p * nr;
                    const int n = static_cast<int>(std::min<int64_t>(nr, N - j0));
                    for (int64_t i0 = 0; i0 < M; i0 += mr) {
                        const int m = static_cast<int>(std::min<int64_t>(mr, M - i0));
                        uk.run(kc, A + i0 * lda + k0, lda, 1, B + k0 * ldb + j0, ldb, false,
                               C + i0 * ldc + j0, ldc, m, n, k0 > 0, last ? &ep : nullptr, i0, j0);
                    }
                }
            }
        });
        return;
    }

    const int64_t mc = std::max<int64_t>(mr, kMC / mr * mr);
    const int64_t m_panels = ceil_div(M, mr);
    // K in equal blocks of at most kKC (600 is three blocks of 200, not 256 + 256 + 88); up to
    // 1.5 kKC is one block (the B panel then spills from L1 a little, but C is written once).
    const int64_t k_blocks = K <= kKC * 3 / 2 ? 1 : ceil_div(K, kKC);
    const int64_t kc_max = ceil_div(K, k_blocks);
    float* pa = packed_a ? nullptr : tls_pack_a.get(static_cast<size_t>(m_panels * mr * kc_max));
    // B rows less than 2 KB apart are read in place: a panel's rows then share cache sets
    // little, and the copy into panels would cost about as much as it saves.
    const bool b_in_place = packed_b == nullptr && !trans_b && ldb <= 512;
    float* pb = packed_b || b_in_place ? nullptr : tls_pack_b.get(static_cast<size_t>(ceil_div(std::min(N, kNC), nr) * nr * kc_max));
    for (int64_t jc = 0; jc < N; jc += kNC) {
        const int64_t nc = std::min(kNC, N - jc);
        const int64_t n_panels = ceil_div(nc, nr);
        for (int64_t pc = 0; pc < K; pc += kc_max) {
            const int64_t kc = std::min(kc_max, K - pc);
            const bool last = pc + kc >= K;
            // Pack this K slice of B (all panels, unless given packed) and of A (all rows).
            const int64_t b_items = packed_b || b_in_place ? 0 : n_panels;
            const int64_t a_items = packed_a ? 0 : m_panels;
            const int64_t pack_items = b_items + a_items;
            const int64_t pack_tasks = task_count(M * nc * kc, pack_items);
            if (pack_items > 0) parallel_for(pack_tasks, [&](int64_t t) {
                const int64_t q0 = pack_items * t / pack_tasks, q1 = pack_items * (t + 1) / pack_tasks;
                for (int64_t q = q0; q < q1; ++q) {
                    if (q < b_items) {
                        const int64_t j0 = jc + q * nr;
                        pack_b_panel(B, ldb, trans_b, pc, kc, j0, std::min<int64_t>(nr, N - j0), nr,
                                     pb + q * kc * nr);
                    } else {
                        const int64_t i0 = (q - b_items) * mr;
                        pack_a_panel(A, lda, pc, kc, i0, std::min<int64_t>(mr, M - i0), mr,
                                     pa + (q - b_items) * kc * mr);
                    }
                }
            });
            // Tiles: blocks of mc rows x ranges of B panels.
            const int64_t m_blocks = ceil_div(M, mc);
            const int64_t work = M * nc * kc;
            int64_t n_splits = 1;
            const int64_t want = task_count(work, m_blocks * n_panels);
            if (want > m_blocks) n_splits = std::min(n_panels, ceil_div(want, m_blocks));
            parallel_for(m_blocks * n_splits, [&](int64_t t) {
                const int64_t mb = t / n_splits, ns = t % n_splits;
                const int64_t p0 = n_panels * ns / n_splits, p1 = n_panels * (ns + 1) / n_splits;
                const int64_t i_end = std::min(M, (mb + 1) * mc);
                for (int64_t p = p0; p < p1; ++p) {
                    const int64_t j0 = jc + p * nr;
                    const int n = static_cast<int>(std::min<int64_t>(nr, N - j0));
                    for (int64_t i0 = mb * mc; i0 < i_end; i0 += mr) {
                        const int m = static_cast<int>(std::min<int64_t>(mr, M - i0));
                        const float* bp = b_in_place ? B + pc * ldb + j0
                                          : packed_b ? packed_b + (jc / nr + p) * K * nr + pc * nr
                                                     : pb + p * kc * nr;
                        const float* ap = packed_a ? packed_a + (i0 / mr) * K * mr + pc * mr : pa + (i0 / mr) * kc * mr;
                        uk.run(kc, ap, 1, mr, bp, b_in_place ? ldb : nr, !b_in_place,
                               C + i0 * ldc + j0, ldc, m, n, pc > 0, last ? &ep : nullptr, i0, j0);
                    }
                }
            });
        }
    }
}

namespace {

constexpr int kGenericMR = 4, kGenericNR = 8;

void micro_generic(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                   int64_t b_rs, bool b_padded, float* c, int64_t ldc, int m, int n,
                   bool accumulate, const Epilogue* ep, int64_t row0, int64_t col0) {
    float acc[kGenericMR][kGenericNR] = {};
    if (m == kGenericMR && (n == kGenericNR || b_padded)) {
        for (int64_t k = 0; k < kc; ++k) {
            const float* bk = b + k * b_rs;
            for (int i = 0; i < kGenericMR; ++i) {
                const float av = a[i * a_rs + k * a_cs];
                for (int j = 0; j < kGenericNR; ++j) acc[i][j] += av * bk[j];
            }
        }
    } else {
        for (int64_t k = 0; k < kc; ++k) {
            const float* bk = b + k * b_rs;
            for (int i = 0; i < m; ++i) {
                const float av = a[i * a_rs + k * a_cs];
                for (int j = 0; j < n; ++j) acc[i][j] += av * bk[j];
            }
        }
    }
    for (int i = 0; i < m; ++i) {
        float* ci = c + i * ldc;
        for (int j = 0; j < n; ++j) {
            float v = acc[i][j] + (accumulate ? ci[j] : 0.0f);
            if (ep != nullptr) {
                if (ep->bias) v += ep->bias[ep->bias_per_row ? row0 + i : col0 + j];
                v = activate(v, *ep);
            }
            ci[j] = v;
        }
    }
}

}  // namespace

const GemmMicroKernel& gemm_micro_generic() {
    static const GemmMicroKernel uk = {kGenericMR, kGenericNR, micro_generic, 0, nullptr};
    return uk;
}

void gemm_generic(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep) {
    gemm_driver(gemm_micro_generic(), M, N, K, A, lda, B, ldb, trans_b, C, ldc, ep);
}

void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep) {
    kernels().gemm(M, N, K, A, lda, B, ldb, trans_b, C, ldc, ep);
}

}  // namespace pyengine
