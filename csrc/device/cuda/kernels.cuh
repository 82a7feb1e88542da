// SPDX-License-Identifier: Apache-2.0
// CUDA kernels of the native ops. Each launch goes on `stream`; pointers are device pointers.
// The element bodies live in kernels_body.h (tested on the host against the CPU kernels);
// they keep the CPU kernels' arithmetic order (sums, softmax, batch norm folding).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "device/cuda/kernels_body.h"
#include "device/device.h"

namespace pyengine::cuda {

// y[i] = act(y[i] + bias[(i / bias_div) % bias_mod]); bias may be null.
void bias_act(float* y, int64_t n, const float* bias, int64_t bias_div, int64_t bias_mod,
              const Epilogue& ep, cudaStream_t stream);
// Direct convolution, any groups and layout, bias and activation fused (p.ep.bias on device).
void conv2d_direct(const Conv2DParams& p, const float* x, const float* w, float* y, cudaStream_t stream);
// im2col for groups == 1. NCHW: col is [N][C*KH*KW][OH*OW]; NHWC: col is [N*OH*OW][C*KH*KW],
// the row order (c, kh, kw) matching OIHW weights.
void im2col(const Conv2DParams& p, const float* x, float* col, cudaStream_t stream);
void pool2d(const Pool2DParams& p, const float* x, float* y, cudaStream_t stream);
// y = a op b with numpy broadcasting; a and b shapes right-aligned to out's rank.
void binary(BinaryOp op, const float* a, const Shape& a_shape, const float* b, const Shape& b_shape,
            float* y, const Shape& out, cudaStream_t stream);
void unary(const float* x, float* y, int64_t n, const Epilogue& ep, cudaStream_t stream);
void softmax(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner, cudaStream_t stream);
// y = x * s + (bias - mean * s), s = scale / sqrt(var + eps), c the middle axis of [outer, C, inner].
void batchnorm(const float* x, const float* scale, const float* bias, const float* mean, const float* var,
               float eps, int64_t outer, int64_t channels, int64_t inner, float* y, cudaStream_t stream);
void transpose(const float* x, const Shape& x_shape, const std::vector<int64_t>& perm, float* y,
               cudaStream_t stream);
void pad(const float* x, const Shape& x_shape, const std::vector<int64_t>& begin,
         const std::vector<int64_t>& end, PadMode mode, float value, float* y, cudaStream_t stream);
// LRN across the middle axis of [outer, channels, inner] (ONNX semantics).
void lrn(const float* x, int64_t outer, int64_t channels, int64_t inner, int64_t size, float alpha, float beta,
         float bias, float* y, cudaStream_t stream);
// Mean over `axes` (sorted, unique).
void reduce_mean(const float* x, const Shape& x_shape, const std::vector<int64_t>& axes, float* y,
                 cudaStream_t stream);

}  // namespace pyengine::cuda
