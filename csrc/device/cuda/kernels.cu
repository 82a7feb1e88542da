// SPDX-License-Identifier: Apache-2.0
// Grid-stride kernels around the element bodies of kernels_body.h, and their launchers.
#include "device/cuda/kernels.cuh"

#include <stdexcept>
#include <string>

namespace pyengine::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

unsigned blocks_for(int64_t n) {
    const int64_t b = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b));
}

void check_launch(const char* kernel) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        throw std::runtime_error(std::string("CUDA kernel ") + kernel + " failed to launch: " + cudaGetErrorString(e));
    }
}

int64_t numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

#define GRID_STRIDE(i, n) \
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__global__ void bias_act_kernel(float* y, int64_t n, const float* bias, int64_t div, int64_t mod, Activation act,
                                float alpha, float beta) {
    GRID_STRIDE(i, n) y[i] = bias_act_at(y[i], i, bias, div, mod, act, alpha, beta);
}

__global__ void conv2d_direct_kernel(Conv2DParams p, const float* x, const float* w, float* y, int64_t total) {
    GRID_STRIDE(i, total) y[i] = conv2d_direct_at(p, x, w, i);
}

__global__ void im2col_kernel(Conv2DParams p, const float* x, float* col, int64_t total) {
    GRID_STRIDE(i, total) col[i] = im2col_at(p, x, i);
}

__global__ void pool2d_kernel(Pool2DParams p, const float* x, float* y, int64_t total) {
    GRID_STRIDE(i, total) y[i] = pool2d_at(p, x, i);
}

__global__ void binary_kernel(BinaryOp op, const float* a, const float* b, BinaryArgs g, float* y, int64_t total) {
    GRID_STRIDE(i, total) y[i] = binary_at(op, a, b, g, i);
}

__global__ void unary_kernel(const float* x, float* y, int64_t n, Activation act, float alpha, float beta) {
    GRID_STRIDE(i, n) y[i] = activate_hd(x[i], act, alpha, beta);
}

__global__ void softmax_kernel(const float* x, float* y, int64_t columns, int64_t axis, int64_t inner) {
    GRID_STRIDE(t, columns) softmax_column(x, y, axis, inner, t);
}

__global__ void batchnorm_kernel(const float* x, const float* g, const float* b, const float* m, const float* v,
                                 float eps, int64_t channels, int64_t inner, float* y, int64_t total) {
    GRID_STRIDE(i, total) y[i] = batchnorm_at(x, g, b, m, v, eps, channels, inner, i);
}

__global__ void lrn_kernel(const float* x, int64_t channels, int64_t inner, int64_t size, float alpha, float beta,
                           float bias, float* y, int64_t total) {
    GRID_STRIDE(i, total) y[i] = lrn_at(x, channels, inner, size, alpha, beta, bias, i);
}

__global__ void transpose_kernel(const float* x, TransposeArgs t, float* y) {
    GRID_STRIDE(i, t.total) y[i] = transpose_at(x, t, i);
}

__global__ void pad_kernel(const float* x, PadArgs a, float* y) {
    GRID_STRIDE(i, a.total) y[i] = pad_at(x, a, i);
}

__global__ void mean_kernel(const float* x, MeanArgs m, float* y) {
    GRID_STRIDE(i, m.total) y[i] = mean_at(x, m, i);
}

}  // namespace

void bias_act(float* y, int64_t n, const float* bias, int64_t bias_div, int64_t bias_mod, const Epilogue& ep,
              cudaStream_t stream) {
    if (n == 0 || (bias == nullptr && ep.act == Activation::None)) return;
    bias_act_kernel<<<blocks_for(n), kThreads, 0, stream>>>(y, n, bias, bias_div, bias_mod, ep.act, ep.alpha, ep.beta);
    check_launch("bias_act");
}

void conv2d_direct(const Conv2DParams& p, const float* x, const float* w, float* y, cudaStream_t stream) {
    const int64_t total = p.N * p.O * p.OH * p.OW;
    if (total == 0) return;
    conv2d_direct_kernel<<<blocks_for(total), kThreads, 0, stream>>>(p, x, w, y, total);
    check_launch("conv2d_direct");
}

void im2col(const Conv2DParams& p, const float* x, float* col, cudaStream_t stream) {
    const int64_t total = p.N * p.C * p.KH * p.KW * p.OH * p.OW;
    if (total == 0) return;
    im2col_kernel<<<blocks_for(total), kThreads, 0, stream>>>(p, x, col, total);
    check_launch("im2col");
}

void pool2d(const Pool2DParams& p, const float* x, float* y, cudaStream_t stream) {
    const int64_t total = p.N * p.C * p.OH * p.OW;
    if (total == 0) return;
    pool2d_kernel<<<blocks_for(total), kThreads, 0, stream>>>(p, x, y, total);
    check_launch("pool2d");
}

void binary(BinaryOp op, const float* a, const Shape& a_shape, const float* b, const Shape& b_shape, float* y,
            const Shape& out, cudaStream_t stream) {
    const int64_t total = numel(out);
    if (total == 0) return;
    binary_kernel<<<blocks_for(total), kThreads, 0, stream>>>(op, a, b, binary_args(a_shape, b_shape, out), y, total);
    check_launch("binary");
}

void unary(const float* x, float* y, int64_t n, const Epilogue& ep, cudaStream_t stream) {
    if (n == 0) return;
    unary_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, y, n, ep.act, ep.alpha, ep.beta);
    check_launch("unary");
}

void softmax(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner, cudaStream_t stream) {
    if (outer * inner == 0 || axis == 0) return;
    softmax_kernel<<<blocks_for(outer * inner), kThreads, 0, stream>>>(x, y, outer * inner, axis, inner);
    check_launch("softmax");
}

void lrn(const float* x, int64_t outer, int64_t channels, int64_t inner, int64_t size, float alpha, float beta,
         float bias, float* y, cudaStream_t stream) {
    const int64_t total = outer * channels * inner;
    if (total == 0) return;
    lrn_kernel<<<blocks_for(total), kThreads, 0, stream>>>(x, channels, inner, size, alpha, beta, bias, y, total);
    check_launch("lrn");
}

void batchnorm(const float* x, const float* scale, const float* bias, const float* mean, const float* var, float eps,
               int64_t outer, int64_t channels, int64_t inner, float* y, cudaStream_t stream) {
    const int64_t total = outer * channels * inner;
    if (total == 0) return;
    batchnorm_kernel<<<blocks_for(total), kThreads, 0, stream>>>(x, scale, bias, mean, var, eps, channels, inner, y,
                                                                 total);
    check_launch("batchnorm");
}

void transpose(const float* x, const Shape& x_shape, const std::vector<int64_t>& perm, float* y, cudaStream_t stream) {
    const TransposeArgs t = transpose_args(x_shape, perm);
    if (t.total == 0) return;
    transpose_kernel<<<blocks_for(t.total), kThreads, 0, stream>>>(x, t, y);
    check_launch("transpose");
}

void pad(const float* x, const Shape& x_shape, const std::vector<int64_t>& begin, const std::vector<int64_t>& end,
         PadMode mode, float value, float* y, cudaStream_t stream) {
    const PadArgs a = pad_args(x_shape, begin, end, mode, value);
    if (a.total == 0) return;
    pad_kernel<<<blocks_for(a.total), kThreads, 0, stream>>>(x, a, y);
    check_launch("pad");
}

void reduce_mean(const float* x, const Shape& x_shape, const std::vector<int64_t>& axes, float* y, cudaStream_t stream) {
    const MeanArgs m = mean_args(x_shape, axes);
    if (m.total == 0) return;
    mean_kernel<<<blocks_for(m.total), kThreads, 0, stream>>>(x, m, y);
    check_launch("reduce_mean");
}

}  // namespace pyengine::cuda
