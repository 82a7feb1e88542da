// SPDX-License-Identifier: Apache-2.0
// The AVX2+FMA kernel table. Only reached after cpu_support_x86_avx2() said yes.
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/pool.h"
#include "runtime/dispatch.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {

void gemm_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep);
void depthwise2d_avx2(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                      int64_t c0, int64_t c1);
const GemmMicroKernel& gemm_micro_avx2();
void conv_nchwc_avx2(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                     int64_t q0, int64_t q1);
void pool2d_avx2(const Pool2DParams& p, const float* x, float* y);
void activation_apply_avx2(const float* x, float* y, int64_t n, const Epilogue& e);
void binary_avx2(BinaryOp op, const float* a, int64_t as, const float* b, int64_t bs, float* y, int64_t n);
void softmax_avx2(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner);

namespace {
void conv2d_avx2(const Conv2DParams& p, const float* x, const float* w, float* y) {
    conv2d_run(*kernel_table_avx2(), p, x, w, y);
}
}  // namespace

const KernelTable* kernel_table_avx2() {
    static const KernelTable table = {
        Isa::Avx2, "avx2", gemm_avx2, conv2d_avx2, depthwise2d_avx2, pool2d_avx2,
        activation_apply_avx2, binary_avx2, softmax_avx2, &gemm_micro_avx2(),
        8, conv_nchwc_avx2, 2,
    };
    return &table;
}

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
