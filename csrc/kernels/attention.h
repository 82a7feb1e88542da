// SPDX-License-Identifier: Apache-2.0
// Scaled dot-product attention over heads, ONNX Attention semantics (opsets 23-25): grouped
// query heads, a boolean or additive mask, causal and sliding-window masks with the cache
// offset, a past key/value cache, padded keys (nonpad_kv_seqlen), softcap, and the four
// qk_matmul_output stages.
//
// Baseline code over the dispatched kernels: per block of query rows of one head (the whole
// sequence while its scores fit 256 KB), one GEMM for Q K^T, the bias and softmax row by row
// (the dispatched softmax), one GEMM for P V; blocks in parallel.
#pragma once

#include <cstdint>

namespace pyengine {

// Where one operand's rows sit: element (b, h, row, col) is at ptr + b*batch + h*head + row*row_stride + col.
struct AttentionOperand {
    const float* ptr = nullptr;
    int64_t batch = 0, head = 0, row = 0;
};

struct AttentionParams {
    int64_t batch = 0;
    int64_t q_heads = 0, kv_heads = 0;   // q_heads % kv_heads == 0 (query head h reads kv head h / (q_heads / kv_heads))
    int64_t q_len = 0, kv_len = 0;       // kv_len: the new keys (K and V), without the past
    int64_t past_len = 0;                // rows of past_k / past_v, placed before K / V
    int64_t head_size = 0, v_head_size = 0;
    AttentionOperand q, k, v;
    AttentionOperand past_k, past_v;     // ptr nullptr: no past
    // Output: Y [.., q_len, v_head_size] per head (stage < 0), or the QK stage [.., q_len, total]
    // per head, total = past_len + kv_len.
    float* y = nullptr;
    int64_t y_batch = 0, y_head = 0, y_row = 0;
    // qk_matmul_output: -1 writes Y; 0 the scaled Q K^T, 1 after softcap, 2 after the bias,
    // 3 the softmax probabilities (fully masked rows 0).
    int stage = -1;
    float scale = 1.0f;   // applied to Q K^T (the caller squares float(sqrt(scale)) as ONNX does)
    float softcap = 0.0f; // > 0: softcap * tanh(x / softcap) before the bias
    bool causal = false;
    int64_t left_window = -1, right_window = -1;  // -1: unbounded
    // Mask, right-aligned to [batch, q_heads, q_len, mask_len]; strides 0 where it broadcasts.
    // mask_len <= total; keys at or beyond it are masked (-inf), as ONNX pads the mask.
    const float* mask_f = nullptr;    // additive
    const uint8_t* mask_b = nullptr;  // boolean: true attends
    int64_t mask_batch = 0, mask_head = 0, mask_row = 0, mask_len = 0;
    // Keys per batch that are not padding (nullptr: all); without a past it also sets the
    // causal / window offset (nonpad - q_len).
    const int64_t* nonpad = nullptr;
    bool softmax_double = false;  // softmax_precision DOUBLE: the softmax sums in double
    // Q, K and the past keys are finite and the float mask holds no NaN or +inf (attention_finite):
    // then every row that attends a key has a finite maximum and takes the vector softmax; else
    // every row takes the reference form (NaN and infinities as ONNX's reference gives them).
    bool finite_inputs = false;
};

// True when x[0, n) holds no NaN, no +inf, and no -inf unless neg_inf_ok.
bool attention_finite(const float* x, int64_t n, bool neg_inf_ok);

// Runs attention as `p` describes, over the thread pool.
void attention(const AttentionParams& p);

}  // namespace pyengine
