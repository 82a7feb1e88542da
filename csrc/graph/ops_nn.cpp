// SPDX-License-Identifier: Apache-2.0
// Dense, Conv2D, BatchNorm, pooling and softmax.
#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "common.h"
#include "graph/conv_geometry.h"
#include "graph/op.h"
#include "kernels/conv_nchwc.h"
#include "kernels/conv_winograd.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/pool.h"
#include "kernels/transform.h"
#include "kernels/dispatch.h"

namespace pyengine {

namespace {

// ---- Dense / MatMul: y[..., N] = x[..., K] W (+ b) ----
class DenseOp : public Op {
public:
    explicit DenseOp(const Attrs& a) : trans_b_(a.get_bool("transpose_b", false)), ep_(a.get_epilogue()) {}

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& x = in[0];
        const Shape& w = in[1];
        if (x.empty()) shape_error("Dense input must have rank >= 1");
        if (w.size() != 2) shape_error(str("Dense weight must be 2-D, got ", shape_str(w)));
        const int64_t K = trans_b_ ? w[1] : w[0];
        const int64_t N = trans_b_ ? w[0] : w[1];
        if (x.back() != K) {
            shape_error(str("Dense input's last dimension is ", x.back(), " but the weight ",
                            shape_str(w), trans_b_ ? " (transposed)" : "", " needs ", K));
        }
        if (in.size() > 2 && (in[2].size() != 1 || in[2][0] != N)) {
            shape_error(str("Dense bias must have shape [", N, "], got ", shape_str(in[2])));
        }
        Shape y = x;
        y.back() = N;
        return {y};
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Tensor& x = *in[0];
        const Tensor& w = *in[1];
        const int64_t K = x.shape.back();
        const int64_t M = K == 0 ? 0 : x.numel() / K;
        const int64_t N = out[0]->shape.back();
        Epilogue ep = ep_;
        ep.bias = in.size() > 2 ? in[2]->f32() : nullptr;
        const GemmMicroKernel& uk = *kernels().gemm_uk;
        // The blocked path of gemm_driver (more than 2 mr rows; B transposed or rows over 2 KB
        // apart) packs B on every call: a constant weight is packed once instead.
        if (weight_ != nullptr && w.f32() == weight_->f32() && M > 2 * uk.mr && (trans_b_ || w.shape[1] > 512)) {
            if (const float* pb = packed_weight(uk, K, N)) {
                gemm_driver(uk, M, N, K, x.f32(), K, nullptr, 0, false, out[0]->f32(), N, ep, pb);
                return;
            }
        }
        gemm(M, N, K, x.f32(), K, w.f32(), w.shape[1], trans_b_, out[0]->f32(), N, ep);
    }

    // Keeps the constant weight; it is packed on the first call that needs it, not at load:
    // loading stays a mapping of the file, and one-row calls (which read it in place) never pay
    // the packed copy's memory.
    void prepare(const std::vector<const Tensor*>& constants) override {
        if (constants.size() >= 2 && constants[1] != nullptr && constants[1]->shape.size() == 2) weight_ = constants[1];
    }

    OpRunInfo run_info(const std::vector<Shape>& in) const override {
        (void)in;
        return {"", str(kernels().name, " gemm")};
    }

    bool lower(const std::vector<Shape>& in, DeviceStep* s) const override {
        s->kind = DeviceStep::Gemm;
        s->K = in[0].back();
        s->M = s->K == 0 ? 0 : shape_numel(in[0]) / s->K;
        s->N = trans_b_ ? in[1][0] : in[1][1];
        s->trans_b = trans_b_;
        s->ep = ep_;
        return true;
    }

private:
    // The weight packed for `uk` (once, thread-safe); nullptr when it was packed for another
    // kernel variant (a switch of PYENGINE_ISA at run time: gemm then packs as it goes).
    const float* packed_weight(const GemmMicroKernel& uk, int64_t K, int64_t N) const {
        std::call_once(pack_once_, [&] {
            packed_.resize(gemm_packed_b_size(uk.nr, K, N));
            gemm_pack_b(uk.nr, K, N, weight_->f32(), weight_->shape[1], trans_b_, packed_.data());
            packed_uk_ = &uk;
        });
        return packed_uk_ == &uk ? packed_.data() : nullptr;
    }

    bool trans_b_;
    Epilogue ep_;
    const Tensor* weight_ = nullptr;  // the constant weight, if it is one
    mutable std::once_flag pack_once_;
    mutable std::vector<float> packed_;
    mutable const GemmMicroKernel* packed_uk_ = nullptr;
};

// ---- Conv2D ----
class Conv2DOp : public Op {
public:
    explicit Conv2DOp(const Attrs& a)
        : conv_(a), layout_(conv_.layout), groups_(conv_.groups), ep_(a.get_epilogue()) {}

    Conv2DParams geometry(const Shape& x, const Shape& w) const { return conv_.geometry(x, w, "Conv2D"); }

    // Names the path conv2d_run takes (a blocked kernel overrides this with its own).
    OpRunInfo run_info(const std::vector<Shape>& in) const override {
        const Conv2DParams p = geometry(in[0], in[1]);
        const bool pointwise = p.KH == 1 && p.KW == 1 && p.stride_h == 1 && p.stride_w == 1 &&
                               p.OH == p.H && p.OW == p.W;
        const bool depthwise = p.groups > 1 && p.groups == p.C && p.O == p.C;
        if (blocked_ != nullptr) {  // the layout pass runs it blocked (model.cpp sets the layout)
            const int block = blocked_->conv.cb;
            const bool native = kernels().nchwc_block == block;
            const char* path = depthwise ? "depthwise" : p.KH * p.KW == 1 ? "1x1" : "direct";
            if (runs_winograd(p)) path = "winograd F(4x4,3x3)";
            return {"", str(native ? kernels().name : "generic", " nchwc", block, " ", path,
                            blocked_->conv.in_block == 1 ? " (plain input)" : "")};
        }
        const char* path = depthwise ? "depthwise direct" : pointwise ? "1x1 gemm" : "im2col gemm";
        return {layout_ == Layout::NHWC ? "NHWC" : "NCHW", str(kernels().name, " ", path)};
    }

    bool lower(const std::vector<Shape>& in, DeviceStep* s) const override {
        s->kind = DeviceStep::Conv2D;
        s->conv = geometry(in[0], in[1]);
        s->conv.ep = ep_;
        return true;
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        Conv2DParams p = geometry(in[0], in[1]);
        if (in.size() > 2 && (in[2].size() != 1 || in[2][0] != p.O)) {
            shape_error(str("Conv2D bias must have shape [", p.O, "], got ", shape_str(in[2])));
        }
        if (layout_ == Layout::NHWC) return {{p.N, p.OH, p.OW, p.O}};
        return {{p.N, p.O, p.OH, p.OW}};
    }

    // Constant weights up to kPackMax bytes are packed once for the GEMM micro-kernel in use at
    // load (larger ones, and runs under another kernel variant, pack as they go): loading stays
    // a mapping of the file, not a copy of it.
    void prepare(const std::vector<const Tensor*>& constants) override {
        constexpr size_t kPackMax = size_t(4) << 20;
        if (constants.size() < 2 || constants[1] == nullptr || constants[1]->shape.size() != 4) return;
        weight_ = constants[1];
        bias_ = constants.size() > 2 ? constants[2] : nullptr;
        bias_constant_ = constants.size() <= 2 || constants[2] != nullptr;
        const Tensor& w = *constants[1];
        if (w.nbytes() > kPackMax) return;
        Conv2DParams p;
        p.layout = layout_;
        p.groups = groups_;
        p.O = w.shape[0];
        p.C = w.shape[1] * groups_;
        p.KH = w.shape[2];
        p.KW = w.shape[3];
        if (p.O % groups_ != 0 || w.numel() == 0) return;  // infer reports the problem
        packed_uk_ = kernels().gemm_uk;
        packed_w_ = conv2d_pack_weights(p, *packed_uk_, w.f32());
        packed_src_ = w.f32();
    }

    // A constant weight (and bias) in NCHW is used in the blocked kernels' layout
    // ([OB][ICB][KH][KW][ib][block]): straight from the file's mapping when the file stores that
    // block (attach_blocked_weights), else repacked once here. The GEMM packing made by prepare
    // is then dropped, so the model holds at most one extra copy of these weights, not two.
    void prepare_layout(int block) override {
        if (block == 0 || weight_ == nullptr || !bias_constant_ || layout_ != Layout::NCHW) return;
        const Shape& ws = weight_->shape;
        if (weight_->numel() == 0 || ws[0] % groups_ != 0) return;  // infer reports the problem
        if (bias_ != nullptr && (bias_->shape.size() != 1 || bias_->shape[0] != ws[0])) return;
        auto b = std::make_shared<Blocked>();
        NchwcConv& c = b->conv;
        if (!nchwc_conv_for_weights(ws, groups_, block, &c)) return;
        auto stored = std::find_if(stored_.begin(), stored_.end(), [&](const auto& s) { return s.first == block; });
        if (stored != stored_.end()) {
            b->weights = stored->second->f32();  // zero-copy: the mapping holds this form
            b->mapped_bytes = static_cast<int64_t>(stored->second->nbytes());
        } else {
            b->owned = nchwc_pack_conv_weights(c, weight_->f32());
            b->weights = b->owned.data();
        }
        // Whether a call may take the Winograd path (winograd_pick decides per call geometry;
        // the direct weights stay for the shapes it leaves direct). Its weights (4x the 3x3
        // ones) are transformed once, by the first call that takes it (winograd_weights), so
        // loading stays a mapping of the file and layers the rule leaves direct never pay them.
        b->winograd_mode = winograd_mode();
        NchwcConv strided = c;  // the weights' geometry, with this node's strides and dilations
        strided.p.stride_h = conv_.strides[0];
        strided.p.stride_w = conv_.strides[1];
        strided.p.dilation_h = conv_.dilations[0];
        strided.p.dilation_w = conv_.dilations[1];
        b->winograd_possible = b->winograd_mode != WinogradMode::Off && winograd_eligible(strided);
        if (bias_ != nullptr) {
            b->bias.assign(static_cast<size_t>((c.p.O + block - 1) / block * block), 0.0f);
            std::copy(bias_->f32(), bias_->f32() + c.p.O, b->bias.begin());
        }
        blocked_ = std::move(b);
        packed_w_.clear();
        packed_w_.shrink_to_fit();
    }

    void attach_blocked_weights(int block, const Tensor& packed) override {
        if (block != 4 && block != 8 && block != 16) {
            throw InvalidArgument(str("block ", block, " is not 4, 8 or 16"));
        }
        if (layout_ != Layout::NCHW) throw InvalidArgument("the convolution's layout is NHWC, not NCHW");
        if (weight_ == nullptr) throw InvalidArgument("its weight is not a tensor in the file");
        if (!bias_constant_) throw InvalidArgument("its bias is not a tensor in the file");
        NchwcConv c;
        if (!nchwc_conv_for_weights(weight_->shape, groups_, block, &c)) {
            throw InvalidArgument(str("its weight ", shape_str(weight_->shape), " with groups ", groups_,
                                      " has no blocked form for block ", block));
        }
        const Shape want = nchwc_packed_weight_shape(c);
        if (packed.shape != want) {
            throw InvalidArgument(str("the block-", block, " weight has shape ", shape_str(packed.shape),
                                      "; its weight ", shape_str(weight_->shape), " with groups ", groups_,
                                      " packs to ", shape_str(want)));
        }
        for (const auto& s : stored_) {
            if (s.first == block) throw InvalidArgument(str("block ", block, " is stored twice"));
        }
        stored_.emplace_back(block, &packed);
    }

    BlockedWeightBytes blocked_weight_bytes() const override {
        if (!blocked_) return {};
        return {blocked_->mapped_bytes, static_cast<int64_t>(blocked_->owned.size() * sizeof(float))};
    }

    int layout(const std::vector<Shape>& in, const std::vector<int>&, int block,
               std::vector<int>* want) const override {
        want->assign(in.size(), 0);
        if (!blocked_ || blocked_->conv.cb != block || in[0].size() != 4) return 0;
        (*want)[0] = blocked_->conv.in_block == 1 ? 0 : block;
        return block;
    }

    bool fuses_residual() const override { return blocked_ != nullptr && ep_.act == Activation::None; }

    void run_fused(const std::vector<const Tensor*>& in, const Tensor& residual, const Epilogue& act,
                   const std::vector<Tensor*>& out) const override {
        run_blocked(in, out, residual.f32(), act);
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (out[0]->block != 0) {
            run_blocked(in, out, nullptr, ep_);
            return;
        }
        Conv2DParams p = geometry(in[0]->shape, in[1]->shape);
        p.ep = ep_;
        p.ep.bias = in.size() > 2 ? in[2]->f32() : nullptr;
        if (!packed_w_.empty() && in[1]->f32() == packed_src_) {
            p.packed_w = packed_w_.data();
            p.packed_w_uk = packed_uk_;
        }
        conv2d(p, in[0]->f32(), in[1]->f32(), out[0]->f32());
    }

private:
    struct Blocked {
        NchwcConv conv;             // block, input block and grouping; geometry filled per call
        const float* weights = nullptr;  // into the file's mapping, or owned
        std::vector<float> owned;   // the repacked weights when the file holds no such form
        int64_t mapped_bytes = 0;
        std::vector<float> bias;    // padded to whole blocks; empty without a bias
        WinogradMode winograd_mode = WinogradMode::Auto;  // PYENGINE_WINOGRAD at load
        bool winograd_possible = false;  // 3x3, stride 1, dilation 1, groups 1, blocked input
        mutable std::once_flag winograd_once;
        mutable std::vector<float> winograd_weights;  // winograd_pack_weights, once
    };

    // The Winograd weights, transformed by the first call that needs them (thread-safe).
    const float* winograd_weights() const {
        const Blocked& b = *blocked_;
        std::call_once(b.winograd_once, [&] { b.winograd_weights = winograd_pack_weights(b.conv, weight_->f32()); });
        return b.winograd_weights.data();
    }

    // Whether a blocked call with geometry p takes the Winograd path (the one place run and
    // run_info ask).
    bool runs_winograd(const Conv2DParams& p) const {
        if (blocked_ == nullptr || !blocked_->winograd_possible) return false;
        NchwcConv c = blocked_->conv;
        c.p = p;
        return winograd_pick(c, blocked_->winograd_mode);
    }

    void run_blocked(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out, const float* residual,
                     const Epilogue& act) const {
        NchwcConv c = blocked_->conv;
        c.p = geometry(in[0]->shape, in[1]->shape);
        c.p.ep = act;
        nchwc_conv_setup(&c);
        c.w = blocked_->weights;
        c.bias = blocked_->bias.empty() ? nullptr : blocked_->bias.data();
        c.residual = residual;
        if (runs_winograd(c.p)) {
            c.w = winograd_weights();
            conv_winograd(c, in[0]->f32(), out[0]->f32());
            return;
        }
        conv_nchwc(c, in[0]->f32(), out[0]->f32());
    }

    std::shared_ptr<const Blocked> blocked_;
    std::vector<std::pair<int, const Tensor*>> stored_;  // blocked weights in the file, by block
    const Tensor* weight_ = nullptr;  // the constant weight and bias, if they are constants
    const Tensor* bias_ = nullptr;
    bool bias_constant_ = false;
    std::vector<float> packed_w_;
    const GemmMicroKernel* packed_uk_ = nullptr;
    const float* packed_src_ = nullptr;
    ConvAttrs conv_;
    Layout layout_;
    int64_t groups_;
    Epilogue ep_;
};

// ---- BatchNorm (inference): y = (x - mean) / sqrt(var + eps) * scale + bias ----
class BatchNormOp : public Op {
public:
    explicit BatchNormOp(const Attrs& a)
        : eps_(a.get_float("epsilon", 1e-5f)), axis_(a.get_int("axis", 1)), ep_(a.get_epilogue()) {
        if (!(eps_ >= 0.0f)) a.fail(str("attribute 'epsilon' must be >= 0, got ", eps_));
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const int64_t axis = normalize_axis(axis_, in[0].size(), "BatchNorm");
        const int64_t C = in[0][static_cast<size_t>(axis)];
        for (size_t i = 1; i < 5; ++i) {
            if (in[i].size() != 1 || in[i][0] != C) {
                shape_error(str("BatchNorm parameter ", i, " must have shape [", C, "], got ", shape_str(in[i])));
            }
        }
        return {in[0]};
    }

    void prepare(const std::vector<const Tensor*>& c) override {
        if (c[1] && c[2] && c[3] && c[4] && c[1]->numel() == c[4]->numel()) {
            fold(c[1]->f32(), c[2]->f32(), c[3]->f32(), c[4]->f32(), c[1]->numel(), scale_, shift_);
        }
    }

    // Constant parameters padded to whole blocks (scale and shift 0 on padded channels).
    void prepare_layout(int block) override {
        if (block == 0 || scale_.empty()) return;
        const size_t padded = (scale_.size() + static_cast<size_t>(block) - 1) / static_cast<size_t>(block) *
                              static_cast<size_t>(block);
        scale_blocked_ = scale_;
        shift_blocked_ = shift_;
        scale_blocked_.resize(padded, 0.0f);
        shift_blocked_.resize(padded, 0.0f);
        block_ = block;
    }

    // Follows a blocked 4-D input over the channel axis, with constant parameters.
    int layout(const std::vector<Shape>& in, const std::vector<int>& in_block, int block,
               std::vector<int>* want) const override {
        const bool blocked = block_ == block && in[0].size() == 4 && in_block[0] == block &&
                             normalize_axis(axis_, 4, "BatchNorm") == 1 &&
                             static_cast<int64_t>(scale_.size()) == in[0][1];
        want->assign(in.size(), 0);
        (*want)[0] = blocked ? block : 0;
        return blocked ? block : 0;
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        if (in[0]->block != 0) {
            nchwc_channel_affine(in[0]->f32(), scale_blocked_.data(), shift_blocked_.data(), s[0], s[1], s[2] * s[3],
                                 in[0]->block, ep_, out[0]->f32());
            return;
        }
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "BatchNorm"));
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < axis; ++i) outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
        const int64_t C = s[axis];
        std::vector<float> scale, shift;
        const std::vector<float>* sc = &scale_;
        const std::vector<float>* sh = &shift_;
        if (static_cast<int64_t>(scale_.size()) != C) {  // parameters are not constants
            fold(in[1]->f32(), in[2]->f32(), in[3]->f32(), in[4]->f32(), C, scale, shift);
            sc = &scale;
            sh = &shift;
        }
        channel_affine(in[0]->f32(), sc->data(), sh->data(), outer, C, inner, out[0]->f32());
        if (ep_.act != Activation::None) activation_apply(out[0]->f32(), out[0]->f32(), outer * C * inner, ep_);
    }

    bool lower(const std::vector<Shape>& in, DeviceStep* st) const override {
        const Shape& s = in[0];
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "BatchNorm"));
        st->kind = DeviceStep::BatchNorm;
        st->outer = st->inner = 1;
        for (size_t i = 0; i < axis; ++i) st->outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) st->inner *= s[i];
        st->axis = s[axis];
        st->eps = eps_;
        st->ep = ep_;  // the fused activation, applied after it (device/device_exec.h)
        return true;
    }

private:
    void fold(const float* g, const float* b, const float* m, const float* v, int64_t C,
              std::vector<float>& scale, std::vector<float>& shift) const {
        scale.resize(static_cast<size_t>(C));
        shift.resize(static_cast<size_t>(C));
        for (int64_t c = 0; c < C; ++c) {
            const float s = g[c] / std::sqrt(v[c] + eps_);
            scale[static_cast<size_t>(c)] = s;
            shift[static_cast<size_t>(c)] = b[c] - m[c] * s;
        }
    }

    float eps_;
    int64_t axis_;
    Epilogue ep_;  // a fused activation that keeps 0 at 0 (pyengine/convert/_graph.py)
    std::vector<float> scale_, shift_;
    int block_ = 0;  // prepare_layout's block (0: no blocked parameters)
    std::vector<float> scale_blocked_, shift_blocked_;
};

// ---- MaxPool / AvgPool / global pools ----
class PoolOp : public Op {
public:
    PoolOp(const Attrs& a, bool is_max, bool global)
        : layout_(a.get_layout()), is_max_(is_max), global_(global) {
        if (!global) {
            kernel_ = a.get_ints("kernel", 2, {}, 1);
            if (kernel_.empty()) a.fail("attribute 'kernel' (a list of 2 integers) is required");
            strides_ = a.get_ints("strides", 2, {1, 1}, 1);
            pads_ = a.get_ints("pads", 4, {0, 0, 0, 0}, 0);
            mode_ = get_pad_mode(a);
            ceil_mode_ = a.get_bool("ceil_mode", false);
            if (!is_max) count_include_pad_ = a.get_bool("count_include_pad", false);
        }
    }

    Pool2DParams geometry(const Shape& x) const {
        if (x.size() != 4) shape_error(str("pooling input must be 4-D, got ", shape_str(x)));
        Pool2DParams p;
        p.layout = layout_;
        p.is_max = is_max_;
        p.count_include_pad = count_include_pad_;
        p.N = x[0];
        p.C = layout_ == Layout::NHWC ? x[3] : x[1];
        p.H = layout_ == Layout::NHWC ? x[1] : x[2];
        p.W = layout_ == Layout::NHWC ? x[2] : x[3];
        if (global_) {
            p.KH = p.H;
            p.KW = p.W;
            p.OH = p.OW = 1;
            return p;
        }
        p.KH = kernel_[0];
        p.KW = kernel_[1];
        p.stride_h = strides_[0];
        p.stride_w = strides_[1];
        auto ph = resolve_pad(mode_, p.H, p.KH, p.stride_h, pads_[0], pads_[2]);
        auto pw = resolve_pad(mode_, p.W, p.KW, p.stride_w, pads_[1], pads_[3]);
        p.pad_top = ph.first;
        p.pad_bottom = ph.second;
        p.pad_left = pw.first;
        p.pad_right = pw.second;
        p.OH = out_size(p.H, p.KH, p.stride_h, ph.first, ph.second);
        p.OW = out_size(p.W, p.KW, p.stride_w, pw.first, pw.second);
        // ceil mode: the last window may run past the padding; it still counts only real cells.
        p.pad_bottom = std::max(p.pad_bottom, (p.OH - 1) * p.stride_h + p.KH - p.H - p.pad_top);
        p.pad_right = std::max(p.pad_right, (p.OW - 1) * p.stride_w + p.KW - p.W - p.pad_left);
        if (count_include_pad_) {  // counting stops at the declared padding, as in ONNX
            p.pad_bottom = ph.second;
            p.pad_right = pw.second;
        }
        return p;
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        Pool2DParams p = geometry(in[0]);
        if (layout_ == Layout::NHWC) return {{p.N, p.OH, p.OW, p.C}};
        return {{p.N, p.C, p.OH, p.OW}};
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        if (in[0]->block != 0) {
            pool2d_nchwc(geometry(in[0]->shape), in[0]->block, in[0]->f32(), out[0]->f32());
            return;
        }
        pool2d(geometry(in[0]->shape), in[0]->f32(), out[0]->f32());
    }
    // NCHW pooling follows a blocked input.
    int layout(const std::vector<Shape>& in, const std::vector<int>& in_block, int block,
               std::vector<int>* want) const override {
        const bool blocked = layout_ == Layout::NCHW && in[0].size() == 4 && in_block[0] == block;
        want->assign(1, blocked ? block : 0);
        return blocked ? block : 0;
    }

    OpRunInfo run_info(const std::vector<Shape>& in) const override {
        (void)in;
        return {layout_ == Layout::NHWC ? "NHWC" : "NCHW", kernels().name};
    }

    bool lower(const std::vector<Shape>& in, DeviceStep* s) const override {
        s->kind = DeviceStep::Pool2D;
        s->pool = geometry(in[0]);
        return true;
    }

private:
    int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t before, int64_t after) const {
        const int64_t span = in + before + after - k;
        if (span < 0 || in == 0) shape_error(str("pooling window ", k, " is larger than the padded input ", in + before + after));
        int64_t out = (ceil_mode_ ? (span + s - 1) / s : span / s) + 1;
        if (ceil_mode_ && (out - 1) * s >= in + before) --out;  // last window must start inside
        return out;
    }

    Layout layout_;
    bool is_max_, global_;
    std::vector<int64_t> kernel_, strides_, pads_;
    PadMode2D mode_ = PadMode2D::Explicit;
    bool ceil_mode_ = false;
    bool count_include_pad_ = false;
};

// ---- Softmax ----
class SoftmaxOp : public Op {
public:
    explicit SoftmaxOp(const Attrs& a) : axis_(a.get_int("axis", -1)) {}
    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        normalize_axis(axis_, in[0].size(), "Softmax");
        return {in[0]};
    }
    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Shape& s = in[0]->shape;
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "Softmax"));
        int64_t outer = 1, inner = 1;
        for (size_t i = 0; i < axis; ++i) outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) inner *= s[i];
        if (s[axis] == 0) return;
        softmax(in[0]->f32(), out[0]->f32(), outer, s[axis], inner);
    }
    bool lower(const std::vector<Shape>& in, DeviceStep* st) const override {
        const Shape& s = in[0];
        const size_t axis = static_cast<size_t>(normalize_axis(axis_, s.size(), "Softmax"));
        st->kind = DeviceStep::Softmax;
        st->outer = st->inner = 1;
        for (size_t i = 0; i < axis; ++i) st->outer *= s[i];
        for (size_t i = axis + 1; i < s.size(); ++i) st->inner *= s[i];
        st->axis = s[axis];
        return true;
    }

private:
    int64_t axis_;
};

}  // namespace

std::unique_ptr<Op> make_Dense(const Attrs& a) { return std::make_unique<DenseOp>(a); }
std::unique_ptr<Op> make_MatMul(const Attrs& a) { return std::make_unique<DenseOp>(a); }
std::unique_ptr<Op> make_Conv2D(const Attrs& a) { return std::make_unique<Conv2DOp>(a); }
std::unique_ptr<Op> make_BatchNorm(const Attrs& a) { return std::make_unique<BatchNormOp>(a); }
std::unique_ptr<Op> make_MaxPool(const Attrs& a) { return std::make_unique<PoolOp>(a, true, false); }
std::unique_ptr<Op> make_AvgPool(const Attrs& a) { return std::make_unique<PoolOp>(a, false, false); }
std::unique_ptr<Op> make_GlobalMaxPool(const Attrs& a) { return std::make_unique<PoolOp>(a, true, true); }
std::unique_ptr<Op> make_GlobalAvgPool(const Attrs& a) { return std::make_unique<PoolOp>(a, false, true); }
std::unique_ptr<Op> make_Softmax(const Attrs& a) { return std::make_unique<SoftmaxOp>(a); }

}  // namespace pyengine
