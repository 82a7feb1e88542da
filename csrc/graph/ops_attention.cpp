// SPDX-License-Identifier: Apache-2.0
// Attention: ONNX's scaled dot-product attention (opsets 23-25) over the kernel of
// kernels/attention.h. Q, K and V are 4-D [batch, heads, seq, head_size] or 3-D
// [batch, seq, heads * head_size] (heads from 'q_num_heads' / 'kv_num_heads'); the kernel reads
// either layout in place, so a BERT-style encoder needs no head transposes.
//
// Inputs: Q, K, V, then those of attn_mask, past_key + past_value and nonpad_kv_seqlen that the
// attributes 'mask', 'past' and 'nonpad' say are present, in that order. One op computes one
// ONNX output (attribute 'output': "y", or "qk" for qk_matmul_output at stage 'qk_mode'); the
// importer adds the present key/value as Concat nodes. Host-only (lower() stays false).
#include <cmath>
#include <vector>

#include "common.h"
#include "graph/op.h"
#include "kernels/attention.h"
#include "kernels/dispatch.h"

namespace pyengine {

namespace {

// Sizes of one call, from the input shapes.
struct AttentionGeometry {
    int64_t B = 0, Hq = 0, Hkv = 0, S = 0, Skv = 0, P = 0, D = 0, Dv = 0;
    bool three_d = false;
    int64_t total() const { return P + Skv; }
};

// One operand's strides: 3-D [B, rows, heads * cols] or 4-D [B, heads, rows, cols].
AttentionOperand operand(const float* ptr, bool three_d, int64_t heads, int64_t rows, int64_t cols) {
    AttentionOperand o;
    o.ptr = ptr;
    o.batch = heads * rows * cols;
    o.head = three_d ? cols : rows * cols;
    o.row = three_d ? heads * cols : cols;
    return o;
}

class AttentionOp : public Op {
public:
    explicit AttentionOp(const Attrs& a)
        : q_heads_(a.get_int("q_num_heads", 0)),
          kv_heads_(a.get_int("kv_num_heads", 0)),
          has_scale_(a.has("scale")),
          scale_(a.get_float("scale", 1.0f)),
          softcap_(a.get_float("softcap", 0.0f)),
          causal_(a.get_bool("is_causal", false)),
          left_window_(a.get_int("left_window_size", -1)),
          right_window_(a.get_int("right_window_size", -1)),
          output_(a.get_string("output", "y", {"y", "qk"})),
          qk_mode_(a.get_int("qk_mode", 0)),
          softmax_double_(a.get_string("softmax_precision", "float", {"float", "double"}) == "double") {
        size_t next = 3;
        if (a.get_bool("mask", false)) mask_ = next++;
        if (a.get_bool("past", false)) {
            past_ = next;
            next += 2;
        }
        if (a.get_bool("nonpad", false)) nonpad_ = next++;
        inputs_ = next;
        if (q_heads_ < 0) a.fail(str("attribute 'q_num_heads' must be >= 1, got ", q_heads_));
        if (kv_heads_ < 0) a.fail(str("attribute 'kv_num_heads' must be >= 1, got ", kv_heads_));
        if (has_scale_ && !(std::isfinite(scale_) && scale_ > 0.0f)) {
            a.fail(str("attribute 'scale' must be a finite number > 0, got ", scale_));
        }
        if (!std::isfinite(softcap_) || softcap_ < 0.0f) a.fail(str("attribute 'softcap' must be >= 0, got ", softcap_));
        if (left_window_ < -1) a.fail(str("attribute 'left_window_size' must be -1 or >= 0, got ", left_window_));
        if (right_window_ < -1) a.fail(str("attribute 'right_window_size' must be -1 or >= 0, got ", right_window_));
        if (qk_mode_ < 0 || qk_mode_ > 3) a.fail(str("attribute 'qk_mode' must be 0, 1, 2 or 3, got ", qk_mode_));
        if (past_ != 0 && nonpad_ != 0) a.fail("'past' and 'nonpad' cannot be combined (ONNX: an internal or an external cache)");
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const AttentionGeometry g = geometry(in);
        if (output_ == "qk") return {{g.B, g.Hq, g.S, g.total()}};
        if (g.three_d) return {{g.B, g.S, g.Hq * g.Dv}};
        return {{g.B, g.Hq, g.S, g.Dv}};
    }

    std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t n_out) const override {
        for (size_t i = 0; i < in.size(); ++i) {
            if (i == mask_ && mask_ != 0) {
                if (in[i] != DType::Float32 && in[i] != DType::Bool) dtype_error(i, in[i], "float32 or bool (attn_mask)");
            } else if (i == nonpad_ && nonpad_ != 0) {
                if (in[i] != DType::Int64) dtype_error(i, in[i], "int64 (nonpad_kv_seqlen)");
            } else if (in[i] != DType::Float32) {
                dtype_error(i, in[i], "float32");
            }
        }
        return std::vector<DType>(n_out, DType::Float32);
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        std::vector<Shape> shapes;
        for (const Tensor* t : in) shapes.push_back(t->shape);
        const AttentionGeometry g = geometry(shapes);
        AttentionParams p;
        p.batch = g.B;
        p.q_heads = g.Hq;
        p.kv_heads = g.Hkv;
        p.q_len = g.S;
        p.kv_len = g.Skv;
        p.past_len = g.P;
        p.head_size = g.D;
        p.v_head_size = g.Dv;
        p.q = operand(in[0]->f32(), g.three_d, g.Hq, g.S, g.D);
        p.k = operand(in[1]->f32(), g.three_d, g.Hkv, g.Skv, g.D);
        p.v = operand(in[2]->f32(), g.three_d, g.Hkv, g.Skv, g.Dv);
        if (past_ != 0) {
            p.past_k = operand(in[past_]->f32(), false, g.Hkv, g.P, g.D);
            p.past_v = operand(in[past_ + 1]->f32(), false, g.Hkv, g.P, g.Dv);
        }
        p.y = out[0]->f32();
        if (output_ == "qk") {
            p.stage = static_cast<int>(qk_mode_);
            p.y_batch = g.Hq * g.S * g.total();
            p.y_head = g.S * g.total();
            p.y_row = g.total();
        } else {
            p.y_batch = g.Hq * g.S * g.Dv;
            p.y_head = g.three_d ? g.Dv : g.S * g.Dv;
            p.y_row = g.three_d ? g.Hq * g.Dv : g.Dv;
        }
        // ONNX scales Q and K each by float(sqrt(scale)) before the product.
        const float root = static_cast<float>(std::sqrt(has_scale_ ? static_cast<double>(scale_)
                                                                   : 1.0 / std::sqrt(static_cast<double>(g.D))));
        p.scale = root * root;
        p.softcap = softcap_;
        p.causal = causal_;
        p.left_window = left_window_;
        p.right_window = right_window_;
        if (mask_ != 0) {
            const Tensor& m = *in[mask_];
            Shape ms = m.shape;
            while (ms.size() < 4) ms.insert(ms.begin(), 1);
            p.mask_len = ms[3];
            p.mask_row = ms[2] == 1 ? 0 : ms[3];
            p.mask_head = ms[1] == 1 ? 0 : ms[2] * ms[3];
            p.mask_batch = ms[0] == 1 ? 0 : ms[1] * ms[2] * ms[3];
            if (m.dtype == DType::Bool) {
                p.mask_b = static_cast<const uint8_t*>(m.data);
            } else {
                p.mask_f = m.f32();
            }
        }
        if (nonpad_ != 0) p.nonpad = static_cast<const int64_t*>(in[nonpad_]->data);
        p.finite_inputs = attention_finite(in[0]->f32(), in[0]->numel(), false) &&
                          attention_finite(in[1]->f32(), in[1]->numel(), false) &&
                          (past_ == 0 || attention_finite(in[past_]->f32(), in[past_]->numel(), false)) &&
                          (p.mask_f == nullptr || attention_finite(p.mask_f, in[mask_]->numel(), true));
        p.softmax_double = softmax_double_;
        attention(p);
    }

    OpRunInfo run_info(const std::vector<Shape>& in) const override {
        (void)in;
        return {"", str(kernels().name, " gemm attention")};
    }

private:
    AttentionGeometry geometry(const std::vector<Shape>& in) const {
        if (in.size() != inputs_) shape_error(str("Attention takes ", inputs_, " inputs here, got ", in.size()));
        const Shape& q = in[0];
        const Shape& k = in[1];
        const Shape& v = in[2];
        AttentionGeometry g;
        if (q.size() != 3 && q.size() != 4) shape_error(str("Attention Q must be 3-D or 4-D, got ", shape_str(q)));
        if (k.size() != q.size() || v.size() != q.size()) {
            shape_error(str("Attention Q, K and V must have the same rank, got ", shape_str(q), ", ", shape_str(k),
                            " and ", shape_str(v)));
        }
        g.three_d = q.size() == 3;
        g.B = q[0];
        if (k[0] != g.B || v[0] != g.B) {
            shape_error(str("Attention Q, K and V must have the same batch, got ", shape_str(q), ", ", shape_str(k),
                            " and ", shape_str(v)));
        }
        if (g.three_d) {
            if (q_heads_ == 0 || kv_heads_ == 0) shape_error("Attention with 3-D inputs needs 'q_num_heads' and 'kv_num_heads'");
            g.Hq = q_heads_;
            g.Hkv = kv_heads_;
            g.S = q[1];
            g.Skv = k[1];
            if (v[1] != g.Skv) shape_error(str("Attention K ", shape_str(k), " and V ", shape_str(v), " differ in sequence length"));
            auto split = [&](const Shape& s, int64_t heads, const char* what) {
                if (s[2] % heads != 0) {
                    shape_error(str("Attention ", what, " ", shape_str(s), ": hidden size ", s[2], " is not a multiple of ",
                                    heads, " heads"));
                }
                return s[2] / heads;
            };
            g.D = split(q, g.Hq, "Q");
            if (split(k, g.Hkv, "K") != g.D) {
                shape_error(str("Attention K ", shape_str(k), " head size differs from Q's ", g.D));
            }
            g.Dv = split(v, g.Hkv, "V");
        } else {
            g.Hq = q[1];
            g.S = q[2];
            g.D = q[3];
            g.Hkv = k[1];
            g.Skv = k[2];
            g.Dv = v[3];
            if ((q_heads_ != 0 && q_heads_ != g.Hq) || (kv_heads_ != 0 && kv_heads_ != g.Hkv)) {
                shape_error(str("Attention 'q_num_heads' ", q_heads_, " / 'kv_num_heads' ", kv_heads_,
                                " disagree with 4-D Q ", shape_str(q), " and K ", shape_str(k)));
            }
            if (k[3] != g.D) shape_error(str("Attention K ", shape_str(k), " head size differs from Q's ", g.D));
            if (v[1] != g.Hkv || v[2] != g.Skv) {
                shape_error(str("Attention V ", shape_str(v), " must have K's heads and length ", shape_str(k)));
            }
        }
        if (g.Hq < 1 || g.Hkv < 1 || g.Hq % g.Hkv != 0) {
            shape_error(str("Attention query heads ", g.Hq, " must be a multiple of the key/value heads ", g.Hkv));
        }
        if (past_ != 0) {
            const Shape& pk = in[past_];
            const Shape& pv = in[past_ + 1];
            g.P = pk.size() == 4 ? pk[2] : -1;
            if (pk != Shape{g.B, g.Hkv, g.P, g.D} || pv != Shape{g.B, g.Hkv, g.P, g.Dv}) {
                shape_error(str("Attention past_key ", shape_str(pk), " and past_value ", shape_str(pv), " must be [",
                                g.B, ", ", g.Hkv, ", past, ", g.D, "] and [", g.B, ", ", g.Hkv, ", past, ", g.Dv, "]"));
            }
        }
        if (mask_ != 0) {
            const Shape& m = in[mask_];
            const Shape want{g.B, g.Hq, g.S, g.total()};
            bool fits = !m.empty() && m.size() <= 4 && m.back() <= g.total();
            for (size_t i = 0; fits && i + 1 < m.size(); ++i) {
                const int64_t d = m[m.size() - 1 - i - 1], w = want[3 - i - 1];
                fits = d == 1 || d == w;
            }
            if (!fits) {
                shape_error(str("Attention attn_mask ", shape_str(m), " does not broadcast to ", shape_str(want),
                                " (its last dimension may be shorter)"));
            }
        }
        if (nonpad_ != 0 && in[nonpad_] != Shape{g.B}) {
            shape_error(str("Attention nonpad_kv_seqlen ", shape_str(in[nonpad_]), " must be [", g.B, "]"));
        }
        return g;
    }

    int64_t q_heads_, kv_heads_;
    bool has_scale_;
    float scale_, softcap_;
    bool causal_;
    int64_t left_window_, right_window_;
    std::string output_;
    int64_t qk_mode_;
    bool softmax_double_;
    // Where each optional input sits (0: absent).
    size_t mask_ = 0, past_ = 0, nonpad_ = 0, inputs_ = 3;
};

}  // namespace

std::unique_ptr<Op> make_Attention(const Attrs& a) { return std::make_unique<AttentionOp>(a); }

}  // namespace pyengine
