// SPDX-License-Identifier: Apache-2.0
// C++ exceptions -> Python exceptions, messages intact.
#include "common.h"
#include "python/bindings.h"

namespace pyengine::python {

void register_errors(py::module_& m) {
    static py::exception<ModelFormatError> model_format_error(m, "ModelFormatError", PyExc_ValueError);
    static py::exception<DeviceUnavailable> device_unavailable(m, "DeviceUnavailableError", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ModelFormatError& e) {
            py::set_error(model_format_error, e.what());
        } catch (const DeviceUnavailable& e) {
            py::set_error(device_unavailable, e.what());
        } catch (const InvalidArgument& e) {
            py::set_error(PyExc_ValueError, e.what());
        } catch (const SystemError& e) {
            // OSError(errno, message) becomes FileNotFoundError, PermissionError, ... by errno.
            py::object err = py::reinterpret_steal<py::object>(Py_BuildValue("(is)", e.code(), e.what()));
            PyErr_SetObject(PyExc_OSError, err.ptr());
        }
    });
}

}  // namespace pyengine::python
