// SPDX-License-Identifier: Apache-2.0
// The NEON kernels (AArch64, and armv7 with NEON chosen at run time); see kernel_table_neon().
#pragma once

#include <cstdint>

#include "kernels/activation.h"
#include "kernels/channel_gather.h"
#include "kernels/conv2d.h"
#include "kernels/conv_nchwc.h"
#include "kernels/conv_winograd.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/nchwc_channel.h"
#include "kernels/pool.h"

namespace pyengine {

// Same contracts as the generic kernels of the same name (kernels/<op>.h, kernels/dispatch.h).
void gemm_arm_neon(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                   int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep);
const GemmMicroKernel& gemm_micro_arm_neon();
void conv2d_arm_neon(const Conv2DParams& p, const float* x, const float* w, float* y);
void depthwise2d_arm_neon(const Conv2DParams& p, const float* x, const float* w, float* y,
                          int64_t n, int64_t c0, int64_t c1);
void pool2d_arm_neon(const Pool2DParams& p, const float* x, float* y);
void activation_apply_arm_neon(const float* x, float* y, int64_t n, const Epilogue& e);
void binary_arm_neon(BinaryOp op, const float* a, int64_t a_step, const float* b, int64_t b_step,
                     float* y, int64_t n);
void conv_nchwc_arm_neon(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                         int64_t q0, int64_t q1);
void nchwc_gather_arm_neon(const NchwcGatherPart* parts, int n_parts, const float* const* srcs, float* y,
                           int64_t HW);
void nchwc_binary_channel_arm_neon(BinaryOp op, const float* a, const float* v, float* y, int64_t HW);
void nchwc_affine_arm_neon(const float* x, const float* scale, const float* shift, float* y, int64_t HW);
void conv_winograd_arm_neon(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                            int64_t t0, int64_t t1, int64_t tb, float* scratch);
void softmax_arm_neon(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner);
// The int8 GEMM (kernels/qgemm.h QgemmFn): plain NEON, and with the ARMv8.2 dot product.
void qgemm_arm_neon(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
                    int64_t ldc);
#if defined(__aarch64__)
void qgemm_arm_neon_dot(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp,
                        int32_t* C, int64_t ldc);
#endif  // defined(__aarch64__)

}  // namespace pyengine
