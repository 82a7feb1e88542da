// SPDX-License-Identifier: Apache-2.0
// RNN, GRU and LSTM (ONNX semantics, the default activations: tanh for RNN; sigmoid for the
// gates and tanh for the cell): forward, reverse and bidirectional, either layout, initial states, GRU's
// linear_before_reset and LSTM's peepholes. One op computes one of the ONNX outputs (attribute
// 'output': all hidden states "y", the last hidden state "h", the last cell state "c"), since a
// native node has one output; the importer adds one node per output the graph reads.
//
// The input projection of every time step is one GEMM ([T·N, I] x W^T) before the loop; each
// step is then one GEMM of the hidden state by R^T ([N, H] x [H, G·H]) and the gate arithmetic.
// Host-only (lower() stays false).
#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "graph/op.h"
#include "kernels/dispatch.h"

namespace pyengine {

namespace {

// [rows, cols] -> [cols, rows].
void transpose_into(const float* src, int64_t rows, int64_t cols, float* dst) {
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
    }
}

enum class RnnKind { Rnn, Gru, Lstm };

// Inputs: X, W [D, G·H, I], R [D, G·H, H], B [D, 2·G·H], then those of initial_h, initial_c
// (LSTM) and P [D, 3·H] (LSTM peepholes) that the attributes 'initial_h', 'initial_c' and
// 'peepholes' say are present, in that order. G = 1 (RNN), 3 (GRU: z, r, h) or 4 (LSTM: i, o, f, c).
class RnnOp : public Op {
public:
    RnnOp(const Attrs& a, RnnKind kind)
        : lstm_(kind == RnnKind::Lstm),
          rnn_(kind == RnnKind::Rnn),
          gates_(kind == RnnKind::Lstm ? 4 : kind == RnnKind::Gru ? 3 : 1),
          hidden_(a.get_int_required("hidden_size")),
          direction_(a.get_string("direction", "forward", {"forward", "reverse", "bidirectional"})),
          batch_first_(a.get_int("layout", 0) != 0),
          linear_before_reset_(kind == RnnKind::Gru && a.get_bool("linear_before_reset", false)),
          output_(a.get_string("output", "y", lstm_ ? std::vector<std::string>{"y", "h", "c"}
                                                    : std::vector<std::string>{"y", "h"})) {
        // Where each optional input sits (0: absent).
        size_t next = 4;
        if (a.get_bool("initial_h", false)) h0_ = next++;
        if (lstm_ && a.get_bool("initial_c", false)) c0_ = next++;
        if (lstm_ && a.get_bool("peepholes", false)) p_ = next++;
        inputs_ = next;
        if (hidden_ < 1) a.fail(str("attribute 'hidden_size' must be >= 1, got ", hidden_));
        const int64_t layout = a.get_int("layout", 0);
        if (layout != 0 && layout != 1) a.fail(str("attribute 'layout' must be 0 or 1, got ", layout));
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const char* op = lstm_ ? "LSTM" : rnn_ ? "RNN" : "GRU";
        const Shape& x = in[0];
        if (x.size() != 3) shape_error(str(op, " input must be 3-D, got ", shape_str(x)));
        const int64_t T = batch_first_ ? x[1] : x[0], N = batch_first_ ? x[0] : x[1], I = x[2];
        const int64_t D = dirs(), GH = gates_ * hidden_;
        if (in.size() != inputs_) shape_error(str(op, " takes ", inputs_, " inputs here, got ", in.size()));
        auto expect = [&](size_t k, const Shape& want, const char* what) {
            if (k != 0 && in[k] != want) {
                shape_error(str(op, " ", what, " ", shape_str(in[k]), " must be ", shape_str(want)));
            }
        };
        if (in[1] != Shape{D, GH, I}) shape_error(str(op, " W ", shape_str(in[1]), " must be ", shape_str({D, GH, I})));
        if (in[2] != Shape{D, GH, hidden_}) {
            shape_error(str(op, " R ", shape_str(in[2]), " must be ", shape_str({D, GH, hidden_})));
        }
        const Shape state = batch_first_ ? Shape{N, D, hidden_} : Shape{D, N, hidden_};
        expect(3, {D, 2 * GH}, "B");
        expect(h0_, state, "initial_h");
        expect(c0_, state, "initial_c");
        expect(p_, {D, 3 * hidden_}, "P");
        if (output_ != "y") return {state};
        return {batch_first_ ? Shape{N, T, D, hidden_} : Shape{T, D, N, hidden_}};
    }

    void prepare(const std::vector<const Tensor*>& constants) override {
        // Constant weights are transposed once, to the [K, G·H] rows the GEMM streams.
        if (constants.size() > 2 && constants[1] && constants[2]) {
            wt_ = transposed(*constants[1]);
            rt_ = transposed(*constants[2]);
        }
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& xs = in[0]->shape;
        const int64_t T = batch_first_ ? xs[1] : xs[0], N = batch_first_ ? xs[0] : xs[1], I = xs[2];
        const int64_t H = hidden_, G = gates_, GH = G * H, D = dirs();
        auto opt = [&](size_t k) -> const float* { return k != 0 ? in[k]->f32() : nullptr; };
        const float* bias = in[3]->f32();
        const float* h0 = opt(h0_);
        const float* c0 = opt(c0_);
        const float* peep = opt(p_);
        const std::vector<float> wt = wt_.empty() ? transposed(*in[1]) : std::vector<float>();
        const std::vector<float> rt = rt_.empty() ? transposed(*in[2]) : std::vector<float>();
        const float* w_all = wt_.empty() ? wt.data() : wt_.data();
        const float* r_all = rt_.empty() ? rt.data() : rt_.data();
        const KernelTable& k = kernels();
        Epilogue sig, tnh;
        sig.act = Activation::Sigmoid;
        tnh.act = Activation::Tanh;

        std::vector<float> xw(static_cast<size_t>(T * N * GH)), hr(static_cast<size_t>(N * GH));
        std::vector<float> h(static_cast<size_t>(N * H)), c(static_cast<size_t>(N * H));
        std::vector<float> rh(static_cast<size_t>(N * H));  // GRU without linear_before_reset: r ⊙ h
        float* y = out[0]->f32();
        // Where the [H] state of direction d, batch n starts in an initial or final state.
        auto state_at = [&](int64_t d, int64_t n) { return batch_first_ ? (n * D + d) * H : (d * N + n) * H; };
        for (int64_t d = 0; d < D; ++d) {
            const bool reverse = direction_ == "reverse" || (direction_ == "bidirectional" && d == 1);
            const float* wt_d = w_all + d * I * GH;
            const float* rt_d = r_all + d * H * GH;
            const float* wb = bias + d * 2 * GH;
            const float* rb = wb + GH;
            const float* p = peep ? peep + d * 3 * H : nullptr;
            // Input projections of every step at once: row (t, n) of X times W^T, plus Wb.
            Epilogue wep;
            wep.bias = wb;
            k.gemm(T * N, GH, I, in[0]->f32(), I, wt_d, GH, false, xw.data(), GH, wep);
            for (int64_t n = 0; n < N; ++n) {
                for (int64_t j = 0; j < H; ++j) {
                    const size_t e = static_cast<size_t>(n * H + j);
                    h[e] = h0 ? h0[state_at(d, n) + j] : 0.0f;
                    c[e] = c0 ? c0[state_at(d, n) + j] : 0.0f;
                }
            }
            for (int64_t s = 0; s < T; ++s) {
                const int64_t t = reverse ? T - 1 - s : s;
                Epilogue rep;
                rep.bias = rb;
                // GRU without linear_before_reset needs r first: the h gate's product is (r ⊙ h) R_h^T.
                const int64_t cols = (lstm_ || rnn_ || linear_before_reset_) ? GH : 2 * H;
                k.gemm(N, cols, H, h.data(), H, rt_d, GH, false, hr.data(), GH, rep);
                // The gate pre-activations are summed into hr in place, then go through the
                // dispatched (vector) sigmoid / tanh.
                for (int64_t n = 0; n < N; ++n) {
                    const int64_t row = batch_first_ ? n * T + t : t * N + n;
                    const float* a = xw.data() + row * GH;
                    float* b = hr.data() + n * GH;
                    float* hn = h.data() + n * H;
                    float* cn = c.data() + n * H;
                    if (rnn_) {  // h = tanh(x W^T + h R^T + Wb + Rb)
                        for (int64_t j = 0; j < H; ++j) b[j] += a[j];
                        k.activation_apply(b, hn, H, tnh);
                        continue;
                    }
                    if (lstm_) {  // gates i, o, f, c
                        for (int64_t j = 0; j < GH; ++j) b[j] += a[j];
                        if (p) {
                            for (int64_t j = 0; j < H; ++j) {
                                b[j] += p[j] * cn[j];
                                b[2 * H + j] += p[2 * H + j] * cn[j];
                            }
                        }
                        k.activation_apply(b, b, H, sig);
                        k.activation_apply(b + 2 * H, b + 2 * H, H, sig);
                        k.activation_apply(b + 3 * H, b + 3 * H, H, tnh);
                        for (int64_t j = 0; j < H; ++j) cn[j] = b[2 * H + j] * cn[j] + b[j] * b[3 * H + j];
                        if (p) {
                            for (int64_t j = 0; j < H; ++j) b[H + j] += p[H + j] * cn[j];
                        }
                        k.activation_apply(b + H, b + H, H, sig);
                        k.activation_apply(cn, b + 3 * H, H, tnh);
                        for (int64_t j = 0; j < H; ++j) hn[j] = b[H + j] * b[3 * H + j];
                        continue;
                    }
                    // GRU: gates z, r, h.
                    for (int64_t j = 0; j < 2 * H; ++j) b[j] += a[j];
                    k.activation_apply(b, b, 2 * H, sig);
                    if (linear_before_reset_) {
                        for (int64_t j = 0; j < H; ++j) b[2 * H + j] = a[2 * H + j] + b[H + j] * b[2 * H + j];
                    } else {
                        for (int64_t j = 0; j < H; ++j) rh[static_cast<size_t>(n * H + j)] = b[H + j] * hn[j];
                    }
                }
                const bool gru = !lstm_ && !rnn_;
                if (gru && !linear_before_reset_) {
                    Epilogue hep;
                    hep.bias = rb + 2 * H;
                    k.gemm(N, H, H, rh.data(), H, rt_d + 2 * H, GH, false, hr.data() + 2 * H, GH, hep);
                    for (int64_t n = 0; n < N; ++n) {
                        const int64_t row = batch_first_ ? n * T + t : t * N + n;
                        const float* a = xw.data() + row * GH;
                        float* b = hr.data() + n * GH;
                        for (int64_t j = 0; j < H; ++j) b[2 * H + j] += a[2 * H + j];
                    }
                }
                if (gru) {
                    for (int64_t n = 0; n < N; ++n) {
                        float* b = hr.data() + n * GH;
                        float* hn = h.data() + n * H;
                        k.activation_apply(b + 2 * H, b + 2 * H, H, tnh);
                        for (int64_t j = 0; j < H; ++j) hn[j] = (1.0f - b[j]) * b[2 * H + j] + b[j] * hn[j];
                    }
                }
                if (output_ == "y") {
                    for (int64_t n = 0; n < N; ++n) {
                        float* dst = y + (batch_first_ ? ((n * T + t) * D + d) * H : ((t * D + d) * N + n) * H);
                        std::copy(h.data() + n * H, h.data() + (n + 1) * H, dst);
                    }
                }
            }
            if (output_ != "y") {
                const std::vector<float>& last = output_ == "h" ? h : c;
                for (int64_t n = 0; n < N; ++n) std::copy(last.data() + n * H, last.data() + (n + 1) * H, y + state_at(d, n));
            }
        }
    }

private:
    int64_t dirs() const { return direction_ == "bidirectional" ? 2 : 1; }
    // W [D, G·H, K] -> [D, K, G·H].
    static std::vector<float> transposed(const Tensor& w) {
        const int64_t D = w.shape[0], rows = w.shape[1], cols = w.shape[2];
        std::vector<float> t(static_cast<size_t>(w.numel()));
        for (int64_t d = 0; d < D; ++d) transpose_into(w.f32() + d * rows * cols, rows, cols, t.data() + d * rows * cols);
        return t;
    }
    bool lstm_, rnn_;
    int64_t gates_, hidden_;
    std::string direction_;
    bool batch_first_, linear_before_reset_;
    std::string output_;
    size_t h0_ = 0, c0_ = 0, p_ = 0, inputs_ = 4;
    std::vector<float> wt_, rt_;
};

}  // namespace

std::unique_ptr<Op> make_RNN(const Attrs& a) { return std::make_unique<RnnOp>(a, RnnKind::Rnn); }
std::unique_ptr<Op> make_GRU(const Attrs& a) { return std::make_unique<RnnOp>(a, RnnKind::Gru); }
std::unique_ptr<Op> make_LSTM(const Attrs& a) { return std::make_unique<RnnOp>(a, RnnKind::Lstm); }

}  // namespace pyengine
