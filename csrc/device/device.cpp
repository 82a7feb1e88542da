// SPDX-License-Identifier: Apache-2.0
#include "device/device.h"

#include <dlfcn.h>

#include <string>

#include "common.h"

namespace pyengine {

namespace {

#ifdef PYENGINE_USE_CUDA
// The directory of the shared object that holds this code (_core, or a test binary).
std::string own_directory() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<const void*>(&cuda_runtime), &info) == 0 || info.dli_fname == nullptr) return ".";
    std::string path = info.dli_fname;
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}
#endif  // PYENGINE_USE_CUDA

CudaRuntime load_cuda() {
    CudaRuntime rt;
#ifdef PYENGINE_USE_CUDA
    rt.built = true;
    rt.library = own_directory() + "/" + PYENGINE_CUDA_LIBRARY_NAME;
    // RTLD_LOCAL: the backend's symbols (and its static CUDA runtime) stay private to it.
    void* handle = dlopen(rt.library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        const char* why = dlerror();
        rt.error = str("the CUDA backend '", rt.library, "' could not be loaded: ", why ? why : "unknown error",
                       " (it needs the NVIDIA driver's libcuda.so.1 and cuBLAS 13: pip install 'pyengine[cuda]')");
        return rt;
    }
    auto entry = reinterpret_cast<DeviceBackendEntry>(dlsym(handle, PYENGINE_CUDA_ENTRY));
    if (entry == nullptr) {
        rt.error = str("'", rt.library, "' has no ", PYENGINE_CUDA_ENTRY, " entry point; rebuild pyengine");
        return rt;
    }
    rt.backend = entry(kDeviceAbiVersion);
    if (rt.backend == nullptr) {
        rt.error = str("'", rt.library, "' was built for another pyengine version (device ABI ", kDeviceAbiVersion,
                       " expected); rebuild pyengine");
    }
    // The handle stays open for the life of the process: models hold code from it.
#else
    rt.error = "this pyengine build has no CUDA support: it was built without the CMake option "
               "PYENGINE_CUDA=ON (rebuild with -DPYENGINE_CUDA=ON where the CUDA toolkit is installed)";
#endif  // PYENGINE_USE_CUDA
    return rt;
}

}  // namespace

const char* device_step_kind_name(DeviceStep::Kind kind) {
    switch (kind) {
        case DeviceStep::Gemm: return "Gemm";
        case DeviceStep::Conv2D: return "Conv2D";
        case DeviceStep::BatchNorm: return "BatchNorm";
        case DeviceStep::Binary: return "Binary";
        case DeviceStep::Unary: return "Unary";
        case DeviceStep::Softmax: return "Softmax";
        case DeviceStep::Pool2D: return "Pool2D";
        case DeviceStep::Copy: return "Copy";
        case DeviceStep::Nop: return "Nop";
        case DeviceStep::Transpose: return "Transpose";
        case DeviceStep::Lrn: return "LRN";
        case DeviceStep::Concat: return "Concat";
        case DeviceStep::Pad: return "Pad";
        case DeviceStep::Mean: return "Mean";
        case DeviceStep::Host: return "Host";
    }
    return "unknown";
}

const CudaRuntime& cuda_runtime() {
    static const CudaRuntime rt = load_cuda();
    return rt;
}

}  // namespace pyengine
