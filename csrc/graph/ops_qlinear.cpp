// SPDX-License-Identifier: Apache-2.0
// QLinearConv2D and QLinearDense: float activations in and out, int8 inside (see ops_quant.cpp).
#include <algorithm>
#include <cstring>
#include <mutex>

#include "common.h"
#include "graph/conv_geometry.h"
#include "graph/op.h"
#include "graph/quant_common.h"
#include "kernels/qgemm.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

// Rows of the int8 GEMM per task: enough to amortize a task, few enough to spread over threads,
// in whole 32-row blocks (the AMX GEMM's; the others take 4 rows at a time).
int64_t row_chunk(int64_t rows, int64_t work_per_row) {
    // At most kMaxRows, so a chunk's patch rows, sums and output tile stay in L2.
    constexpr int64_t kMaxRows = 256, kBlock = 32;
    const int64_t threads = num_threads();
    if (threads <= 1 || rows * work_per_row < (int64_t(1) << 16)) return std::min<int64_t>(std::max<int64_t>(rows, 1), kMaxRows);
    const int64_t chunk = (rows + 4 * threads - 1) / (4 * threads);
    return std::min<int64_t>((chunk + kBlock - 1) / kBlock * kBlock, kMaxRows);
}

// Column ranges per row chunk where the row chunks alone are too few to keep every thread
// busy (the small images late in a network: 49 pixels, 1280 channels): whole 32-column panel
// pairs, so each range starts on a packed panel.
int64_t column_split(int64_t row_tasks, int64_t N, int64_t work) {
    constexpr int64_t kPanels = 32;
    const int64_t threads = num_threads();
    if (threads <= 1 || row_tasks >= 2 * threads || work < (int64_t(1) << 16)) return 1;
    return std::max<int64_t>(1, std::min((2 * threads + row_tasks - 1) / row_tasks, N / kPanels));
}

// memcpy and memset for the few bytes of a stem convolution's patch row (9 bytes of a 3x3 kernel
// row over 3 channels, the padding byte): inline moves instead of a library call per piece.
inline void copy_bytes(uint8_t* dst, const uint8_t* src, int64_t n) {
    if (n >= 8 && n <= 16) {  // two 8-byte moves, overlapping where n < 16
        std::memcpy(dst, src, 8);
        std::memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n < 8) {
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    } else {
        std::memcpy(dst, src, static_cast<size_t>(n));
    }
}

inline void fill_bytes(uint8_t* dst, uint8_t value, int64_t n) {
    if (n < 16) {
        for (int64_t i = 0; i < n; ++i) dst[i] = value;
    } else {
        std::memset(dst, value, static_cast<size_t>(n));
    }
}

template <typename T>
T* scratch(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

// ---- QLinearConv2D ----
class QLinearConvOp : public Op {
public:
    explicit QLinearConvOp(const Attrs& a)
        : node_(a.node()), conv_(a), x_(get_act_quant(a, "x", true)), y_(get_act_quant(a, "y", false)) {
        get_quant_activation(a, &lo_, &hi_);
        x_grid_ = CodeGrid{x_.scale, x_.zero_point, x_.lo, x_.hi};
        y_grid_ = CodeGrid{y_.scale, y_.zero_point, y_.lo, y_.hi};
    }

    // Codes out when requantizing, NCHW, with at least 4 output channels (so that a pixel's
    // padded code row fits in its floats); codes in on the input's own grid.
    const CodeGrid* code_output() const override {
        const int64_t O = groups_.empty() ? 0 : static_cast<int64_t>(groups_.size()) * groups_[0].N;
        return y_.present && conv_.layout == Layout::NCHW && O >= 4 ? &y_grid_ : nullptr;
    }
    bool takes_codes(const CodeGrid& grid) const override {
        return conv_.layout == Layout::NCHW && !groups_.empty() && grid == x_grid_;
    }
    void use_codes(bool input, bool output) override {
        codes_in_ = codes_in_ || input;
        codes_out_ = codes_out_ || output;
    }

    bool takes_dtype(size_t i, DType t) const override {
        if (i == 1) return t == DType::Int8 || t == DType::UInt8;
        if (i == 2) return t == DType::Int32 || t == DType::Float32;
        return t == DType::Float32;
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Conv2DParams p = conv_.geometry(in[0], in[1], "QLinearConv2D");
        if (in.size() > 2 && (in[2].size() != 1 || in[2][0] != p.O)) {
            shape_error(str("QLinearConv2D bias must have shape [", p.O, "], got ", shape_str(in[2])));
        }
        if (conv_.layout == Layout::NHWC) return {{p.N, p.OH, p.OW, p.O}};
        return {{p.N, p.O, p.OH, p.OW}};
    }

    void prepare(const std::vector<const Tensor*>& constants) override {
        const Tensor* w = constants.size() > 1 ? constants[1] : nullptr;
        if (w != nullptr && w->shape.size() != 4) {
            throw ModelFormatError(str("node '", node_, "': the weight must be 4-D OIHW, got ", shape_str(w->shape)));
        }
        if (constants.size() > 2 && constants[2] == nullptr) {
            throw ModelFormatError(str("node '", node_, "': the bias (input 2) must be a tensor in the file"));
        }
        const int64_t O = w ? w->shape[0] : 0, K = w ? w->shape[1] * w->shape[2] * w->shape[3] : 0;
        if (w != nullptr && (conv_.groups < 1 || O % conv_.groups != 0)) return;  // infer reports it
        const int64_t G = conv_.groups, Og = O / std::max<int64_t>(G, 1);
        // Weights as [O, (kh, kw, c)]: the im2col rows are NHWC patches, channels innermost.
        if (w != nullptr) {
            const int64_t C = w->shape[1], KHW = w->shape[2] * w->shape[3];
            for (int64_t g = 0; g < G; ++g) {
                // w(n, k) with k = (kh * KW + kw) * C + c lies at [g*Og + n][c][kh][kw].
                // The permutation is not a single stride, so reorder into a dense copy first.
                std::vector<int8_t> perm(static_cast<size_t>(Og * K));
                const auto* src = static_cast<const int8_t*>(w->data);
                for (int64_t n = 0; n < Og; ++n)
                    for (int64_t c = 0; c < C; ++c)
                        for (int64_t s = 0; s < KHW; ++s)
                            perm[static_cast<size_t>(n * K + s * C + c)] = src[((g * Og + n) * C + c) * KHW + s];
                Tensor view = *w;
                view.data = perm.data();
                view.shape = {Og, K};
                // Per-channel parameters of this group's rows.
                QuantParams gp;
                const QuantParams* wp = w->quant;
                if (wp != nullptr && wp->per_channel() && wp->axis == 0) {
                    // Pointer arithmetic in int64_t: iterator offsets are 32-bit on armv7.
                    gp.scale.assign(wp->scale.data() + g * Og, wp->scale.data() + (g + 1) * Og);
                    gp.zero_point.assign(wp->zero_point.data() + g * Og, wp->zero_point.data() + (g + 1) * Og);
                    view.quant = &gp;
                }
                Tensor bview;
                const Tensor* b = constants.size() > 2 ? constants[2] : nullptr;
                if (b != nullptr && b->shape.size() == 1 && b->shape[0] == O) {
                    bview = *b;
                    bview.data = static_cast<char*>(b->data) + g * Og * 4;
                    bview.shape = {Og};
                    b = &bview;
                }
                groups_.push_back(prepare_quant_weights(node_, &view, 0, Og, K, K, 1, b, x_.scale));
            }
        } else {
            prepare_quant_weights(node_, nullptr, 0, 0, 0, 0, 0, nullptr, 1.0f);  // throws: not constant
        }
    }

    // The blocked layout (NCHW[c], kernels/conv_nchwc.h) for the output of a plain or depthwise
    // convolution: its epilogue writes each block's pixels as contiguous rows, and a blocked
    // input gathers into the u8 patch image by whole blocks, where plain NCHW needs byte and
    // float transposes. The input stays in whatever layout it comes in (any convolution).
    int layout(const std::vector<Shape>& in, const std::vector<int>& in_block, int block,
               std::vector<int>* want) const override {
        want->assign(in.size(), 0);
        if (conv_.layout != Layout::NCHW || in[0].size() != 4 || in[1].size() != 4 || groups_.empty()) return 0;
        (*want)[0] = in_block[0];
        if (codes_out_) return 0;  // codes, not floats: nothing for the planner to reorder
        const Conv2DParams p = conv_.geometry(in[0], in[1], "QLinearConv2D");
        return p.groups == 1 || depthwise(p) ? block : 0;
    }

    OpRunInfo run_info(const std::vector<Shape>& in) const override {
        const Conv2DParams p = conv_.geometry(in[0], in[1], "QLinearConv2D");
        const bool dw = depthwise(p);
        // Codes in or out (Op::use_codes) replace the float layout on that side.
        const char* codes = codes_in_ && codes_out_ ? ", u8 codes in and out" : codes_in_ ? ", u8 codes in"
                            : codes_out_ ? ", u8 codes out" : "";
        return {conv_.layout == Layout::NHWC ? "NHWC" : "NCHW",
                str("int8 ", dw ? "depthwise direct" : str(kernels().qgemm_name, " im2col qgemm"), codes)};
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const Conv2DParams p = conv_.geometry(in[0]->shape, in[1]->shape, "QLinearConv2D");
        const bool nhwc = conv_.layout == Layout::NHWC;
        const int64_t HW = p.H * p.W, P = p.OH * p.OW;
        const int64_t Cg = p.C / p.groups, Og = p.O / p.groups;
        const int64_t bi = in[0]->block, bo = out[0]->block;
        // The u8 image is NHWC with a pixel stride of xs bytes: C, the channels padded to whole
        // blocks when the input is blocked, or to 16 when it comes as codes (Op::takes_codes);
        // the padding's codes meet zero weights.
        const int64_t xs = codes_in_ ? code_pixel_stride(p.C) : bi != 0 ? (p.C + bi - 1) / bi * bi : p.C;
        const int64_t y_image = bo != 0 ? (p.O + bo - 1) / bo * bo * P : p.O * P;
        const int64_t ys = code_pixel_stride(p.O);
        const QgemmFn qgemm = kernels().qgemm;
        std::vector<uint8_t> own(codes_in_ ? 0 : static_cast<size_t>(HW * xs)), planar;
        for (int64_t n = 0; n < p.N; ++n) {
            const uint8_t* xq = own.data();
            if (codes_in_) {
                xq = reinterpret_cast<const uint8_t*>(in[0]->f32()) + n * HW * xs;
            } else {
                quantize_image(p, in[0]->f32() + n * xs * HW, bi, xs, nhwc, own.data(), planar);
            }
            float* y = codes_out_ ? nullptr : out[0]->f32() + n * y_image;
            const YLayout yl{bo, P, nhwc ? p.O : 1, nhwc ? 1 : P,
                             codes_out_ ? reinterpret_cast<uint8_t*>(out[0]->f32()) + n * P * ys : nullptr, ys,
                             y_.shift(), p.O};
            if (depthwise(p)) {
                run_depthwise(p, xq, xs, y, yl);
                continue;
            }
            for (int64_t g = 0; g < p.groups; ++g) {
                const QuantWeights& qw = groups_[static_cast<size_t>(g)];
                const QEpilogue ep = make_qepilogue(qw, x_, y_, lo_, hi_);
                const int64_t K = qw.K, Kp = qgemm_kpad(K);
                // A 1x1 stride-1 convolution reads the image's pixels as GEMM rows in place.
                const bool direct = p.groups == 1 && p.KH == 1 && p.KW == 1 && p.stride_h == 1 && p.stride_w == 1 &&
                                    p.pad_top == 0 && p.pad_left == 0 && p.OH == p.H && p.OW == p.W && xs >= Kp;
                const int64_t chunk = row_chunk(P, K * Og);
                const int64_t row_tasks = (P + chunk - 1) / chunk;
                const int64_t col_tasks = column_split(row_tasks, Og, P * K * Og);
                const int64_t cols = ((Og + col_tasks - 1) / col_tasks + 31) / 32 * 32;  // whole panel pairs
                const uint8_t pad = static_cast<uint8_t>(x_.zero_point + x_.shift());
                parallel_for(row_tasks * col_tasks, [&](int64_t t) {
                    thread_local std::vector<uint8_t> a_buf;
                    thread_local std::vector<int32_t> c_buf;
                    const int64_t m0 = t / col_tasks * chunk, rows = std::min(chunk, P - m0);
                    const int64_t n0 = t % col_tasks * cols, nn = std::min(cols, Og - n0);
                    if (nn <= 0) return;
                    const uint8_t* A = xq + m0 * xs;
                    int64_t lda = xs;
                    if (!direct) {
                        uint8_t* a = scratch(a_buf, static_cast<size_t>(rows * Kp));
                        im2col_rows(p, xq, xs, g * Cg, Cg, m0, rows, Kp, pad, a);
                        A = a;
                        lda = Kp;
                    }
                    int32_t* c = scratch(c_buf, static_cast<size_t>(rows * nn));
                    qgemm(rows, nn, Kp, A, lda, qw.packed.data() + n0 * Kp, c, nn);
                    store(ep.from_column(n0), c, nn, rows, nn, m0, g * Og + n0, y, yl);
                });
            }
        }
    }

private:
    static bool depthwise(const Conv2DParams& p) { return p.groups > 1 && p.groups == p.C && p.O == p.C; }

    // Where the outputs go: as u8 codes when `codes` is set (pixel m's row at codes + m *
    // code_stride, channels padded to code_stride), else floats, blocked (block != 0: channel c
    // of pixel m at [c / block][m][c % block] of an image) or at y[m * m_stride + c * c_stride].
    struct YLayout {
        int64_t block, P, m_stride, c_stride;
        uint8_t* codes;
        int64_t code_stride;
        int32_t code_shift;
        int64_t O;
    };

    // Rows [m0, m0 + rows) of the int32 sums C (row stride ldc) for output channels
    // [c0, c0 + N) through the epilogue into y.
    static void store(const QEpilogue& e, const int32_t* C, int64_t ldc, int64_t rows, int64_t N, int64_t m0,
                      int64_t c0, float* y, const YLayout& yl) {
        if (yl.codes != nullptr) {
            uint8_t* row = yl.codes + m0 * yl.code_stride;
            kernels().qepilogue_codes(e, C, ldc, rows, N, row + c0, yl.code_stride, yl.code_shift);
            if (c0 + N == yl.O && yl.O < yl.code_stride) {  // the padding: the zero point's code
                const uint8_t zero = static_cast<uint8_t>(e.y_zero_point + yl.code_shift);
                for (int64_t r = 0; r < rows; ++r) {
                    std::memset(row + r * yl.code_stride + yl.O, zero, static_cast<size_t>(yl.code_stride - yl.O));
                }
            }
            return;
        }
        const auto epilogue = kernels().qepilogue;
        if (yl.block == 0) {
            epilogue(e, C, ldc, rows, N, y + m0 * yl.m_stride + c0 * yl.c_stride, yl.m_stride, yl.c_stride);
            return;
        }
        // Block by block: each block's pixels are contiguous rows of `block` floats. c0 is a
        // whole number of blocks (blocked output is planned for one group or depthwise only,
        // and a task's columns start on a 32-column panel pair).
        for (int64_t j0 = 0; j0 < N; j0 += yl.block) {
            const int64_t nn = std::min(yl.block, N - j0);
            float* dst = y + ((c0 + j0) / yl.block) * yl.P * yl.block + m0 * yl.block;
            epilogue(e.from_column(j0), C + j0, ldc, rows, nn, dst, yl.block, 1);
            if (nn < yl.block) {  // the padded channels of the last block stay finite: 0
                for (int64_t r = 0; r < rows; ++r) std::fill(dst + r * yl.block + nn, dst + (r + 1) * yl.block, 0.0f);
            }
        }
    }

    // One image (x, in the input's layout) to u8 NHWC codes with pixel stride xs.
    void quantize_image(const Conv2DParams& p, const float* x, int64_t block, int64_t xs, bool nhwc, uint8_t* xq,
                        std::vector<uint8_t>& planar) const {
        const auto quantize = kernels().quantize_u8;
        const int64_t HW = p.H * p.W;
        if (nhwc) {
            quantize(x, HW * p.C, x_.scale, x_.zero_point, x_.lo, x_.hi, x_.shift(), xq);
            return;
        }
        if (block != 0) {
            // [C/block][HW][block]: each block's pixel rows straight into their place in the
            // NHWC pixel rows (stride xs), one pass, in runs of pixels over the threads.
            const auto quantize_rows = kernels().quantize_u8_rows;
            const int64_t blocks = xs / block;
            const int64_t run = HW * xs < (int64_t(1) << 15) ? HW : std::min<int64_t>(HW, 1024);
            const int64_t runs = (HW + run - 1) / run;
            parallel_for(blocks * runs, [&](int64_t t) {
                const int64_t b = t / runs, i0 = t % runs * run, n = std::min(run, HW - i0);
                quantize_rows(x + (b * HW + i0) * block, n, block, block, x_.scale, x_.zero_point, x_.lo, x_.hi,
                              x_.shift(), xq + i0 * xs + b * block, xs);
            });
            return;
        }
        // Plane by plane (vectorized), then a byte transpose to NHWC in tiles of pixels so the
        // rows being written stay in L1 across channels.
        planar.resize(static_cast<size_t>(HW * p.C));
        for (int64_t c = 0; c < p.C; ++c) {
            quantize(x + c * HW, HW, x_.scale, x_.zero_point, x_.lo, x_.hi, x_.shift(), planar.data() + c * HW);
        }
        constexpr int64_t kTile = 64;
        for (int64_t i0 = 0; i0 < HW; i0 += kTile) {
            const int64_t i1 = std::min(HW, i0 + kTile);
            const int64_t C = p.C;  // a local: the byte stores below may alias p
            for (int64_t c = 0; c < C; ++c) {
                const uint8_t* src = planar.data() + c * HW;
                uint8_t* dst = xq + i0 * C + c;
                for (int64_t i = i0; i < i1; ++i, dst += C) *dst = src[i];
            }
        }
    }

    // Patch rows [m0, m0 + rows) of channels [c0, c0 + Cg) from the u8 NHWC image (pixel
    // stride xs), each row (kh, kw, c) padded to Kp; outside the image the zero point (a real 0).
    static void im2col_rows(const Conv2DParams& p, const uint8_t* xq, int64_t xs, int64_t c0, int64_t Cg, int64_t m0,
                            int64_t rows, int64_t Kp, uint8_t pad, uint8_t* a) {
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t m = m0 + r, oh = m / p.OW, ow = m % p.OW;
            uint8_t* row = a + r * Kp;
            // A kernel row's taps are one run of bytes in the image when its pixels hold just
            // these channels, side by side and all inside (a stem convolution's 3 channels: one
            // copy of KW * 3 bytes, not KW copies of 3).
            const bool runs = xs == Cg && p.dilation_w == 1;
            const int64_t iw0 = ow * p.stride_w - p.pad_left;
            for (int64_t kh = 0; kh < p.KH; ++kh) {
                const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                if (runs && ih >= 0 && ih < p.H && iw0 >= 0 && iw0 + p.KW <= p.W) {
                    copy_bytes(row, xq + (ih * p.W + iw0) * xs, p.KW * Cg);
                    row += p.KW * Cg;
                    continue;
                }
                for (int64_t kw = 0; kw < p.KW; ++kw) {
                    const int64_t iw = iw0 + kw * p.dilation_w;
                    if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) {
                        fill_bytes(row, pad, Cg);
                    } else {
                        copy_bytes(row, xq + (ih * p.W + iw) * xs + c0, Cg);
                    }
                    row += Cg;
                }
            }
            fill_bytes(row, 0, a + (r + 1) * Kp - row);
        }
    }

    // Depthwise: per output pixel, every channel at once (contiguous in NHWC), int32 sums, one
    // kernel for all pixels. A run of pixels of one output row whose taps lie inside the image's
    // width goes in one call (weights held in registers across it); a tap above or below the
    // image reads a row of the zero point's code (a real 0) instead. Border columns go one
    // pixel at a time, their outside taps on that row too.
    void run_depthwise(const Conv2DParams& p, const uint8_t* xq, int64_t xs, float* y, const YLayout& yl) const {
        const QuantWeights& qw = groups_.empty() ? empty_ : dw_weights();
        const QEpilogue ep = make_qepilogue(qw, x_, y_, lo_, hi_);
        const int64_t P = p.OH * p.OW, C = p.C, KHW = p.KH * p.KW;
        const uint8_t pad = static_cast<uint8_t>(x_.zero_point + x_.shift());  // a real 0
        const int64_t chunk = row_chunk(P, KHW * C);
        if (const Qdw3x3s1Fn k3 = kernels().qdw3x3s1;
            k3 != nullptr && p.KH == 3 && p.KW == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 &&
            p.dilation_w == 1 && p.pad_top == 1 && p.pad_left == 1 && p.OH == p.H && p.OW == p.W && C % 16 == 0) {
            // The variant's 3x3 stride-1 kernel, over whole output rows.
            const int64_t rows_per_task = std::max<int64_t>(1, chunk / p.OW);
            parallel_for((p.OH + rows_per_task - 1) / rows_per_task, [&](int64_t t) {
                thread_local std::vector<int32_t> acc_buf;
                const int64_t oh0 = t * rows_per_task, oh1 = std::min(p.OH, oh0 + rows_per_task);
                int32_t* acc = scratch(acc_buf, static_cast<size_t>((oh1 - oh0) * p.OW * C));
                k3(xq, p.H, p.W, xs, C, pad, dw_w_.data(), oh0, oh1, acc);
                store(ep, acc, C, (oh1 - oh0) * p.OW, C, oh0 * p.OW, 0, y, yl);
            });
            return;
        }
        // A row of the pad code: W pixels plus the 16 bytes a vector may read past the last
        // channel (the caller's scratch; the tasks only read it).
        thread_local std::vector<uint8_t> pad_buf;
        const size_t pad_bytes = static_cast<size_t>(p.W * xs + 16);
        uint8_t* pad_row = scratch(pad_buf, pad_bytes);
        std::memset(pad_row, pad, pad_bytes);
        const int64_t tasks = (P + chunk - 1) / chunk;
        const auto row_kernel = kernels().qdw_row;
        // Output columns [ow_lo, ow_hi) have every tap inside the image's width.
        const int64_t ow_lo = std::min(p.OW, (p.pad_left + p.stride_w - 1) / p.stride_w);
        const int64_t span = p.W - 1 - (p.KW - 1) * p.dilation_w + p.pad_left;
        const int64_t ow_hi = span < 0 ? 0 : std::min(p.OW, span / p.stride_w + 1);
        parallel_for(tasks, [&](int64_t t) {
            thread_local std::vector<int32_t> acc_buf;
            thread_local std::vector<const uint8_t*> tap_buf;
            const int64_t m0 = t * chunk, rows = std::min(chunk, P - m0);
            int32_t* acc = scratch(acc_buf, static_cast<size_t>(rows * C));
            const uint8_t** tap_x = scratch(tap_buf, static_cast<size_t>(KHW));
            for (int64_t m = m0; m < m0 + rows;) {
                const int64_t oh = m / p.OW, ow = m % p.OW;
                const bool run = ow >= ow_lo && ow < ow_hi;
                const int64_t n = run ? std::min(ow_hi - ow, m0 + rows - m) : 1;
                const int64_t iw0 = ow * p.stride_w - p.pad_left;
                for (int64_t kh = 0; kh < p.KH; ++kh) {
                    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                    const bool row_inside = ih >= 0 && ih < p.H;
                    for (int64_t kw = 0; kw < p.KW; ++kw) {
                        const int64_t iw = iw0 + kw * p.dilation_w;
                        const bool inside = row_inside && iw >= 0 && iw < p.W;
                        // In a run every iw is inside the width, so the pad row steps with it.
                        tap_x[kh * p.KW + kw] = inside ? xq + (ih * p.W + iw) * xs
                                                       : pad_row + (run ? iw * xs : 0);
                    }
                }
                row_kernel(tap_x, KHW, p.stride_w * xs, dw_w_.data(), C, n, acc + (m - m0) * C);
                m += n;
            }
            store(ep, acc, C, rows, C, m0, 0, y, yl);
        });
    }

    // The depthwise weights as one [C, KH*KW] set (every group has one channel), built once.
    const QuantWeights& dw_weights() const {
        std::call_once(dw_once_, [&] {
            dw_.K = groups_[0].K;
            dw_.N = static_cast<int64_t>(groups_.size());
            dw_w_.assign(static_cast<size_t>(dw_.N * dw_.K), 0);
            for (size_t g = 0; g < groups_.size(); ++g) {
                const QuantWeights& q = groups_[g];
                dw_.wsum.push_back(q.wsum[0]);
                dw_.scale.push_back(q.scale[0]);
                if (!q.bias.empty()) dw_.bias.push_back(q.bias[0]);
                // [kh*kw][C]: the inner loop runs over contiguous channels.
                for (int64_t k = 0; k < dw_.K; ++k) dw_w_[static_cast<size_t>(k * dw_.N) + g] = q.centered[static_cast<size_t>(k)];
            }
        });
        return dw_;
    }

    std::string node_;
    ConvAttrs conv_;
    ActQuant x_, y_;
    CodeGrid x_grid_, y_grid_;
    bool codes_in_ = false, codes_out_ = false;  // Op::use_codes
    float lo_ = 0, hi_ = 0;
    std::vector<QuantWeights> groups_;  // one per group: [O/groups, KH*KW*C/groups]
    QuantWeights empty_;
    mutable std::once_flag dw_once_;
    mutable QuantWeights dw_;
    mutable std::vector<int16_t> dw_w_;
};

// ---- QLinearDense: y[..., N] = x[..., K] W (+ b) with W int8 [K, N] (or [N, K], transpose_b) ----
class QLinearDenseOp : public Op {
public:
    explicit QLinearDenseOp(const Attrs& a)
        : node_(a.node()), trans_b_(a.get_bool("transpose_b", false)), x_(get_act_quant(a, "x", true)),
          y_(get_act_quant(a, "y", false)) {
        get_quant_activation(a, &lo_, &hi_);
    }

    bool takes_dtype(size_t i, DType t) const override {
        if (i == 1) return t == DType::Int8 || t == DType::UInt8;
        if (i == 2) return t == DType::Int32 || t == DType::Float32;
        return t == DType::Float32;
    }

    std::vector<Shape> infer(const std::vector<Shape>& in) const override {
        const Shape& x = in[0];
        const Shape& w = in[1];
        if (x.empty()) shape_error("QLinearDense input must have rank >= 1");
        if (w.size() != 2) shape_error(str("QLinearDense weight must be 2-D, got ", shape_str(w)));
        const int64_t K = trans_b_ ? w[1] : w[0], N = trans_b_ ? w[0] : w[1];
        if (x.back() != K) shape_error(str("QLinearDense input's last dimension is ", x.back(), "; the weight ", shape_str(w), " needs ", K));
        if (in.size() > 2 && (in[2].size() != 1 || in[2][0] != N)) {
            shape_error(str("QLinearDense bias must have shape [", N, "], got ", shape_str(in[2])));
        }
        Shape y = x;
        y.back() = N;
        return {y};
    }

    void prepare(const std::vector<const Tensor*>& constants) override {
        const Tensor* w = constants.size() > 1 ? constants[1] : nullptr;
        if (constants.size() > 2 && constants[2] == nullptr) {
            throw ModelFormatError(str("node '", node_, "': the bias (input 2) must be a tensor in the file"));
        }
        if (w != nullptr && w->shape.size() != 2) {
            throw ModelFormatError(str("node '", node_, "': the weight must be 2-D, got ", shape_str(w->shape)));
        }
        const int64_t K = w ? (trans_b_ ? w->shape[1] : w->shape[0]) : 0;
        const int64_t N = w ? (trans_b_ ? w->shape[0] : w->shape[1]) : 0;
        // Per-channel along N: axis 1 of [K, N], axis 0 of [N, K].
        qw_ = prepare_quant_weights(node_, w, trans_b_ ? 0 : 1, N, K, trans_b_ ? K : 1, trans_b_ ? 1 : N,
                                    constants.size() > 2 ? constants[2] : nullptr, x_.scale);
    }

    OpRunInfo run_info(const std::vector<Shape>& in) const override {
        (void)in;
        return {"", str("int8 ", kernels().qgemm_name, " qgemm")};
    }

    void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const override {
        const int64_t K = qw_.K, N = qw_.N, Kp = qgemm_kpad(K);
        const int64_t M = K == 0 ? 0 : in[0]->numel() / K;
        const QEpilogue ep = make_qepilogue(qw_, x_, y_, lo_, hi_);
        const QgemmFn qgemm = kernels().qgemm;
        const int64_t chunk = row_chunk(M, K * N);
        parallel_for((M + chunk - 1) / chunk, [&](int64_t t) {
            thread_local std::vector<uint8_t> a_buf;
            thread_local std::vector<int32_t> c_buf;
            const int64_t m0 = t * chunk, rows = std::min(chunk, M - m0);
            uint8_t* a = scratch(a_buf, static_cast<size_t>(rows * Kp));
            for (int64_t r = 0; r < rows; ++r) {
                kernels().quantize_u8(in[0]->f32() + (m0 + r) * K, K, x_.scale, x_.zero_point, x_.lo, x_.hi, x_.shift(), a + r * Kp);
                std::memset(a + r * Kp + K, 0, static_cast<size_t>(Kp - K));
            }
            int32_t* c = scratch(c_buf, static_cast<size_t>(rows * N));
            qgemm(rows, N, Kp, a, Kp, qw_.packed.data(), c, N);
            kernels().qepilogue(ep, c, N, rows, N, out[0]->f32() + m0 * N, N, 1);
        });
    }

private:
    std::string node_;
    bool trans_b_;
    ActQuant x_, y_;
    float lo_ = 0, hi_ = 0;
    QuantWeights qw_;
};

}  // namespace

std::unique_ptr<Op> make_QLinearConv2D(const Attrs& a) { return std::make_unique<QLinearConvOp>(a); }
std::unique_ptr<Op> make_QLinearDense(const Attrs& a) { return std::make_unique<QLinearDenseOp>(a); }

}  // namespace pyengine
