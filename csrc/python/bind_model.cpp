// SPDX-License-Identifier: Apache-2.0
// The native Model: load, describe, run (GIL released while loading and running).
#include <algorithm>
#include <chrono>
#include <memory>

#include <pybind11/stl.h>

#include "common.h"
#include "graph/model.h"
#include "python/bindings.h"

namespace pyengine::python {

namespace {

py::list specs(const std::vector<TensorSpec>& v) {
    py::list out;
    for (const auto& s : v) {
        py::tuple shape(s.shape.size());
        for (size_t i = 0; i < s.shape.size(); ++i) shape[i] = s.shape[i];
        out.append(py::make_tuple(s.name, shape, dtype_name(s.dtype)));
    }
    return out;
}

}  // namespace

py::list run_arrays(const Model& model, const py::sequence& arrays, const RunFn& exec) {
    const auto& specs_in = model.inputs();
    if (static_cast<size_t>(py::len(arrays)) != specs_in.size()) {
        throw InvalidArgument(str("the model takes ", specs_in.size(), " inputs, got ", py::len(arrays)));
    }
    std::vector<py::array> keep;
    std::vector<Shape> shapes;
    std::vector<const void*> in_ptrs;
    for (size_t i = 0; i < specs_in.size(); ++i) {
        const std::string what = str("input '", specs_in[i].name, "'");
        py::object obj = arrays[i];
        if (!py::isinstance<py::array>(obj)) throw InvalidArgument(str(what, " must be a numpy array, got ", std::string(py::str(py::type::of(obj)))));
        py::array arr = obj.cast<py::array>();
        const py::dtype dt = arr.dtype();
        const DType want = specs_in[i].dtype;
        if (dt.byteorder() == '>') {
            throw InvalidArgument(str(what, " is big-endian; pass a native-endian array (arr.astype('=", dtype_name(want), "'))"));
        }
        if (!dt.is(numpy_dtype(want)) && !dt.equal(numpy_dtype(want))) {
            throw InvalidArgument(str(what, " has dtype ", std::string(py::str(arr.dtype())), ", expected ", dtype_name(want)));
        }
        arr = py::array::ensure(arr, py::array::c_style);  // copies only when not contiguous
        if (std::find(model.value_inputs().begin(), model.value_inputs().end(), static_cast<int>(i)) !=
            model.value_inputs().end()) {
            // A parameter decides the plan: planned and run from a private copy, so another thread
            // writing the caller's array in between cannot make them disagree.
            arr = py::array(arr.dtype(), std::vector<py::ssize_t>(arr.shape(), arr.shape() + arr.ndim()), arr.data());
        }
        Shape s;
        for (py::ssize_t d = 0; d < arr.ndim(); ++d) s.push_back(static_cast<int64_t>(arr.shape(d)));
        shapes.push_back(std::move(s));
        in_ptrs.push_back(arr.data());
        keep.push_back(std::move(arr));
    }
    std::shared_ptr<const Plan> plan = model.plan(shapes, in_ptrs.data());
    py::list outs;
    std::vector<void*> out_ptrs;
    for (size_t o = 0; o < plan->output_shapes.size(); ++o) {
        const Shape& s = plan->output_shapes[o];
        py::array a(numpy_dtype(model.outputs()[o].dtype), std::vector<py::ssize_t>(s.begin(), s.end()));
        out_ptrs.push_back(a.mutable_data());
        outs.append(a);
    }
    {
        GilRelease release;
        exec(plan, in_ptrs, out_ptrs);
    }
    return outs;
}

bool prepare_lean_call(const Model& model, py::handle x, LeanCall& call) {
    auto& api = py::detail::npy_api::get();
    if (model.inputs().size() != 1 || model.outputs().size() != 1 || !api.PyArray_Check_(x.ptr()) ||
        model.inputs()[0].dtype != DType::Float32 || model.outputs()[0].dtype != DType::Float32 ||
        !model.value_inputs().empty()) {
        return false;
    }
    auto* a = py::detail::array_proxy(x.ptr());
    auto* d = py::detail::array_descriptor_proxy(a->descr);
    constexpr int kFlags = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
    if (d->type_num != py::detail::npy_api::NPY_FLOAT_ || d->byteorder == '>' || (a->flags & kFlags) != kFlags ||
        a->nd > static_cast<int>(kMaxRank)) {
        return false;
    }
    struct Cache {
        uint64_t model = 0;
        Shape dims;
        std::shared_ptr<const Plan> plan;
    };
    thread_local Cache cache;
    const int nd = a->nd;
    bool hit = cache.model == model.id() && cache.dims.size() == static_cast<size_t>(nd);
    for (int i = 0; hit && i < nd; ++i) hit = cache.dims[static_cast<size_t>(i)] == a->dimensions[i];
    if (!hit) {
        Shape dims(a->dimensions, a->dimensions + nd);
        std::shared_ptr<const Plan> plan = model.plan({dims});
        cache = Cache{model.id(), std::move(dims), std::move(plan)};
    }
    call.plan = cache.plan;
    call.in = a->data;
    call.rows = nd > 0 ? static_cast<int64_t>(a->dimensions[0]) : 0;
    return true;
}

void allocate_lean_output(LeanCall& call) {
    auto& api = py::detail::npy_api::get();
    const Shape& os = call.plan->output_shapes[0];
    Py_intptr_t out_dims[kMaxRank];
    for (size_t i = 0; i < os.size(); ++i) out_dims[i] = static_cast<Py_intptr_t>(os[i]);
    call.out = py::reinterpret_steal<py::object>(api.PyArray_NewFromDescr_(
        api.PyArray_Type_, api.PyArray_DescrFromType_(py::detail::npy_api::NPY_FLOAT_), static_cast<int>(os.size()),
        out_dims, nullptr, nullptr, 0, nullptr));
    if (!call.out) throw py::error_already_set();
    call.out_data = py::detail::array_proxy(call.out.ptr())->data;
}

namespace {

// Runs `model` on arrays given in input order; returns arrays in output order.
py::list run(const Model& model, const py::sequence& arrays) {
    return run_arrays(model, arrays, [&model](const std::shared_ptr<const Plan>& plan, const std::vector<const void*>& in,
                                              const std::vector<void*>& out) { model.run(*plan, in, out); });
}

// Runs a one-input, one-output model on `x`: the lean path when `x` qualifies, else run().
py::object run1(const Model& model, py::handle x) {
    LeanCall call;
    if (prepare_lean_call(model, x, call)) {
        allocate_lean_output(call);
        {
            GilRelease release;
            model.run(*call.plan, &call.in, 1, &call.out_data, 1);
        }
        return call.out;
    }
    py::list outs = run(model, py::make_tuple(x));
    return outs[0];
}

py::list shapes_list(const std::vector<Shape>& shapes) {
    py::list out;
    for (const Shape& s : shapes) out.append(py::tuple(py::cast(s)));
    return out;
}

// Runs `model` `runs` times on arrays in input order, timing every node of every run.
py::dict profile(const Model& model, const py::sequence& arrays, int runs) {
    if (runs < 1) throw InvalidArgument(str("runs must be >= 1, got ", runs));
    std::vector<RunTrace> traces(static_cast<size_t>(runs));
    std::vector<int64_t> call_ns(static_cast<size_t>(runs) * 2);
    std::vector<NodeProfile> nodes;
    py::list outs = run_arrays(model, arrays, [&](const std::shared_ptr<const Plan>& plan,
                                                  const std::vector<const void*>& in, const std::vector<void*>& out) {
        nodes = model.profile_nodes(*plan);
        for (size_t r = 0; r < traces.size(); ++r) {
            call_ns[2 * r] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch()).count();
            model.run(*plan, in.data(), in.size(), out.data(), out.size(), &traces[r]);
            call_ns[2 * r + 1] = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch()).count();
        }
    });
    py::list node_list;
    for (const NodeProfile& n : nodes) {
        py::dict d;
        d["name"] = n.name;
        d["op"] = n.op;
        d["input_shapes"] = shapes_list(n.inputs);
        d["output_shapes"] = shapes_list(n.outputs);
        d["layout"] = n.run.layout;
        d["kernel"] = n.run.kernel;
        node_list.append(d);
    }
    py::list start, end, calls;
    for (size_t r = 0; r < traces.size(); ++r) {
        start.append(py::cast(traces[r].start_ns));
        end.append(py::cast(traces[r].end_ns));
        calls.append(py::make_tuple(call_ns[2 * r], call_ns[2 * r + 1]));
    }
    py::dict result;
    result["nodes"] = node_list;
    result["start_ns"] = start;
    result["end_ns"] = end;
    result["calls_ns"] = calls;
    result["outputs"] = outs;
    return result;
}

}  // namespace

void register_model(py::module_& m) {
    py::class_<Model, std::shared_ptr<Model>>(m, "Model", "A .pyem model mapped from disk.")
        .def(py::init([](const std::string& path) {
                 GilRelease release;
                 return std::make_shared<Model>(path);
             }),
             py::arg("path"))
        .def_property_readonly("path", &Model::path)
        .def_property_readonly("inputs", [](const Model& mdl) { return specs(mdl.inputs()); },
                               "[(name, shape, dtype)] with -1 for free dimensions")
        .def_property_readonly("outputs", [](const Model& mdl) { return specs(mdl.outputs()); })
        .def_property_readonly("weight_bytes", &Model::weight_bytes)
        .def_property_readonly("node_count", &Model::node_count)
        .def("run", &run, py::arg("inputs"), "Run on arrays in input order; returns arrays in output order.")
        .def(
            "layout",
            [](const Model& mdl, const std::vector<Shape>& shapes) {
                const Model::LayoutReport r = mdl.layout_report(*mdl.plan(shapes));
                py::dict d;
                d["block"] = r.block;
                d["blocked"] = r.blocked;
                d["fused"] = r.fused;
                d["reorders"] = r.reorders;
                d["weights_mapped"] = r.weights_mapped;
                d["weights_mapped_bytes"] = r.weights_mapped_bytes;
                d["weights_repacked_bytes"] = r.weights_repacked_bytes;
                return d;
            },
            py::arg("input_shapes"),
            "The layout plan for these input shapes: {'block': channels per block (0: plain NCHW), "
            "'blocked': nodes run blocked, 'fused': 'conv + add [+ act]' chains run as one step, "
            "'reorders': 'value to plain|blocked' conversions, 'weights_mapped': nodes whose blocked "
            "weights are read in place from the file, 'weights_mapped_bytes' and "
            "'weights_repacked_bytes': blocked weight bytes read in place and repacked at load}.")
        .def("run1", &run1, py::arg("x"),
             "Run a one-input, one-output model on one array; returns the output array.")
        .def("profile", &profile, py::arg("inputs"), py::arg("runs"),
             "Run `runs` times on arrays in input order, timing each node: {'nodes': [{name, op, "
             "input_shapes, output_shapes, layout, kernel}] in execution order, 'start_ns' and "
             "'end_ns': per run, per node (steady clock), 'calls_ns': per run (start, end), "
             "'outputs': the last run's outputs}.");
}

}  // namespace pyengine::python
