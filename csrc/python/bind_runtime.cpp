// SPDX-License-Identifier: Apache-2.0
// CPU features and kernel selection.
#include <pybind11/stl.h>

#include "graph/op.h"
#include "python/bindings.h"
#include "platform/cpu.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"
#include "kernels/gemm.h"
#include "common.h"

namespace pyengine::python {

namespace {

// A C-contiguous, aligned, native float32 2-D array, checked through the numpy C API (no
// conversion: the bench times the kernel, not a copy).
struct Matrix {
    float* data;
    int64_t rows, cols;
};

Matrix matrix(py::handle h, const char* name) {
    auto& api = py::detail::npy_api::get();
    if (api.PyArray_Check_(h.ptr())) {
        auto* a = py::detail::array_proxy(h.ptr());
        auto* d = py::detail::array_descriptor_proxy(a->descr);
        constexpr int kFlags = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
        if (a->nd == 2 && d->type_num == py::detail::npy_api::NPY_FLOAT_ && d->byteorder != '>' &&
            (a->flags & kFlags) == kFlags) {
            return {reinterpret_cast<float*>(a->data), static_cast<int64_t>(a->dimensions[0]),
                    static_cast<int64_t>(a->dimensions[1])};
        }
    }
    throw InvalidArgument(str("gemm: '", name, "' must be a C-contiguous 2-D float32 array"));
}

void gemm_py(py::handle a_obj, py::handle b_obj, py::handle out_obj, bool trans_b, const std::string& isa) {
    const Matrix a = matrix(a_obj, "a"), b = matrix(b_obj, "b"), out = matrix(out_obj, "out");
    const int64_t M = a.rows, K = a.cols;
    const int64_t N = trans_b ? b.rows : b.cols;
    if ((trans_b ? b.cols : b.rows) != K || out.rows != M || out.cols != N) {
        throw InvalidArgument(str("gemm shapes do not fit: a [", M, ", ", K, "], b [", b.rows, ", ",
                                  b.cols, "]", trans_b ? " (transposed)" : "", ", out [",
                                  out.rows, ", ", out.cols, "]"));
    }
    const KernelTable* t = &kernels();
    if (!isa.empty()) {
        if (isa == "generic") t = kernel_table(Isa::Generic);
        else if (isa == "avx2") t = kernel_table(Isa::Avx2);
        else if (isa == "avx512") t = kernel_table(Isa::Avx512);
        else if (isa == "neon") t = kernel_table(Isa::Neon);
        else throw InvalidArgument(str("isa='", isa, "' is not one of generic, avx2, avx512, neon"));
        if (t == nullptr) throw InvalidArgument(str("instruction set '", isa, "' is not available on this CPU or build"));
    }
    GilRelease release;
    t->gemm(M, N, K, a.data, K, b.data, trans_b ? K : N, trans_b, out.data, N, Epilogue{});
}

}  // namespace

void register_runtime(py::module_& m) {
    m.attr("__version__") = PYENGINE_VERSION;
    m.def("cpu_features", []() {
        const CpuFeatures& f = cpu_features();
        py::dict d;
        d["arch"] = f.arch;
        d["model"] = f.model;
        d["cores"] = f.cores;
        d["avx"] = f.avx;
        d["avx2"] = f.avx2;
        d["fma"] = f.fma;
        d["f16c"] = f.f16c;
        d["avx512f"] = f.avx512f;
        d["avx512_vnni"] = f.avx512_vnni;
        d["avx_vnni"] = f.avx_vnni;
        d["amx_int8"] = f.amx_int8;
        d["asimddp"] = f.asimddp;
        d["neon"] = f.neon;
        return d;
    }, "CPU features detected once at start-up.");
    m.def("kernel_variant", []() { return std::string(kernels().name); },
          "Name of the kernel variant in use (generic, avx2, neon).");
    m.def("int8_kernel", []() { return std::string(kernels().qgemm_name); },
          "The int8 GEMM path of the kernel variant in use (amx, avx512-vnni, avx-vnni, avx2, neon-dot, neon, generic).");
    m.def("kernels_available", &kernels_available, "Kernel variants this build and CPU can run, best first.");
    m.def("set_isa", &kernels_select, py::arg("isa"),
          "Switch the kernel variant in use (for comparing variants); ValueError if unavailable.");
    m.def("op_names", &op_names, "Ops the native engine runs.");
    m.def("num_threads", &num_threads, "Intra-op threads (PYENGINE_NUM_THREADS, else the core count).");
    m.def("set_num_threads", &set_num_threads, py::arg("n"),
          "Change the intra-op thread count of the process-wide pool.");
    m.def("gemm", &gemm_py, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_b") = false,
          py::arg("isa") = "",
          "out[M,N] = a[M,K] @ b[K,N] (b[N,K] when trans_b) with the kernels of `isa` "
          "(default: the variant in use). For benchmarks and tests of the GEMM itself.");
}

}  // namespace pyengine::python
