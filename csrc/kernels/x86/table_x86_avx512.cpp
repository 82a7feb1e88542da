// SPDX-License-Identifier: Apache-2.0
// The AVX-512 kernel table: the AVX-512 GEMM (and the convolutions built on it) and depthwise
// convolution; the memory-bound elementwise kernels are the AVX2 ones. Only reached after cpu_support_x86_avx512().
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/pool.h"
#include "platform/cpu.h"
#include "kernels/dispatch.h"

#if defined(__AVX512F__) && defined(__FMA__)

namespace pyengine {

void gemm_avx512(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, bool trans_b, float* C, int64_t ldc, const Epilogue& ep);

const GemmMicroKernel& gemm_micro_avx512();
void conv_nchwc_avx512(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                       int64_t q0, int64_t q1);
void nchwc_gather_avx512(const NchwcGatherPart* parts, int n_parts, const float* const* srcs, float* y,
                         int64_t HW);
void nchwc_binary_channel_avx512(BinaryOp op, const float* a, const float* v, float* y, int64_t HW);
void nchwc_affine_avx512(const float* x, const float* scale, const float* shift, float* y, int64_t HW);
void conv_winograd_avx512(const NchwcConv& c, const float* x, float* y, int64_t n, int64_t ob0, int64_t ob1,
                          int64_t t0, int64_t t1, int64_t tb, float* scratch);
void depthwise2d_avx512(const Conv2DParams& p, const float* x, const float* w, float* y, int64_t n,
                        int64_t c0, int64_t c1);

void qgemm_avx512_vnni(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp,
                       int32_t* C, int64_t ldc);
void qgemm_amx(int64_t M, int64_t N, int64_t Kp, const uint8_t* A, int64_t lda, const int8_t* Bp, int32_t* C,
               int64_t ldc);
void quantize_u8_avx512(const float* x, int64_t n, float scale, int32_t zero_point, int32_t q_lo, int32_t q_hi,
                        int32_t shift, uint8_t* out);
void quantize_u8_rows_avx512(const float* x, int64_t rows, int64_t width, int64_t x_stride, float scale,
                             int32_t zero_point, int32_t q_lo, int32_t q_hi, int32_t shift, uint8_t* out,
                             int64_t out_stride);
void qdw_row_avx512(const uint8_t* const* tap_x, int64_t taps, int64_t pix_step, const int16_t* w, int64_t C,
                    int64_t n, int32_t* acc);
void qdw_row_avx512_vnni(const uint8_t* const* tap_x, int64_t taps, int64_t pix_step, const int16_t* w, int64_t C,
                         int64_t n, int32_t* acc);
void qepilogue_codes_avx512(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, uint8_t* y,
                            int64_t y_m, int32_t shift);
void qdw3x3s1_avx512_vnni(const uint8_t* x, int64_t H, int64_t W, int64_t xs, int64_t C, uint8_t pad,
                          const int16_t* w, int64_t oh0, int64_t oh1, int32_t* acc);
void qepilogue_codes_avx512_bw(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, uint8_t* y,
                               int64_t y_m, int32_t shift);
void qepilogue_avx512(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t M, int64_t N, float* y, int64_t y_m,
                      int64_t y_n);

namespace {
void conv2d_avx512(const Conv2DParams& p, const float* x, const float* w, float* y) {
    conv2d_run(*kernel_table_avx512(), p, x, w, y);
}
}  // namespace

const KernelTable* kernel_table_avx512() {
    static const KernelTable table = [] {
        KernelTable t = *kernel_table_avx2();
        t.isa = Isa::Avx512;
        t.name = "avx512";
        t.gemm = gemm_avx512;
        t.conv2d = conv2d_avx512;
        t.gemm_uk = &gemm_micro_avx512();
        t.depthwise2d = depthwise2d_avx512;
        t.nchwc_block = 16;
        t.conv_nchwc = conv_nchwc_avx512;
        t.nchwc_oc_tile = 4;
        t.nchwc_gather = nchwc_gather_avx512;
        t.nchwc_binary_channel = nchwc_binary_channel_avx512;
        t.nchwc_affine = nchwc_affine_avx512;
        t.conv_winograd = conv_winograd_avx512;
        t.quantize_u8 = quantize_u8_avx512;
        t.qepilogue = qepilogue_avx512;
        t.qepilogue_codes = qepilogue_codes_avx512;
        t.qdw_row = qdw_row_avx512;
        t.quantize_u8_rows = quantize_u8_rows_avx512;
        // AVX-512F without VNNI (Skylake-SP) keeps the AVX2 int8 GEMM.
        if (cpu_support_x86_avx512_vnni()) {  // VNNI CPUs have BW too (cpu_support_x86_avx512_vnni checks)
            t.qdw_row = qdw_row_avx512_vnni;
            t.qdw3x3s1 = qdw3x3s1_avx512_vnni;
            t.qepilogue_codes = qepilogue_codes_avx512_bw;
        }
        if (cpu_support_x86_amx_int8()) {
            t.qgemm = qgemm_amx;
            t.qgemm_name = "amx";
        } else if (cpu_support_x86_avx512_vnni()) {
            t.qgemm = qgemm_avx512_vnni;
            t.qgemm_name = "avx512-vnni";
        }
        return t;
    }();
    return &table;
}

}  // namespace pyengine

#endif  // defined(__AVX512F__) && defined(__FMA__)
