// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <functional>
#include <memory>

#include "graph/model.h"
#include "format/tensor.h"

namespace pyengine::python {

namespace py = pybind11;

// Releases the GIL around native work, like py::gil_scoped_release, for callers that may wake
// while the interpreter exits (daemon threads): taking the GIL back then ends the thread with
// pthread_exit, whose unwinding must pass through this destructor (a noexcept one, as
// gil_scoped_release's is, calls std::terminate). pybind11 lets that unwinding through.
class GilRelease {
public:
    GilRelease() : state_(PyEval_SaveThread()) {}
    ~GilRelease() noexcept(false) { PyEval_RestoreThread(state_); }
    GilRelease(const GilRelease&) = delete;
    GilRelease& operator=(const GilRelease&) = delete;

private:
    PyThreadState* state_;
};

// True once the interpreter is exiting: a thread that takes the GIL then is ended on the spot,
// so drop-the-reference paths (deleters, run from noexcept destructors) leak instead.
inline bool interpreter_exiting() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif  // PY_VERSION_HEX >= 0x030D0000
}

void register_errors(py::module_& m);
void register_runtime(py::module_& m);
void register_format(py::module_& m);
void register_model(py::module_& m);
void register_batching(py::module_& m);
void register_device(py::module_& m);

// Executes a model for a plan on host buffers (the CPU executor, or a device's).
using RunFn = std::function<void(const std::shared_ptr<const Plan>&, const std::vector<const void*>&,
                                 const std::vector<void*>&)>;
// Checks `arrays` against `model`'s inputs (count, dtype, byte order), allocates the outputs and
// calls `exec` with the GIL released. Returns the outputs in output order.
py::list run_arrays(const Model& model, const py::sequence& arrays, const RunFn& exec);

// One call on the lean path of a one-input, one-output model: `x` a native-endian, aligned,
// C-contiguous float32 array, the plan from a per-thread cache, the output a fresh numpy array.
struct LeanCall {
    std::shared_ptr<const Plan> plan;  // kept alive for the run
    const void* in = nullptr;
    void* out_data = nullptr;
    py::object out;
    int64_t rows = 0;  // dimension 0 of x (0 for a scalar)
};
// Fills `call`'s plan, input and rows (GIL held) and returns true when `x` qualifies; false sends
// the caller to the checked path (run_arrays), which converts or explains. Throws for a shape the
// model rejects.
bool prepare_lean_call(const Model& model, py::handle x, LeanCall& call);
// Allocates `call`'s output array (GIL held), once the call is sure to run.
void allocate_lean_output(LeanCall& call);

// The pyengine dtype of a numpy dtype; throws InvalidArgument (-> ValueError) if unsupported.
DType dtype_of(const py::dtype& dt, const std::string& what);
// The numpy dtype of a pyengine dtype.
py::dtype numpy_dtype(DType t);

}  // namespace pyengine::python
