// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "graph/tensor.h"

namespace pyengine::python {

namespace py = pybind11;

void register_errors(py::module_& m);
void register_runtime(py::module_& m);
void register_format(py::module_& m);
void register_model(py::module_& m);
void register_batching(py::module_& m);

// The pyengine dtype of a numpy dtype; throws InvalidArgument (-> ValueError) if unsupported.
DType dtype_of(const py::dtype& dt, const std::string& what);

}  // namespace pyengine::python
