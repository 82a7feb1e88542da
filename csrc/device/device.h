// SPDX-License-Identifier: Apache-2.0
// Accelerator dispatch: the lowered program a device executor runs, the interface a device
// backend implements, and the loader that finds the CUDA backend at run time.
//
// The CUDA backend is a separate shared library (libpyengine_cuda.so, built from
// csrc/device/cuda/ with PYENGINE_CUDA=ON) that the core opens with dlopen only when asked
// about GPUs. _core itself never links the CUDA runtime, so the same extension imports on a
// Raspberry Pi or an x86 box without CUDA; there the backend reports what is missing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "format/tensor.h"
#include "kernels/activation.h"
#include "kernels/conv2d.h"
#include "kernels/elementwise.h"
#include "kernels/pool.h"
#include "kernels/transform.h"

namespace pyengine {

// Bumped whenever a struct below changes layout: the core refuses a backend built for another.
constexpr int kDeviceAbiVersion = 2;

// Where a tensor's bytes live on the device: the per-call workspace or the model's weights.
struct DeviceArg {
    enum Region : uint8_t { Workspace, Weights } region = Workspace;
    uint64_t offset = 0;  // bytes from the start of the region
    Shape shape;
    DType dtype = DType::Float32;
};

// One node, lowered: the op's kind and its resolved parameters for one set of input shapes.
struct DeviceStep {
    enum Kind : uint8_t {
        Gemm,       // out = in0[M,K] * in1 (+ in2 bias) with ep; in1 is [K,N], or [N,K] when trans_b
        Conv2D,     // conv (bias = in2 when present)
        BatchNorm,  // in0 [outer, C, inner], in1..4 scale, bias, mean, var; eps
        Binary,     // out = in0 binop in1, numpy broadcasting to out's shape
        Unary,      // out = ep.act(in0)
        Softmax,    // over the middle axis of [outer, axis, inner]
        Pool2D,     // pool
        Copy,       // out = in0, same bytes (reshape-like ops whose memory is not shared)
        Nop,        // out shares in0's memory: nothing to do
        Transpose,  // perm
        Concat,     // along the middle axis of [outer, sizes[i] * inner]
        Pad,        // pad_begin, pad_end, pad_mode, pad_value
        Mean,       // axes (sorted)
        Lrn,        // across the middle axis of [outer, axis, inner]: lrn_size, lrn_alpha, lrn_beta, lrn_bias
        Host,       // no device kernel: the executor copies the inputs to the host and runs `host`
    };
    Kind kind = Host;
    std::string name;  // the node, for error messages
    std::vector<DeviceArg> in, out;

    int64_t M = 0, N = 0, K = 0;
    bool trans_b = false;
    Epilogue ep;  // Gemm, Unary and BatchNorm's fused activation (ep.bias is unused: the bias is an input)
    Conv2DParams conv;
    Pool2DParams pool;
    BinaryOp binop = BinaryOp::Add;
    int64_t outer = 1, axis = 1, inner = 1;
    float eps = 0.0f;
    int64_t lrn_size = 1;
    float lrn_alpha = 0.0f, lrn_beta = 0.0f, lrn_bias = 0.0f;
    std::vector<int64_t> perm, axes, pad_begin, pad_end, sizes;
    PadMode pad_mode = PadMode::Constant;
    float pad_value = 0.0f;
    // Host fallback: runs the node's CPU kernel on host copies of its inputs and outputs.
    std::function<void(const std::vector<const Tensor*>&, const std::vector<Tensor*>&)> host;
};

// "Gemm", "Conv2D", ... "Host".
const char* device_step_kind_name(DeviceStep::Kind kind);

// A model's graph lowered for one set of input shapes: memory layout and steps in order.
struct DeviceProgram {
    uint64_t workspace_bytes = 0;  // arena, then the inputs, then the outputs
    uint64_t io_offset = 0;        // inputs start here; outputs follow them contiguously
    std::vector<uint64_t> input_offset, input_bytes;    // absolute workspace offsets
    std::vector<uint64_t> output_offset, output_bytes;
    std::vector<Shape> output_shapes;
    std::vector<DeviceStep> steps;
};

// One GPU as the backend sees it.
struct DeviceInfo {
    int index = 0;
    std::string name;
    uint64_t memory_bytes = 0;
    int cc_major = 0, cc_minor = 0;
    std::string pci_bus_id;  // "0000:65:00.0"; empty where the runtime has none (integrated)
    bool integrated = false;
};

// A model's weights on one device plus its pool of execution contexts. Thread-safe.
class DeviceModel {
public:
    virtual ~DeviceModel() = default;
    // Runs `prog` on host inputs/outputs (inputs()/outputs() order of the model).
    virtual void run(const DeviceProgram& prog, const std::vector<const void*>& inputs,
                     const std::vector<void*>& outputs) = 0;
    // Bytes of device memory this model holds (weights plus pooled workspaces).
    virtual uint64_t device_bytes() const = 0;
};

// What a device backend library exports (through `pyengine_cuda_backend`).
class DeviceBackend {
public:
    virtual ~DeviceBackend() = default;
    // The GPUs the runtime sees; empty when none (then `status()` says why).
    virtual std::vector<DeviceInfo> devices() = 0;
    // Empty when devices are usable, else why not ("no CUDA-capable device is detected").
    virtual std::string status() = 0;
    // Copies `weight_bytes` at `weights` (the mapped file) to device `index` once.
    virtual std::unique_ptr<DeviceModel> load(int index, const void* weights, uint64_t weight_bytes) = 0;
    // Backend version text, e.g. "CUDA runtime 13.0, driver 13.0, cuBLAS 13.0.2".
    virtual std::string version() = 0;
};

// The symbol the backend library exports: returns its singleton, or nullptr when `abi` differs.
using DeviceBackendEntry = DeviceBackend* (*)(int abi);
#define PYENGINE_CUDA_ENTRY "pyengine_cuda_backend"

// The result of looking for the CUDA backend.
struct CudaRuntime {
    bool built = false;              // this build has CUDA support (PYENGINE_CUDA=ON)
    DeviceBackend* backend = nullptr;  // set when the library loaded
    std::string error;               // why `backend` is null, naming what is missing
    std::string library;             // the path tried
};

// The device executor emulated on the host (device/device_emulated.cpp): the same program,
// layout and step logic with the CUDA kernels' element bodies in loops and a reference SGEMM.
// For checking the lowering on machines without a GPU.
std::unique_ptr<DeviceModel> device_model_emulated(const void* weights, uint64_t weight_bytes);

// Loads the CUDA backend once (dlopen next to the module holding this code); never throws.
const CudaRuntime& cuda_runtime();

}  // namespace pyengine
