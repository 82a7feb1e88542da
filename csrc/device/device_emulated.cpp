// SPDX-License-Identifier: Apache-2.0
// The device executor emulated on the host: the lowered program, workspace layout, path choices
// and GEMM mapping of device/device_exec.h, with the CUDA kernels' element bodies run in loops
// and a reference column-major SGEMM in place of cuBLAS. It checks everything but the CUDA API
// calls on machines without a GPU; it is not meant to be fast.
#include <algorithm>
#include <cstring>
#include <vector>

#include "device/cuda/kernels_body.h"
#include "device/device.h"
#include "device/device_exec.h"

namespace pyengine {

namespace {

using namespace pyengine::cuda;

struct HostDev {
    char* workspace;
    char* weights;
    float* scratch_ptr;

    float* ptr(const DeviceArg& a) const {
        return reinterpret_cast<float*>((a.region == DeviceArg::Weights ? weights : workspace) + a.offset);
    }
    float* scratch() const { return scratch_ptr; }

    // Column-major C[m,n] = op(A)[m,k] B[k,n], as cublasSgemm with alpha 1, beta 0.
    void sgemm(bool trans_a, int m, int n, int k, const float* A, int lda, const float* B, int ldb, float* C, int ldc) {
        for (int64_t j = 0; j < n; ++j) {
            for (int64_t i = 0; i < m; ++i) {
                float s = 0.0f;
                for (int64_t q = 0; q < k; ++q) s += (trans_a ? A[q + i * lda] : A[i + q * lda]) * B[q + j * ldb];
                C[i + j * ldc] = s;
            }
        }
    }
    void sgemm_strided_batched(int m, int n, int k, const float* A, int lda, int64_t stride_a, const float* B, int ldb,
                               int64_t stride_b, float* C, int ldc, int64_t stride_c, int batch) {
        for (int64_t b = 0; b < batch; ++b) sgemm(false, m, n, k, A + b * stride_a, lda, B + b * stride_b, ldb, C + b * stride_c, ldc);
    }
    void copy(void* dst, const void* src, uint64_t bytes) { std::memmove(dst, src, static_cast<size_t>(bytes)); }
    void zero(void* dst, uint64_t bytes) { std::memset(dst, 0, static_cast<size_t>(bytes)); }
    void copy2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows) {
        for (size_t r = 0; r < rows; ++r) {
            std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
        }
    }

    void bias_act(float* y, int64_t n, const float* bias, int64_t div, int64_t mod, const Epilogue& ep) {
        for (int64_t i = 0; i < n; ++i) y[i] = bias_act_at(y[i], i, bias, div, mod, ep.act, ep.alpha, ep.beta);
    }
    void conv2d_direct(const Conv2DParams& p, const float* x, const float* w, float* y) {
        for (int64_t i = 0; i < p.N * p.O * p.OH * p.OW; ++i) y[i] = conv2d_direct_at(p, x, w, i);
    }
    void im2col(const Conv2DParams& p, const float* x, float* col) {
        for (int64_t i = 0; i < p.N * p.C * p.KH * p.KW * p.OH * p.OW; ++i) col[i] = im2col_at(p, x, i);
    }
    void pool2d(const Pool2DParams& p, const float* x, float* y) {
        for (int64_t i = 0; i < p.N * p.C * p.OH * p.OW; ++i) y[i] = pool2d_at(p, x, i);
    }
    void binary(BinaryOp op, const float* a, const Shape& as, const float* b, const Shape& bs, float* y, const Shape& out) {
        const BinaryArgs g = binary_args(as, bs, out);
        for (int64_t i = 0; i < device_numel(out); ++i) y[i] = binary_at(op, a, b, g, i);
    }
    void unary(const float* x, float* y, int64_t n, const Epilogue& ep) {
        for (int64_t i = 0; i < n; ++i) y[i] = activate_hd(x[i], ep.act, ep.alpha, ep.beta);
    }
    void softmax(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner) {
        if (axis == 0) return;
        for (int64_t t = 0; t < outer * inner; ++t) softmax_column(x, y, axis, inner, t);
    }
    void batchnorm(const float* x, const float* g, const float* b, const float* m, const float* v, float eps,
                   int64_t outer, int64_t channels, int64_t inner, float* y) {
        for (int64_t i = 0; i < outer * channels * inner; ++i) y[i] = batchnorm_at(x, g, b, m, v, eps, channels, inner, i);
    }
    void transpose(const float* x, const Shape& s, const std::vector<int64_t>& perm, float* y) {
        const TransposeArgs t = transpose_args(s, perm);
        for (int64_t i = 0; i < t.total; ++i) y[i] = transpose_at(x, t, i);
    }
    void pad(const float* x, const Shape& s, const std::vector<int64_t>& begin, const std::vector<int64_t>& end,
             PadMode mode, float value, float* y) {
        const PadArgs a = pad_args(s, begin, end, mode, value);
        for (int64_t i = 0; i < a.total; ++i) y[i] = pad_at(x, a, i);
    }
    void reduce_mean(const float* x, const Shape& s, const std::vector<int64_t>& axes, float* y) {
        const MeanArgs m = mean_args(s, axes);
        for (int64_t i = 0; i < m.total; ++i) y[i] = mean_at(x, m, i);
    }
    void lrn(const float* x, int64_t outer, int64_t channels, int64_t inner, int64_t size, float alpha, float beta,
             float bias, float* y) {
        for (int64_t i = 0; i < outer * channels * inner; ++i) y[i] = lrn_at(x, channels, inner, size, alpha, beta, bias, i);
    }
    void host(const DeviceStep& s) {  // the workspace is host memory already
        std::vector<Tensor> ins(s.in.size()), outs(s.out.size());
        std::vector<const Tensor*> in_ptrs;
        std::vector<Tensor*> out_ptrs;
        for (size_t i = 0; i < s.in.size(); ++i) {
            ins[i].data = ptr(s.in[i]);
            ins[i].shape = s.in[i].shape;
            ins[i].dtype = s.in[i].dtype;
            in_ptrs.push_back(&ins[i]);
        }
        for (size_t i = 0; i < s.out.size(); ++i) {
            outs[i].data = ptr(s.out[i]);
            outs[i].shape = s.out[i].shape;
            outs[i].dtype = s.out[i].dtype;
            out_ptrs.push_back(&outs[i]);
        }
        s.host(in_ptrs, out_ptrs);
    }
};

class EmulatedModel : public DeviceModel {
public:
    EmulatedModel(const void* weights, uint64_t bytes)
        : weights_(static_cast<const char*>(weights), static_cast<const char*>(weights) + bytes) {}

    void run(const DeviceProgram& prog, const std::vector<const void*>& inputs,
             const std::vector<void*>& outputs) override {
        // Poisoned, so a step that reads memory no earlier step wrote shows up as NaN.
        std::vector<float> workspace(static_cast<size_t>(prog.workspace_bytes / sizeof(float)) + 1, NAN);
        uint64_t scratch = 0;
        for (const DeviceStep& s : prog.steps) scratch = std::max(scratch, device_scratch_bytes(s));
        std::vector<float> scratch_buf(static_cast<size_t>(scratch / sizeof(float)) + 1, NAN);
        char* ws = reinterpret_cast<char*>(workspace.data());
        for (size_t i = 0; i < inputs.size(); ++i) std::memcpy(ws + prog.input_offset[i], inputs[i], static_cast<size_t>(prog.input_bytes[i]));
        HostDev d{ws, weights_.data(), scratch_buf.data()};
        for (const DeviceStep& s : prog.steps) device_step(d, s);
        for (size_t o = 0; o < outputs.size(); ++o) std::memcpy(outputs[o], ws + prog.output_offset[o], static_cast<size_t>(prog.output_bytes[o]));
    }

    uint64_t device_bytes() const override { return weights_.size(); }

private:
    std::vector<char> weights_;  // a separate copy, as on a device
};

}  // namespace

std::unique_ptr<DeviceModel> device_model_emulated(const void* weights, uint64_t weight_bytes) {
    return std::make_unique<EmulatedModel>(weights, weight_bytes);
}

}  // namespace pyengine
