// SPDX-License-Identifier: Apache-2.0
// The CUDA backend: device discovery, per-model weights and a pool of execution contexts
// (stream, cuBLAS handle, device workspace, pinned host staging), and the step executor.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "kernels/cuda/kernels.cuh"
#include "runtime/device.h"

namespace pyengine::cuda {

namespace {

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(str("CUDA error in ", what, ": ", cudaGetErrorString(e)));
}

void check(cublasStatus_t s, const char* what) {
    if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(str("cuBLAS error in ", what, ": ", cublasGetStatusString(s)));
}

int to_int(int64_t v, const std::string& node) {
    if (v < 0 || v > INT_MAX) throw std::runtime_error(str("node '", node, "': dimension ", v, " exceeds cuBLAS's int range"));
    return static_cast<int>(v);
}

int64_t numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

uint64_t nbytes(const DeviceArg& a) { return static_cast<uint64_t>(numel(a.shape)) * sizeof(float); }

// Grow-only device buffer.
struct DeviceBuffer {
    void* ptr = nullptr;
    uint64_t size = 0;
    // Returns the bytes newly allocated (0 when it already fit).
    uint64_t reserve(uint64_t bytes) {
        if (bytes <= size) return 0;
        if (ptr) check(cudaFree(ptr), "cudaFree");
        ptr = nullptr;
        size = 0;
        check(cudaMalloc(&ptr, bytes), "cudaMalloc");
        size = bytes;
        return bytes;
    }
    ~DeviceBuffer() {
        if (ptr) cudaFree(ptr);
    }
};

// Grow-only page-locked host buffer: copies from it run asynchronously at full bus speed.
struct PinnedBuffer {
    void* ptr = nullptr;
    uint64_t size = 0;
    char* reserve(uint64_t bytes) {
        if (bytes > size) {
            if (ptr) check(cudaFreeHost(ptr), "cudaFreeHost");
            ptr = nullptr;
            size = 0;
            check(cudaMallocHost(&ptr, bytes), "cudaMallocHost");
            size = bytes;
        }
        return static_cast<char*>(ptr);
    }
    ~PinnedBuffer() {
        if (ptr) cudaFreeHost(ptr);
    }
};

// What one call needs for itself; pooled per model and reused, one per concurrent caller.
struct Context {
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    DeviceBuffer workspace, scratch;
    PinnedBuffer io, host;

    Context() {
        check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
        check(cublasCreate(&blas), "cublasCreate");
        check(cublasSetStream(blas, stream), "cublasSetStream");
        // Plain FP32 (no TF32 tensor-op rounding), so results match the CPU engine to 1e-4.
        check(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    }
    ~Context() {
        if (blas) cublasDestroy(blas);
        if (stream) cudaStreamDestroy(stream);
    }
};

// C[M,N] = A[M,K] * B, row-major; B is [K,N] (ldb), or [N,K] when trans_b. cuBLAS is
// column-major, so this computes C^T = B^T A^T.
void gemm_rm(cublasHandle_t h, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, bool trans_b, float* C, int64_t ldc, const std::string& node) {
    const float one = 1.0f, zero = 0.0f;
    check(cublasSgemm(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, to_int(N, node), to_int(M, node),
                      to_int(K, node), &one, B, to_int(ldb, node), A, to_int(lda, node), &zero, C, to_int(ldc, node)),
          "cublasSgemm");
}

bool conv_is_pointwise(const Conv2DParams& p) {
    return p.KH == 1 && p.KW == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 && p.pad_left == 0 &&
           p.OH == p.H && p.OW == p.W;
}

// Scratch bytes a step needs on the device (im2col columns).
uint64_t scratch_bytes(const DeviceStep& s) {
    if (s.kind != DeviceStep::Conv2D) return 0;
    const Conv2DParams& p = s.conv;
    if (p.groups != 1 || conv_is_pointwise(p)) return 0;
    return static_cast<uint64_t>(p.N * p.C * p.KH * p.KW * p.OH * p.OW) * sizeof(float);
}

class CudaModel : public DeviceModel {
public:
    CudaModel(int device, const void* weights, uint64_t weight_bytes) : device_(device) {
        check(cudaSetDevice(device_), "cudaSetDevice");
        weights_.reserve(weight_bytes > 0 ? weight_bytes : 1);
        // Straight from the mapped file to the device, once.
        if (weight_bytes > 0) check(cudaMemcpy(weights_.ptr, weights, weight_bytes, cudaMemcpyHostToDevice), "cudaMemcpy (weights)");
        bytes_ = weights_.size;
    }

    uint64_t device_bytes() const override {
        std::lock_guard<std::mutex> lock(mutex_);
        return bytes_;
    }

    void run(const DeviceProgram& prog, const std::vector<const void*>& inputs,
             const std::vector<void*>& outputs) override {
        check(cudaSetDevice(device_), "cudaSetDevice");
        std::unique_ptr<Context> ctx = acquire();
        uint64_t added = ctx->workspace.reserve(prog.workspace_bytes > 0 ? prog.workspace_bytes : 1);
        uint64_t scratch = 0;
        for (const DeviceStep& s : prog.steps) scratch = std::max(scratch, scratch_bytes(s));
        added += ctx->scratch.reserve(scratch);
        if (added) {
            std::lock_guard<std::mutex> lock(mutex_);
            bytes_ += added;
        }
        execute(*ctx, prog, inputs, outputs);  // on failure the context is dropped, not pooled
        release(std::move(ctx));
    }

private:
    std::unique_ptr<Context> acquire() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!pool_.empty()) {
                std::unique_ptr<Context> c = std::move(pool_.back());
                pool_.pop_back();
                return c;
            }
        }
        return std::make_unique<Context>();
    }

    void release(std::unique_ptr<Context> c) {
        std::lock_guard<std::mutex> lock(mutex_);
        pool_.push_back(std::move(c));
    }

    float* ptr(Context& c, const DeviceArg& a) const {
        char* base = static_cast<char*>(a.region == DeviceArg::Weights ? weights_.ptr : c.workspace.ptr);
        return reinterpret_cast<float*>(base + a.offset);
    }

    void execute(Context& c, const DeviceProgram& prog, const std::vector<const void*>& inputs,
                 const std::vector<void*>& outputs) {
        // Inputs and outputs sit contiguously at the end of the workspace; the pinned buffer
        // mirrors that range, so each direction is one asynchronous copy.
        const uint64_t io_bytes = prog.workspace_bytes - prog.io_offset;
        const uint64_t out_begin = prog.output_offset.empty() ? prog.workspace_bytes : prog.output_offset.front();
        char* io = c.io.reserve(io_bytes > 0 ? io_bytes : 1);
        char* dev = static_cast<char*>(c.workspace.ptr);
        for (size_t i = 0; i < inputs.size(); ++i) {
            std::memcpy(io + (prog.input_offset[i] - prog.io_offset), inputs[i], prog.input_bytes[i]);
        }
        if (out_begin > prog.io_offset) {
            check(cudaMemcpyAsync(dev + prog.io_offset, io, out_begin - prog.io_offset, cudaMemcpyHostToDevice, c.stream),
                  "cudaMemcpyAsync (inputs)");
        }
        for (const DeviceStep& s : prog.steps) step(c, s);
        if (prog.workspace_bytes > out_begin) {
            check(cudaMemcpyAsync(io + (out_begin - prog.io_offset), dev + out_begin, prog.workspace_bytes - out_begin,
                                  cudaMemcpyDeviceToHost, c.stream),
                  "cudaMemcpyAsync (outputs)");
        }
        check(cudaStreamSynchronize(c.stream), "running the model");
        for (size_t o = 0; o < outputs.size(); ++o) {
            std::memcpy(outputs[o], io + (prog.output_offset[o] - prog.io_offset), prog.output_bytes[o]);
        }
    }

    void step(Context& c, const DeviceStep& s) {
        cudaStream_t st = c.stream;
        switch (s.kind) {
            case DeviceStep::Nop: return;
            case DeviceStep::Copy:
                if (nbytes(s.out[0]) > 0) {
                    check(cudaMemcpyAsync(ptr(c, s.out[0]), ptr(c, s.in[0]), nbytes(s.out[0]), cudaMemcpyDeviceToDevice, st),
                          "cudaMemcpyAsync (copy)");
                }
                return;
            case DeviceStep::Gemm: {
                float* y = ptr(c, s.out[0]);
                if (s.M == 0 || s.N == 0) return;
                if (s.K == 0) {
                    check(cudaMemsetAsync(y, 0, static_cast<size_t>(s.M * s.N) * sizeof(float), st), "cudaMemsetAsync");
                } else {
                    gemm_rm(c.blas, s.M, s.N, s.K, ptr(c, s.in[0]), s.K, ptr(c, s.in[1]), s.in[1].shape[1], s.trans_b, y,
                            s.N, s.name);
                }
                bias_act(y, s.M * s.N, s.in.size() > 2 ? ptr(c, s.in[2]) : nullptr, 1, s.N, s.ep, st);
                return;
            }
            case DeviceStep::Conv2D: conv(c, s); return;
            case DeviceStep::BatchNorm:
                batchnorm(ptr(c, s.in[0]), ptr(c, s.in[1]), ptr(c, s.in[2]), ptr(c, s.in[3]), ptr(c, s.in[4]), s.eps,
                          s.outer, s.axis, s.inner, ptr(c, s.out[0]), st);
                return;
            case DeviceStep::Binary:
                binary(s.binop, ptr(c, s.in[0]), s.in[0].shape, ptr(c, s.in[1]), s.in[1].shape, ptr(c, s.out[0]),
                       s.out[0].shape, st);
                return;
            case DeviceStep::Unary: unary(ptr(c, s.in[0]), ptr(c, s.out[0]), numel(s.in[0].shape), s.ep, st); return;
            case DeviceStep::Softmax: softmax(ptr(c, s.in[0]), ptr(c, s.out[0]), s.outer, s.axis, s.inner, st); return;
            case DeviceStep::Pool2D: pool2d(s.pool, ptr(c, s.in[0]), ptr(c, s.out[0]), st); return;
            case DeviceStep::Transpose: transpose(ptr(c, s.in[0]), s.in[0].shape, s.perm, ptr(c, s.out[0]), st); return;
            case DeviceStep::Pad:
                pad(ptr(c, s.in[0]), s.in[0].shape, s.pad_begin, s.pad_end, s.pad_mode, s.pad_value, ptr(c, s.out[0]), st);
                return;
            case DeviceStep::Mean: reduce_mean(ptr(c, s.in[0]), s.in[0].shape, s.axes, ptr(c, s.out[0]), st); return;
            case DeviceStep::Concat: {
                int64_t total = 0;
                for (int64_t n : s.sizes) total += n;
                char* dst = reinterpret_cast<char*>(ptr(c, s.out[0]));
                const size_t pitch = static_cast<size_t>(total * s.inner) * sizeof(float);
                for (size_t i = 0; i < s.in.size(); ++i) {
                    const size_t width = static_cast<size_t>(s.sizes[i] * s.inner) * sizeof(float);
                    if (width > 0 && s.outer > 0) {
                        check(cudaMemcpy2DAsync(dst, pitch, ptr(c, s.in[i]), width, width, static_cast<size_t>(s.outer),
                                                cudaMemcpyDeviceToDevice, st),
                              "cudaMemcpy2DAsync (concat)");
                    }
                    dst += width;
                }
                return;
            }
            case DeviceStep::Host: host(c, s); return;
        }
        throw std::runtime_error(str("node '", s.name, "': unknown device step kind ", static_cast<int>(s.kind)));
    }

    void conv(Context& c, const DeviceStep& s) {
        Conv2DParams p = s.conv;
        const float* x = ptr(c, s.in[0]);
        const float* w = ptr(c, s.in[1]);
        const float* bias = s.in.size() > 2 ? ptr(c, s.in[2]) : nullptr;
        float* y = ptr(c, s.out[0]);
        if (p.N * p.O * p.OH * p.OW == 0) return;
        if (p.groups != 1) {  // depthwise and grouped: direct, bias and activation fused
            p.ep.bias = bias;
            conv2d_direct(p, x, w, y, c.stream);
            return;
        }
        const int64_t ckk = p.C * p.KH * p.KW, ohw = p.OH * p.OW;
        const float* cols = x;  // a pointwise convolution reads the input as its columns
        if (!conv_is_pointwise(p)) {
            im2col(p, x, static_cast<float*>(c.scratch.ptr), c.stream);
            cols = static_cast<const float*>(c.scratch.ptr);
        }
        if (p.layout == Layout::NHWC) {  // Y[N*OH*OW, O] = cols[N*OH*OW, CKK] * W[O, CKK]^T
            gemm_rm(c.blas, p.N * ohw, p.O, ckk, cols, ckk, w, ckk, true, y, p.O, s.name);
            bias_act(y, p.N * ohw * p.O, bias, 1, p.O, p.ep, c.stream);
            return;
        }
        // NCHW, per image: Y_n[O, OH*OW] = W[O, CKK] * cols_n[CKK, OH*OW]; one batched call.
        const float one = 1.0f, zero = 0.0f;
        check(cublasSgemmStridedBatched(c.blas, CUBLAS_OP_N, CUBLAS_OP_N, to_int(ohw, s.name), to_int(p.O, s.name),
                                        to_int(ckk, s.name), &one, cols, to_int(ohw, s.name), ckk * ohw, w,
                                        to_int(ckk, s.name), 0, &zero, y, to_int(ohw, s.name), p.O * ohw,
                                        to_int(p.N, s.name)),
              "cublasSgemmStridedBatched");
        bias_act(y, p.N * p.O * ohw, bias, ohw, p.O, p.ep, c.stream);
    }

    // The documented fallback for ops without a device kernel: run the CPU kernel on host copies.
    void host(Context& c, const DeviceStep& s) {
        uint64_t total = 0;
        for (const auto& a : s.in) total += nbytes(a);
        for (const auto& a : s.out) total += nbytes(a);
        check(cudaStreamSynchronize(c.stream), "cudaStreamSynchronize");  // earlier copies out of `host` are done
        char* h = c.host.reserve(total > 0 ? total : 1);
        std::vector<Tensor> ins(s.in.size()), outs(s.out.size());
        std::vector<const Tensor*> in_ptrs;
        std::vector<Tensor*> out_ptrs;
        for (size_t i = 0; i < s.in.size(); ++i) {
            ins[i].data = h;
            ins[i].shape = s.in[i].shape;
            check(cudaMemcpyAsync(h, ptr(c, s.in[i]), nbytes(s.in[i]), cudaMemcpyDeviceToHost, c.stream), "cudaMemcpyAsync");
            h += nbytes(s.in[i]);
            in_ptrs.push_back(&ins[i]);
        }
        for (size_t i = 0; i < s.out.size(); ++i) {
            outs[i].data = h;
            outs[i].shape = s.out[i].shape;
            h += nbytes(s.out[i]);
            out_ptrs.push_back(&outs[i]);
        }
        check(cudaStreamSynchronize(c.stream), "cudaStreamSynchronize");
        s.host(in_ptrs, out_ptrs);
        for (size_t i = 0; i < s.out.size(); ++i) {
            check(cudaMemcpyAsync(ptr(c, s.out[i]), outs[i].data, nbytes(s.out[i]), cudaMemcpyHostToDevice, c.stream),
                  "cudaMemcpyAsync");
        }
    }

    int device_;
    DeviceBuffer weights_;
    mutable std::mutex mutex_;
    uint64_t bytes_ = 0;
    std::vector<std::unique_ptr<Context>> pool_;
};

class CudaBackend : public DeviceBackend {
public:
    std::vector<DeviceInfo> devices() override {
        std::vector<DeviceInfo> out;
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess) {
            cudaGetLastError();  // clear the error so later calls are not poisoned
            return out;
        }
        for (int i = 0; i < count; ++i) {
            cudaDeviceProp prop{};
            check(cudaGetDeviceProperties(&prop, i), "cudaGetDeviceProperties");
            DeviceInfo d;
            d.index = i;
            d.name = prop.name;
            d.memory_bytes = prop.totalGlobalMem;
            d.cc_major = prop.major;
            d.cc_minor = prop.minor;
            d.integrated = prop.integrated != 0;
            char bus[32] = {};
            if (cudaDeviceGetPCIBusId(bus, sizeof bus, i) == cudaSuccess) d.pci_bus_id = bus;
            out.push_back(d);
        }
        return out;
    }

    std::string status() override {
        int count = 0;
        const cudaError_t e = cudaGetDeviceCount(&count);
        if (e == cudaSuccess) return count > 0 ? std::string() : "no CUDA-capable device is detected";
        cudaGetLastError();
        if (void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL)) {
            dlclose(driver);
        } else {
            return "the NVIDIA driver library libcuda.so.1 is not installed";
        }
        return cudaGetErrorString(e);
    }

    std::unique_ptr<DeviceModel> load(int index, const void* weights, uint64_t weight_bytes) override {
        return std::make_unique<CudaModel>(index, weights, weight_bytes);
    }

    std::string version() override {
        int rt = 0, drv = 0, major = 0, minor = 0, patch = 0;
        cudaRuntimeGetVersion(&rt);
        cudaDriverGetVersion(&drv);
        cublasGetProperty(MAJOR_VERSION, &major);
        cublasGetProperty(MINOR_VERSION, &minor);
        cublasGetProperty(PATCH_LEVEL, &patch);
        auto v = [](int x) { return str(x / 1000, ".", (x % 1000) / 10); };
        return str("CUDA runtime ", v(rt), ", driver ", drv ? v(drv) : std::string("none"), ", cuBLAS ", major, ".",
                   minor, ".", patch);
    }
};

}  // namespace

}  // namespace pyengine::cuda

extern "C" __attribute__((visibility("default"))) pyengine::DeviceBackend* pyengine_cuda_backend(int abi) {
    if (abi != pyengine::kDeviceAbiVersion) return nullptr;
    static pyengine::cuda::CudaBackend backend;
    return &backend;
}
