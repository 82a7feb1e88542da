// SPDX-License-Identifier: Apache-2.0
// The CUDA backend: device discovery, per-model weights and a pool of execution contexts
// (stream, cuBLAS handle, device workspace, pinned host staging), and the step executor.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "device/cuda/kernels.cuh"
#include "device/device.h"
#include "device/device_exec.h"

namespace pyengine::cuda {

namespace {

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(str("CUDA error in ", what, ": ", cudaGetErrorString(e)));
}

void check(cublasStatus_t s, const char* what) {
    if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(str("cuBLAS error in ", what, ": ", cublasGetStatusString(s)));
}

// Grow-only device buffer; keeps `held` (the owning model's total) up to date.
struct DeviceBuffer {
    void* ptr = nullptr;
    uint64_t size = 0;
    std::atomic<int64_t>* held = nullptr;

    void reserve(uint64_t bytes) {
        if (bytes <= size) return;
        release();
        check(cudaMalloc(&ptr, bytes), "cudaMalloc");
        size = bytes;
        if (held) *held += static_cast<int64_t>(bytes);
    }
    void release() {
        if (ptr) cudaFree(ptr);
        if (held) *held -= static_cast<int64_t>(size);
        ptr = nullptr;
        size = 0;
    }
    ~DeviceBuffer() { release(); }
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

    explicit Context(std::atomic<int64_t>* held) {
        workspace.held = scratch.held = held;
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

// The device interface of device/device_exec.h: kernels and cuBLAS on the context's stream.
struct CudaDev {
    Context& c;
    char* weights;

    float* ptr(const DeviceArg& a) const {
        char* base = a.region == DeviceArg::Weights ? weights : static_cast<char*>(c.workspace.ptr);
        return reinterpret_cast<float*>(base + a.offset);
    }
    float* scratch() const { return static_cast<float*>(c.scratch.ptr); }

    void sgemm(bool trans_a, int m, int n, int k, const float* A, int lda, const float* B, int ldb, float* C, int ldc) {
        const float one = 1.0f, zero = 0.0f;
        check(cublasSgemm(c.blas, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A, lda, B, ldb, &zero,
                          C, ldc),
              "cublasSgemm");
    }
    void sgemm_strided_batched(int m, int n, int k, const float* A, int lda, int64_t stride_a, const float* B, int ldb,
                               int64_t stride_b, float* C, int ldc, int64_t stride_c, int batch) {
        const float one = 1.0f, zero = 0.0f;
        check(cublasSgemmStridedBatched(c.blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A, lda, stride_a, B, ldb,
                                        stride_b, &zero, C, ldc, stride_c, batch),
              "cublasSgemmStridedBatched");
    }
    void copy(void* dst, const void* src, uint64_t bytes) {
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c.stream), "cudaMemcpyAsync (copy)");
    }
    void zero(void* dst, uint64_t bytes) { check(cudaMemsetAsync(dst, 0, bytes, c.stream), "cudaMemsetAsync"); }
    void copy2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows) {
        check(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows, cudaMemcpyDeviceToDevice, c.stream),
              "cudaMemcpy2DAsync (concat)");
    }

    void bias_act(float* y, int64_t n, const float* bias, int64_t div, int64_t mod, const Epilogue& ep) {
        cuda::bias_act(y, n, bias, div, mod, ep, c.stream);
    }
    void conv2d_direct(const Conv2DParams& p, const float* x, const float* w, float* y) {
        cuda::conv2d_direct(p, x, w, y, c.stream);
    }
    void im2col(const Conv2DParams& p, const float* x, float* col) { cuda::im2col(p, x, col, c.stream); }
    void pool2d(const Pool2DParams& p, const float* x, float* y) { cuda::pool2d(p, x, y, c.stream); }
    void binary(BinaryOp op, const float* a, const Shape& as, const float* b, const Shape& bs, float* y, const Shape& out) {
        cuda::binary(op, a, as, b, bs, y, out, c.stream);
    }
    void unary(const float* x, float* y, int64_t n, const Epilogue& ep) { cuda::unary(x, y, n, ep, c.stream); }
    void softmax(const float* x, float* y, int64_t outer, int64_t axis, int64_t inner) {
        cuda::softmax(x, y, outer, axis, inner, c.stream);
    }
    void batchnorm(const float* x, const float* g, const float* b, const float* m, const float* v, float eps,
                   int64_t outer, int64_t channels, int64_t inner, float* y) {
        cuda::batchnorm(x, g, b, m, v, eps, outer, channels, inner, y, c.stream);
    }
    void transpose(const float* x, const Shape& s, const std::vector<int64_t>& perm, float* y) {
        cuda::transpose(x, s, perm, y, c.stream);
    }
    void pad(const float* x, const Shape& s, const std::vector<int64_t>& begin, const std::vector<int64_t>& end,
             PadMode mode, float value, float* y) {
        cuda::pad(x, s, begin, end, mode, value, y, c.stream);
    }
    void reduce_mean(const float* x, const Shape& s, const std::vector<int64_t>& axes, float* y) {
        cuda::reduce_mean(x, s, axes, y, c.stream);
    }
    void lrn(const float* x, int64_t outer, int64_t channels, int64_t inner, int64_t size, float alpha, float beta,
             float bias, float* y) {
        cuda::lrn(x, outer, channels, inner, size, alpha, beta, bias, y, c.stream);
    }

    // The fallback for ops without a device kernel: run the CPU kernel on pinned host copies.
    void host(const DeviceStep& s) {
        uint64_t total = 0;
        for (const auto& a : s.in) total += device_nbytes(a);
        for (const auto& a : s.out) total += device_nbytes(a);
        check(cudaStreamSynchronize(c.stream), "cudaStreamSynchronize");  // earlier copies out of `host` are done
        char* h = c.host.reserve(total > 0 ? total : 1);
        std::vector<Tensor> ins(s.in.size()), outs(s.out.size());
        std::vector<const Tensor*> in_ptrs;
        std::vector<Tensor*> out_ptrs;
        for (size_t i = 0; i < s.in.size(); ++i) {
            ins[i].data = h;
            ins[i].shape = s.in[i].shape;
            ins[i].dtype = s.in[i].dtype;
            check(cudaMemcpyAsync(h, ptr(s.in[i]), device_nbytes(s.in[i]), cudaMemcpyDeviceToHost, c.stream),
                  "cudaMemcpyAsync");
            h += device_nbytes(s.in[i]);
            in_ptrs.push_back(&ins[i]);
        }
        for (size_t i = 0; i < s.out.size(); ++i) {
            outs[i].data = h;
            outs[i].shape = s.out[i].shape;
            outs[i].dtype = s.out[i].dtype;
            h += device_nbytes(s.out[i]);
            out_ptrs.push_back(&outs[i]);
        }
        check(cudaStreamSynchronize(c.stream), "cudaStreamSynchronize");
        s.host(in_ptrs, out_ptrs);
        for (size_t i = 0; i < s.out.size(); ++i) {
            check(cudaMemcpyAsync(ptr(s.out[i]), outs[i].data, device_nbytes(s.out[i]), cudaMemcpyHostToDevice, c.stream),
                  "cudaMemcpyAsync");
        }
    }
};

class CudaModel : public DeviceModel {
public:
    CudaModel(int device, const void* weights, uint64_t weight_bytes) : device_(device) {
        check(cudaSetDevice(device_), "cudaSetDevice");
        weights_.held = &held_;
        weights_.reserve(weight_bytes > 0 ? weight_bytes : 1);
        // Straight from the mapped file to the device, once.
        if (weight_bytes > 0) check(cudaMemcpy(weights_.ptr, weights, weight_bytes, cudaMemcpyHostToDevice), "cudaMemcpy (weights)");
    }

    uint64_t device_bytes() const override { return static_cast<uint64_t>(held_.load()); }

    void run(const DeviceProgram& prog, const std::vector<const void*>& inputs,
             const std::vector<void*>& outputs) override {
        check(cudaSetDevice(device_), "cudaSetDevice");
        std::unique_ptr<Context> ctx = acquire();
        ctx->workspace.reserve(prog.workspace_bytes > 0 ? prog.workspace_bytes : 1);
        uint64_t scratch = 0;
        for (const DeviceStep& s : prog.steps) scratch = std::max(scratch, device_scratch_bytes(s));
        ctx->scratch.reserve(scratch);
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
        return std::make_unique<Context>(&held_);
    }

    void release(std::unique_ptr<Context> c) {
        std::lock_guard<std::mutex> lock(mutex_);
        pool_.push_back(std::move(c));
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
        CudaDev d{c, static_cast<char*>(weights_.ptr)};
        for (const DeviceStep& s : prog.steps) device_step(d, s);
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

    int device_;
    std::atomic<int64_t> held_{0};  // declared before the buffers that update it
    DeviceBuffer weights_;
    std::mutex mutex_;
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
