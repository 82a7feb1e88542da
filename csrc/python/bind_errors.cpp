// SPDX-License-Identifier: Apache-2.0
// C++ exceptions -> Python exceptions, messages intact.
#include "batching/batcher.h"
#include "common.h"
#include "python/bindings.h"

namespace pyengine::python {

void register_errors(py::module_& m) {
    static py::exception<ModelFormatError> model_format_error(m, "ModelFormatError", PyExc_ValueError);
    static py::exception<QueueFull> queue_full_error(m, "QueueFullError", PyExc_RuntimeError);
    static py::exception<BatcherClosed> batcher_closed_error(m, "BatcherClosedError", PyExc_RuntimeError);
    static py::exception<DeviceUnavailable> device_unavailable(m, "DeviceUnavailableError", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ModelFormatError& e) {
            py::set_error(model_format_error, e.what());
        } catch (const QueueFull& e) {
            py::set_error(queue_full_error, e.what());
        } catch (const BatcherClosed& e) {
            py::set_error(batcher_closed_error, e.what());
        } catch (const RequestTimeout& e) {
            py::set_error(PyExc_TimeoutError, e.what());
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
