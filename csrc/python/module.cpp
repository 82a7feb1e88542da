// SPDX-License-Identifier: Apache-2.0
// pyengine._core: creates the module and calls one register_<area>() per area.
#include <pybind11/pybind11.h>

#include "python/bindings.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyengine native core (C++)";
    pyengine::python::register_errors(m);
    pyengine::python::register_runtime(m);
    pyengine::python::register_format(m);
    pyengine::python::register_model(m);
    pyengine::python::register_batching(m);
    pyengine::python::register_device(m);
}
