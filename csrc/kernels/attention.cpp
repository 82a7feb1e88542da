// SPDX-License-Identifier: Apache-2.0
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/activation.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

// Scores per task (floats): a head's query rows go in one block (one GEMM each for QK^T and PV,
// K and V packed once) while its scores stay within this; longer ones are cut into blocks.
constexpr int64_t kScoresPerTask = int64_t(1) << 16;
// The fewest query rows in a block (a few micro-kernel tiles).
constexpr int64_t kMinRowBlock = 16;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ONNX's softmax of one row, in T (float or double): a row whose maximum is -inf (every key
// masked) gives 0 rather than NaN, as the reference's _softmax does.
template <class T>
void softmax_row_reference(float* x, int64_t n) {
    T m = static_cast<T>(x[0]);
    for (int64_t j = 1; j < n; ++j) {
        const T v = static_cast<T>(x[j]);
        if (std::isnan(v) || v > m) m = std::isnan(m) ? m : v;  // NaN propagates, as np.max
    }
    const T shift = std::isinf(m) && m < 0 ? T(0) : m;
    T sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<T>(x[j]) - shift);
    if (sum == T(0)) sum = T(1);
    for (int64_t j = 0; j < n; ++j) x[j] = static_cast<float>(std::exp(static_cast<T>(x[j]) - shift) / sum);
}

// Softmax of one row in place: the dispatched kernel when every row's maximum is known to be
// finite (`plain`), the reference form otherwise (and for double precision).
void softmax_row(const KernelTable& kt, float* x, int64_t n, bool plain, bool in_double) {
    if (in_double) {
        softmax_row_reference<double>(x, n);
    } else if (plain) {
        kt.softmax(x, x, 1, n, 1);
    } else {
        softmax_row_reference<float>(x, n);
    }
}

// The additive bias of query row i of (b, h) over `total` keys: the mask (padded with -inf past
// its length), then -inf where the causal frontier, the window or the padding excludes a key.
// Returns true when every entry is -inf (the row attends nothing).
bool bias_row(const AttentionParams& p, int64_t b, int64_t h, int64_t i, int64_t total, float* bias) {
    if (p.mask_f != nullptr || p.mask_b != nullptr) {
        const int64_t at = b * p.mask_batch + h * p.mask_head + i * p.mask_row;
        const int64_t len = std::min(p.mask_len, total);
        if (p.mask_f != nullptr) {
            std::memcpy(bias, p.mask_f + at, static_cast<size_t>(len) * sizeof(float));
        } else {
            for (int64_t j = 0; j < len; ++j) bias[j] = p.mask_b[at + j] ? 0.0f : kNegInf;
        }
        std::fill(bias + len, bias + total, kNegInf);
    } else {
        std::fill(bias, bias + total, 0.0f);
    }
    // The offset: keys before this query block (the past), or nonpad - q_len for an external cache.
    const int64_t offset = p.past_k.ptr != nullptr ? p.past_len : p.nonpad != nullptr ? p.nonpad[b] - p.q_len : 0;
    const int64_t pos = i + offset;
    if (p.causal) {
        for (int64_t j = std::max<int64_t>(0, pos + 1); j < total; ++j) bias[j] += kNegInf;
    }
    if (p.left_window >= 0) {
        for (int64_t j = 0; j < std::min(total, pos - p.left_window); ++j) bias[j] += kNegInf;
    }
    if (p.right_window >= 0) {
        for (int64_t j = std::max<int64_t>(0, pos + p.right_window + 1); j < total; ++j) bias[j] += kNegInf;
    }
    if (p.nonpad != nullptr) {
        for (int64_t j = std::max<int64_t>(0, p.nonpad[b]); j < total; ++j) bias[j] += kNegInf;
    }
    for (int64_t j = 0; j < total; ++j) {
        if (!(std::isinf(bias[j]) && bias[j] < 0)) return false;
    }
    return true;
}

// Rows [0, past) of `past` then [0, rows) of `cur` (each `cols` wide) into dst, contiguous.
void concat_rows(const float* past, int64_t past_rows, int64_t past_stride, const float* cur, int64_t rows,
                 int64_t cur_stride, int64_t cols, float* dst) {
    for (int64_t r = 0; r < past_rows; ++r) std::memcpy(dst + r * cols, past + r * past_stride, static_cast<size_t>(cols) * sizeof(float));
    for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(dst + (past_rows + r) * cols, cur + r * cur_stride, static_cast<size_t>(cols) * sizeof(float));
    }
}

}  // namespace

bool attention_finite(const float* x, int64_t n, bool neg_inf_ok) {
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u;
        std::memcpy(&u, x + i, sizeof u);
        bad |= static_cast<uint32_t>((u & 0x7fffffffu) >= 0x7f800000u) & static_cast<uint32_t>(!neg_inf_ok || u != 0xff800000u);
    }
    return bad == 0;
}

void attention(const AttentionParams& p) {
    const int64_t total = p.past_len + p.kv_len;
    const int64_t group = p.q_heads / p.kv_heads;
    // Rows per block: the scores bound, then, with several threads, cut further until there are
    // 2 tasks per thread (so that an odd head count does not leave a thread idle for a round).
    int64_t row_block = std::max(kMinRowBlock, kScoresPerTask / std::max<int64_t>(total, 1));
    const int64_t heads = p.batch * p.q_heads;
    const int64_t want = num_threads() > 1 ? 2 * int64_t(num_threads()) : 1;
    if (heads * ((p.q_len + row_block - 1) / row_block) < want) {
        const int64_t per_head = (want + heads - 1) / heads;
        row_block = std::max(kMinRowBlock, (p.q_len + per_head - 1) / per_head);
    }
    row_block = std::max<int64_t>(1, std::min(row_block, p.q_len));
    const int64_t blocks = (p.q_len + row_block - 1) / row_block;
    const bool masked = p.mask_f != nullptr || p.mask_b != nullptr || p.causal || p.left_window >= 0 ||
                        p.right_window >= 0 || p.nonpad != nullptr;
    const KernelTable& kt = kernels();
    const int64_t D = p.head_size, Dv = p.v_head_size;
    const float scale = p.scale;  // a local: the row loops then vectorize (no aliasing with x)

    auto task = [&](int64_t t) {
        const int64_t block = t % blocks, bh = t / blocks;
        const int64_t b = bh / p.q_heads, h = bh % p.q_heads, kvh = h / group;
        const int64_t i0 = block * row_block, rows = std::min(row_block, p.q_len - i0);
        float* out = p.y + b * p.y_batch + h * p.y_head + i0 * p.y_row;
        if (total == 0) {  // no keys: every row attends nothing
            for (int64_t r = 0; r < rows; ++r) std::fill(out + r * p.y_row, out + r * p.y_row + (p.stage < 0 ? Dv : 0), 0.0f);
            return;
        }
        thread_local std::vector<float> scores, keys, values, bias;
        const float* kp = p.k.ptr + b * p.k.batch + kvh * p.k.head;
        const float* vp = p.v.ptr + b * p.v.batch + kvh * p.v.head;
        int64_t k_row = p.k.row, v_row = p.v.row;
        if (p.past_k.ptr != nullptr) {  // present = the past's rows, then the new ones
            keys.resize(static_cast<size_t>(total * D));
            values.resize(static_cast<size_t>(total * Dv));
            concat_rows(p.past_k.ptr + b * p.past_k.batch + kvh * p.past_k.head, p.past_len, p.past_k.row, kp,
                        p.kv_len, k_row, D, keys.data());
            concat_rows(p.past_v.ptr + b * p.past_v.batch + kvh * p.past_v.head, p.past_len, p.past_v.row, vp,
                        p.kv_len, v_row, Dv, values.data());
            kp = keys.data();
            vp = values.data();
            k_row = D;
            v_row = Dv;
        }
        scores.resize(static_cast<size_t>(rows * total));
        bias.resize(static_cast<size_t>(total));
        const float* qp = p.q.ptr + b * p.q.batch + h * p.q.head + i0 * p.q.row;
        kt.gemm(rows, total, D, qp, p.q.row, kp, k_row, true, scores.data(), total, Epilogue{});
        for (int64_t r = 0; r < rows; ++r) {
            float* x = scores.data() + r * total;
            for (int64_t j = 0; j < total; ++j) x[j] *= scale;
            int stage = 0;
            if (p.stage != stage) {
                stage = 1;
                if (p.softcap > 0.0f) {
                    for (int64_t j = 0; j < total; ++j) x[j] = std::tanh(x[j] / p.softcap) * p.softcap;
                }
            }
            bool attends_nothing = false;
            if (p.stage != stage) {
                stage = 2;
                if (masked) {
                    attends_nothing = bias_row(p, b, h, i0 + r, total, bias.data());
                    for (int64_t j = 0; j < total; ++j) x[j] += bias[static_cast<size_t>(j)];
                }
            }
            if (p.stage != stage) {
                stage = 3;
                if (attends_nothing) {
                    std::fill(x, x + total, 0.0f);
                } else {
                    softmax_row(kt, x, total, p.finite_inputs, p.softmax_double);
                }
            }
            if (p.stage >= 0) std::memcpy(out + r * p.y_row, x, static_cast<size_t>(total) * sizeof(float));
        }
        if (p.stage < 0) kt.gemm(rows, Dv, total, scores.data(), total, vp, v_row, false, out, p.y_row, Epilogue{});
    };
    parallel_for(heads * blocks, task);
}

}  // namespace pyengine
