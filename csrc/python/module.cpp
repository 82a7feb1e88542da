// SPDX-License-Identifier: Apache-2.0
// pyengine._core: creates the module and calls one register_<area>() per area.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "python/bindings.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyengine native core (C++)";
    // pybind11 fills its numpy API table on first use, releasing and retaking the GIL inside a
    // noexcept destructor. A daemon thread doing that first call while the interpreter exits is
    // ended by CPython mid-destructor, and the process aborts. Filled here, at import, with the
    // GIL held by the one importing thread, the slow path never runs again.
    pybind11::detail::npy_api::get();
    pyengine::python::register_errors(m);
    pyengine::python::register_runtime(m);
    pyengine::python::register_format(m);
    pyengine::python::register_model(m);
    pyengine::python::register_batching(m);
    pyengine::python::register_device(m);
}
