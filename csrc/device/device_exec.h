// SPDX-License-Identifier: Apache-2.0
// Executing one lowered step, written once for every device executor.
//
// `Dev` is the CUDA backend's device (kernels on a stream, cuBLAS; csrc/device/cuda/backend.cu)
// or the host emulation (loops over the same element bodies and a reference column-major SGEMM;
// device/device_emulated.cpp). The choice of path (im2col, pointwise, direct), the GEMM
// argument mapping and the epilogues live here, so the emulation checks them without a GPU.
//
// Dev provides:
//   float* ptr(const DeviceArg&);  float* scratch();
//   void sgemm(bool trans_a, int m, int n, int k, const float* A, int lda, const float* B, int ldb,
//              float* C, int ldc);                      // column-major C = op(A) B
//   void sgemm_strided_batched(int m, int n, int k, const float* A, int lda, int64_t stride_a,
//                              const float* B, int ldb, int64_t stride_b, float* C, int ldc,
//                              int64_t stride_c, int batch);   // no transposes
//   void copy(void* dst, const void* src, uint64_t bytes);  void zero(void* dst, uint64_t bytes);
//   void copy2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows);
//   the element kernels of device/cuda/kernels.cuh without the stream argument;
//   void host(const DeviceStep&);   // the fallback: the op's CPU kernel on host copies
#pragma once

#include <climits>
#include <stdexcept>
#include <string>

#include "common.h"
#include "device/device.h"

namespace pyengine {

inline int64_t device_numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

inline uint64_t device_nbytes(const DeviceArg& a) { return static_cast<uint64_t>(device_numel(a.shape)) * dtype_size(a.dtype); }

// A 1x1, stride-1, unpadded convolution reads its input as the GEMM's columns (no im2col).
inline bool conv_is_pointwise(const Conv2DParams& p) {
    return p.KH == 1 && p.KW == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 && p.pad_left == 0 &&
           p.OH == p.H && p.OW == p.W;
}

// Scratch bytes a step needs (im2col columns).
inline uint64_t device_scratch_bytes(const DeviceStep& s) {
    if (s.kind != DeviceStep::Conv2D) return 0;
    const Conv2DParams& p = s.conv;
    if (p.groups != 1 || conv_is_pointwise(p)) return 0;
    return static_cast<uint64_t>(p.N * p.C * p.KH * p.KW * p.OH * p.OW) * sizeof(float);
}

// BLAS dimensions are int.
inline int blas_int(int64_t v, const std::string& node) {
    if (v < 0 || v > INT_MAX) throw std::runtime_error(str("node '", node, "': dimension ", v, " exceeds the BLAS int range"));
    return static_cast<int>(v);
}

// C[M,N] = A[M,K] * B, row-major; B is [K,N] (ldb), or [N,K] when trans_b. Column-major BLAS
// computes C^T = B^T A^T: op(B) is N x K, A^T is K x M.
template <class Dev>
void device_gemm_rm(Dev& d, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                    bool trans_b, float* C, int64_t ldc, const std::string& node) {
    d.sgemm(trans_b, blas_int(N, node), blas_int(M, node), blas_int(K, node), B, blas_int(ldb, node), A,
            blas_int(lda, node), C, blas_int(ldc, node));
}

template <class Dev>
void device_conv(Dev& d, const DeviceStep& s) {
    Conv2DParams p = s.conv;
    const float* x = d.ptr(s.in[0]);
    const float* w = d.ptr(s.in[1]);
    const float* bias = s.in.size() > 2 ? d.ptr(s.in[2]) : nullptr;
    float* y = d.ptr(s.out[0]);
    if (p.N * p.O * p.OH * p.OW == 0) return;
    if (p.groups != 1) {  // depthwise and grouped: direct, bias and activation fused
        p.ep.bias = bias;
        d.conv2d_direct(p, x, w, y);
        return;
    }
    const int64_t ckk = p.C * p.KH * p.KW, ohw = p.OH * p.OW;
    if (ckk == 0) {
        d.zero(y, static_cast<uint64_t>(p.N * p.O * ohw) * sizeof(float));
    } else {
        const float* cols = x;
        if (!conv_is_pointwise(p)) {
            d.im2col(p, x, d.scratch());
            cols = d.scratch();
        }
        if (p.layout == Layout::NHWC) {  // Y[N*OH*OW, O] = cols[N*OH*OW, CKK] * W[O, CKK]^T
            device_gemm_rm(d, p.N * ohw, p.O, ckk, cols, ckk, w, ckk, true, y, p.O, s.name);
        } else {  // per image Y_n[O, OH*OW] = W[O, CKK] * cols_n[CKK, OH*OW], i.e. Y_n^T = cols_n^T W^T
            d.sgemm_strided_batched(blas_int(ohw, s.name), blas_int(p.O, s.name), blas_int(ckk, s.name), cols,
                                    blas_int(ohw, s.name), ckk * ohw, w, blas_int(ckk, s.name), 0, y,
                                    blas_int(ohw, s.name), p.O * ohw, blas_int(p.N, s.name));
        }
    }
    const bool nhwc = p.layout == Layout::NHWC;
    d.bias_act(y, p.N * p.O * ohw, bias, nhwc ? 1 : ohw, p.O, p.ep);
}

// Runs step `s` on device `d`.
template <class Dev>
void device_step(Dev& d, const DeviceStep& s) {
    switch (s.kind) {
        case DeviceStep::Nop: return;
        case DeviceStep::Copy:
            if (device_nbytes(s.out[0]) > 0) d.copy(d.ptr(s.out[0]), d.ptr(s.in[0]), device_nbytes(s.out[0]));
            return;
        case DeviceStep::Gemm: {
            float* y = d.ptr(s.out[0]);
            if (s.M == 0 || s.N == 0) return;
            if (s.K == 0) {
                d.zero(y, static_cast<uint64_t>(s.M * s.N) * sizeof(float));
            } else {
                device_gemm_rm(d, s.M, s.N, s.K, d.ptr(s.in[0]), s.K, d.ptr(s.in[1]), s.in[1].shape[1], s.trans_b, y,
                               s.N, s.name);
            }
            d.bias_act(y, s.M * s.N, s.in.size() > 2 ? d.ptr(s.in[2]) : nullptr, 1, s.N, s.ep);
            return;
        }
        case DeviceStep::Conv2D: device_conv(d, s); return;
        case DeviceStep::BatchNorm:
            d.batchnorm(d.ptr(s.in[0]), d.ptr(s.in[1]), d.ptr(s.in[2]), d.ptr(s.in[3]), d.ptr(s.in[4]), s.eps, s.outer,
                        s.axis, s.inner, d.ptr(s.out[0]));
            // A fused activation (pre-activation BN-ReLU), in place.
            if (s.ep.act != Activation::None) {
                d.unary(d.ptr(s.out[0]), d.ptr(s.out[0]), device_numel(s.out[0].shape), s.ep);
            }
            return;
        case DeviceStep::Binary:
            d.binary(s.binop, d.ptr(s.in[0]), s.in[0].shape, d.ptr(s.in[1]), s.in[1].shape, d.ptr(s.out[0]),
                     s.out[0].shape);
            return;
        case DeviceStep::Unary: d.unary(d.ptr(s.in[0]), d.ptr(s.out[0]), device_numel(s.in[0].shape), s.ep); return;
        case DeviceStep::Softmax: d.softmax(d.ptr(s.in[0]), d.ptr(s.out[0]), s.outer, s.axis, s.inner); return;
        case DeviceStep::Pool2D: d.pool2d(s.pool, d.ptr(s.in[0]), d.ptr(s.out[0])); return;
        case DeviceStep::Transpose: d.transpose(d.ptr(s.in[0]), s.in[0].shape, s.perm, d.ptr(s.out[0])); return;
        case DeviceStep::Pad:
            d.pad(d.ptr(s.in[0]), s.in[0].shape, s.pad_begin, s.pad_end, s.pad_mode, s.pad_value, d.ptr(s.out[0]));
            return;
        case DeviceStep::Mean: d.reduce_mean(d.ptr(s.in[0]), s.in[0].shape, s.axes, d.ptr(s.out[0])); return;
        case DeviceStep::Lrn:
            d.lrn(d.ptr(s.in[0]), s.outer, s.axis, s.inner, s.lrn_size, s.lrn_alpha, s.lrn_beta, s.lrn_bias,
                  d.ptr(s.out[0]));
            return;
        case DeviceStep::Concat: {
            int64_t total = 0;
            for (int64_t n : s.sizes) total += n;
            char* dst = reinterpret_cast<char*>(d.ptr(s.out[0]));
            const size_t pitch = static_cast<size_t>(total * s.inner) * sizeof(float);
            for (size_t i = 0; i < s.in.size(); ++i) {
                const size_t width = static_cast<size_t>(s.sizes[i] * s.inner) * sizeof(float);
                if (width > 0 && s.outer > 0) d.copy2d(dst, pitch, d.ptr(s.in[i]), width, width, static_cast<size_t>(s.outer));
                dst += width;
            }
            return;
        }
        case DeviceStep::Host: d.host(s); return;
    }
    throw std::runtime_error(str("node '", s.name, "': unknown device step kind ", static_cast<int>(s.kind)));
}

}  // namespace pyengine
