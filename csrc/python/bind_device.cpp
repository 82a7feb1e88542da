// SPDX-License-Identifier: Apache-2.0
// GPUs: what the CUDA backend sees, and models bound to a device (GIL released while running).
#include <memory>

#include <pybind11/stl.h>

#include "common.h"
#include "graph/device_runner.h"
#include "device/device.h"
#include "python/bindings.h"

namespace pyengine::python {

namespace {

py::dict device_dict(const DeviceInfo& d) {
    py::dict out;
    out["index"] = d.index;
    out["name"] = d.name;
    out["memory_bytes"] = d.memory_bytes;
    out["compute_capability"] = str(d.cc_major, ".", d.cc_minor);
    out["pci_bus_id"] = d.pci_bus_id;
    out["integrated"] = d.integrated;
    return out;
}

}  // namespace

void register_device(py::module_& m) {
    m.def("cuda_status", []() {
        const CudaRuntime& rt = cuda_runtime();
        py::dict d;
        d["built"] = rt.built;
        d["library"] = rt.library;
        d["loaded"] = rt.backend != nullptr;
        std::string error = rt.error, version;
        if (rt.backend != nullptr) {
            GilRelease release;
            error = rt.backend->status();
            version = rt.backend->version();
        }
        d["error"] = error;
        d["version"] = version;
        return d;
    }, "Whether this build has CUDA support, whether its backend loaded, and why GPUs are unusable (error).");
    m.def("cuda_devices", []() {
        py::list out;
        const CudaRuntime& rt = cuda_runtime();
        if (rt.backend == nullptr) return out;
        std::vector<DeviceInfo> devices;
        {
            GilRelease release;
            devices = rt.backend->devices();
        }
        for (const auto& d : devices) out.append(device_dict(d));
        return out;
    }, "The CUDA GPUs seen: [{index, name, memory_bytes, compute_capability, pci_bus_id, integrated}].");

    m.def("device_steps", [](const Model& model, const std::vector<Shape>& input_shapes) {
        auto plan = model.plan(input_shapes);
        auto prog = model.device_program(*plan);
        py::list out;
        for (const DeviceStep& s : prog->steps) out.append(py::make_tuple(s.name, device_step_kind_name(s.kind)));
        return out;
    }, py::arg("model"), py::arg("input_shapes"),
       "How a device runs `model` for these input shapes: [(node, step kind)]; kind 'Host' is the "
       "CPU fallback for an op without a device kernel. Needs no GPU.");
    py::class_<DeviceRunner, std::shared_ptr<DeviceRunner>>(m, "DeviceModel",
                                                           "A Model whose weights live on a CUDA GPU.")
        .def(py::init([](std::shared_ptr<Model> model, int index, bool emulate) {
                 GilRelease release;
                 return std::make_shared<DeviceRunner>(std::move(model), index, emulate);
             }),
             py::arg("model"), py::arg("index"), py::arg("emulate") = false,
             "Bind `model` to CUDA GPU `index`; emulate=True runs the device executor on the host "
             "(the CUDA kernels' element bodies and a reference SGEMM) to check the lowering without a GPU.")
        .def_property_readonly("device", [](const DeviceRunner& r) { return device_dict(r.device()); })
        .def_property_readonly("device_bytes", &DeviceRunner::device_bytes,
                               "Device memory held: weights plus pooled workspaces.")
        .def("run", [](const DeviceRunner& r, const py::sequence& arrays) {
            return run_arrays(r.model(), arrays, [&r](const std::shared_ptr<const Plan>& plan, const std::vector<const void*>& in,
                                                      const std::vector<void*>& out) { r.run(plan, in, out); });
        }, py::arg("inputs"), "Run on arrays in input order on the GPU; returns arrays in output order.");
}

}  // namespace pyengine::python
