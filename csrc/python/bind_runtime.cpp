// SPDX-License-Identifier: Apache-2.0
// CPU features and kernel selection.
#include <pybind11/stl.h>

#include "graph/op.h"
#include "python/bindings.h"
#include "runtime/cpu.h"
#include "runtime/dispatch.h"

namespace pyengine::python {

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
        d["neon"] = f.neon;
        return d;
    }, "CPU features detected once at start-up.");
    m.def("kernel_variant", []() { return std::string(kernels().name); },
          "Name of the kernel variant in use (generic, avx2, neon).");
    m.def("kernels_available", &kernels_available, "Kernel variants this build and CPU can run, best first.");
    m.def("set_isa", &kernels_select, py::arg("isa"),
          "Switch the kernel variant in use (for comparing variants); ValueError if unavailable.");
    m.def("op_names", &op_names, "Ops the native engine runs.");
}

}  // namespace pyengine::python
