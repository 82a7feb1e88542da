// SPDX-License-Identifier: Apache-2.0
// The AVX2+FMA kernel table. Only reached after cpu_support_x86_avx2() said yes.
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/pool.h"
#include "kernels/dispatch.h"
#include "platform/cpu.h"

#if defined(__AVX2__) && defined(__FMA__)

namespace pyengine {

void gemm_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
               int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep);
void depthwise2d_avx2(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                      int64_t c0, int64_t c1);
const GemmMicroKernel& gemm_micro_avx2();
void conv_nchwc_avx2(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                     int64_t q0, int64_t q1);
void nchwc_gather_avx2(const NchwcGatherPart* parts, int n_parts, const float* const* srcs, float* y, int64_t HW);
void nchwc_binary_channel_avx2(BinaryOp op, const float* a, const float* v, float* y, int64_t HW);
void nchwc_affine_avx2(const float* x, const float* scale, const float* shift, float* y, int64_t HW);
void conv_winograd_avx2(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                        int64_t t0, int64_t t1, int64_t tb, float* scratch);
void pool2d_avx2(const Pool2DParams& p, const float* x, float* y);
void activation_apply_avx2(const float* x, float* y, int64_t n, const Epilogue& e);
void binary_avx2(BinaryOp op, const float* a, int64_t as, const float* b, int64_t bs, float* y, int64_t n);
void qgemm_avx2(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
                int64_t ldc);
void qgemm_avx2_vnni(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
                     int64_t ldc);
void softmax_avx2(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner);
void erf_apply_avx2(const float* x, float* y, int64_t n, bool gelu);

namespace {
void conv2d_avx2(const Conv2DParams& p, const float* x, const float* w, float* y) {
    conv2d_run(*kernel_table_avx2(), p, x, w, y);
}
}  // namespace

const KernelTable* kernel_table_avx2() {
    // Starts from the generic table, so a kernel with no variant here falls back to the
    // reference one; named fields, so adding a kernel never shifts a positional slot.
    static const KernelTable table = [] {
        KernelTable t = *kernel_table_generic();
        t.isa = Isa::Avx2;
        t.name = "avx2";
        t.gemm = gemm_avx2;
        t.conv2d = conv2d_avx2;
        t.depthwise2d = depthwise2d_avx2;
        t.pool2d = pool2d_avx2;
        t.activation_apply = activation_apply_avx2;
        t.binary = binary_avx2;
        t.softmax = softmax_avx2;
        t.erf_apply = erf_apply_avx2;
        t.gemm_uk = &gemm_micro_avx2();
        t.nchwc_block = 8;
        t.conv_nchwc = conv_nchwc_avx2;
        t.nchwc_oc_tile = 2;
        t.nchwc_gather = nchwc_gather_avx2;
        t.nchwc_binary_channel = nchwc_binary_channel_avx2;
        t.nchwc_affine = nchwc_affine_avx2;
        t.conv_winograd = conv_winograd_avx2;
        t.qgemm = qgemm_avx2;
        t.qgemm_name = "avx2";
        if (cpu_features().avx_vnni) {  // the VEX vpdpbusd (Alder Lake, Zen 5, Sapphire Rapids...)
            t.qgemm = qgemm_avx2_vnni;
            t.qgemm_name = "avx-vnni";
        }
        return t;
    }();
    return &table;
}

}  // namespace pyengine

#endif  // defined(__AVX2__) && defined(__FMA__)
