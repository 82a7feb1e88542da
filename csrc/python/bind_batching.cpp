// SPDX-License-Identifier: Apache-2.0
// The dynamic batcher from Python. Native models: the workers call Model::run with no GIL anywhere.
// Framework models: one Python callback per batch, the only place C++ calls into Python (the GIL is
// taken just for it). Results are numpy views into the batch's output memory (no copies).
#include <algorithm>
#include <chrono>
#include <memory>
#include <thread>

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include "batching/batcher.h"
#include "batching/native_runner.h"
#include "batching/notifier.h"
#include "common.h"
#include "graph/model.h"
#include "python/bindings.h"

namespace pyengine::python {

namespace {

constexpr int kNumpyFloat32 = 11;  // NPY_FLOAT

// Keeps a Python object alive from C++; drops it with the GIL, from whichever thread is last.
std::shared_ptr<const void> py_owner(py::object obj) {
    auto* p = new py::object(std::move(obj));
    return std::shared_ptr<const void>(p->ptr(), [p](const void*) {
        if (interpreter_exiting()) return;  // the process is ending: leak rather than be ended here
        py::gil_scoped_acquire gil;
        delete p;
    });
}

// A capsule that holds a reference to `owner` for as long as a numpy array uses it as its base.
py::capsule owner_capsule(std::shared_ptr<const void> owner) {
    auto* h = new std::shared_ptr<const void>(std::move(owner));
    return py::capsule(h, [](void* q) { delete static_cast<std::shared_ptr<const void>*>(q); });
}

py::object to_array(const TensorOut& t) {
    // A batch of one request through the callback: the callback's own array, as it returned it.
    if (t.user != nullptr) return py::reinterpret_borrow<py::object>(static_cast<PyObject*>(const_cast<void*>(t.user)));
    std::vector<py::ssize_t> shape(t.shape.begin(), t.shape.end());
    py::array a(py::dtype(t.dtype), shape, t.data, owner_capsule(t.owner));
    if (!t.writable) py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return a;
}

py::list results(const Request& r) {
    if (!r.done()) throw InvalidArgument("the request is not answered yet");
    if (r.error()) std::rethrow_exception(r.error());
    py::list out;
    for (const TensorOut& t : r.outputs()) out.append(to_array(t));
    return out;
}

// The Python callback as a batch function: arrays in (views of the batch), arrays out.
BatchFn callback_batch_fn(py::function fn) {
    auto f = std::shared_ptr<py::function>(new py::function(std::move(fn)), [](py::function* p) {
        if (interpreter_exiting()) return;  // the process is ending: leak rather than be ended here
        py::gil_scoped_acquire gil;
        delete p;
    });
    return [f](const std::vector<TensorIn>& inputs, int64_t rows) {
        // A worker that took the GIL now would be ended inside the batcher's loop.
        if (interpreter_exiting()) throw BatcherClosed("the interpreter is exiting");
        py::gil_scoped_acquire gil;
        py::list arrays;
        for (const TensorIn& t : inputs) {
            if (t.user != nullptr) {  // a batch of one request: the caller's own array
                arrays.append(py::reinterpret_borrow<py::object>(static_cast<PyObject*>(const_cast<void*>(t.user))));
                continue;
            }
            std::vector<py::ssize_t> shape(t.shape.begin(), t.shape.end());
            py::array a(py::dtype(t.dtype), shape, t.data, owner_capsule(t.owner));
            py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
            arrays.append(std::move(a));
        }
        py::object res = (*f)(arrays);
        if (!py::isinstance<py::sequence>(res) || py::isinstance<py::str>(res)) {
            throw InvalidArgument(str("the batch callback must return a list of arrays, got ", std::string(py::str(py::type::of(res)))));
        }
        std::vector<TensorOut> outs;
        for (py::handle h : res.cast<py::sequence>()) {
            py::array a = py::array::ensure(h, py::array::c_style);
            if (!a) throw InvalidArgument(str("the batch callback returned a ", std::string(py::str(py::type::of(h))), ", not an array"));
            if (a.ndim() < 1 || a.shape(0) != rows) {
                std::vector<int64_t> s(a.shape(), a.shape() + a.ndim());
                throw InvalidArgument(str("the batch callback returned an output of shape ", shape_str(s), " for a batch of ", rows,
                                          " rows; outputs need the batch as their first dimension"));
            }
            TensorOut o;
            o.data = const_cast<void*>(a.data());
            o.dtype = a.dtype().num();
            o.itemsize = static_cast<size_t>(a.itemsize());
            o.shape.assign(a.shape(), a.shape() + a.ndim());
            o.writable = a.writeable();
            o.owner = std::const_pointer_cast<void>(py_owner(a));
            o.user = a.ptr();  // alive as long as `owner`
            outs.push_back(std::move(o));
        }
        return outs;
    };
}

class PyBatcher {
public:
    PyBatcher(std::shared_ptr<const Model> model, py::object fn, BatcherConfig config, std::vector<TensorSpec> specs)
        : model_(std::move(model)), specs_(std::move(specs)) {
        BatchFn batch_fn;
        if (model_) {
            BatchFn inner = native_batch_fn(model_);
            batch_fn = [inner](const std::vector<TensorIn>& in, int64_t rows) {
                std::vector<TensorOut> outs = inner(in, rows);
                for (TensorOut& o : outs) o.dtype = kNumpyFloat32;  // the tag results() turns into a numpy dtype
                return outs;
            };
        } else {
            if (!PyCallable_Check(fn.ptr())) throw InvalidArgument("Batcher needs a native model or a callable");
            batch_fn = callback_batch_fn(fn.cast<py::function>());
        }
        GilRelease release;
        batcher_ = std::make_shared<Batcher>(std::move(config), std::move(batch_fn));
    }

    ~PyBatcher() {
        if (batcher_ && batcher_->in_batch_fn()) {
            // Collected by Python inside its own callback (a worker thread): a worker cannot join
            // itself, so another thread closes the batcher once this batch is done.
            std::thread([b = std::move(batcher_)]() mutable { b.reset(); }).detach();
            return;
        }
        // Workers of the callback path need the GIL to finish their batch.
        GilRelease release;
        batcher_.reset();
    }

    // Checks and wraps the caller's arrays (GIL held). `copy_ok`: a non-contiguous array may be
    // copied into `keep`; otherwise it is an error (async callers pass contiguous arrays they keep).
    std::vector<TensorIn> convert(const py::sequence& arrays, bool copy_ok, std::vector<py::array>& keep) const {
        std::vector<TensorIn> ins;
        const size_t n = static_cast<size_t>(py::len(arrays));
        if (!model_ && !specs_.empty() && n != specs_.size()) {
            throw InvalidArgument(str("the model takes ", specs_.size(), " inputs, got ", n));
        }
        if (model_ && n != model_->inputs().size()) {
            throw InvalidArgument(str("the model takes ", model_->inputs().size(), " inputs, got ", n));
        }
        std::vector<Shape> shapes;
        for (size_t i = 0; i < n; ++i) {
            auto what = [&] {  // only for an error message: not built on the hot path
                return model_ ? str("input '", model_->inputs()[i].name, "'")
                              : i < specs_.size() ? str("input '", specs_[i].name, "'") : str("input ", i);
            };
            py::object obj = arrays[i];
            if (!py::isinstance<py::array>(obj)) {
                throw InvalidArgument(str(what(), " must be a numpy array, got ", std::string(py::str(py::type::of(obj)))));
            }
            py::array arr = obj.cast<py::array>();
            if (!(arr.flags() & py::array::c_style)) {
                if (!copy_ok) throw InvalidArgument(str(what(), " is not C-contiguous; pass np.ascontiguousarray(x)"));
                arr = py::array::ensure(arr, py::array::c_style);
            }
            TensorIn t;
            t.data = arr.data();
            t.shape.assign(arr.shape(), arr.shape() + arr.ndim());
            t.itemsize = static_cast<size_t>(arr.itemsize());
            if (model_) {
                const py::dtype dt = arr.dtype();
                if (dt.byteorder() == '>') throw InvalidArgument(str(what(), " is big-endian; pass a native-endian array (arr.astype('=f4'))"));
                if (dt.kind() != 'f' || dt.itemsize() != 4) {
                    throw InvalidArgument(str(what(), " has dtype ", std::string(py::str(dt)), ", expected float32"));
                }
                t.dtype = kNativeFloat32;
                shapes.push_back(t.shape);
            } else {
                if (i < specs_.size()) check_shape(specs_[i], t.shape);
                t.dtype = arr.dtype().num();
                t.user = arr.ptr();  // alive in `keep` (sync) or the caller's pending entry (async)
            }
            keep.push_back(std::move(arr));
            ins.push_back(std::move(t));
        }
        if (model_) model_->plan(shapes);  // a wrong shape is this caller's ValueError, before queueing
        return ins;
    }

    py::list run(const py::sequence& arrays, int64_t timeout_us) {
        // Refuse while holding the GIL: a thread that gives it up near interpreter exit may not get
        // it back, and a closed batcher has nothing to wait for.
        if (live()->closed()) throw BatcherClosed("the batcher is closed; make a new one with model.batched()");
        std::vector<py::array> keep;
        std::vector<TensorIn> ins = convert(arrays, true, keep);
        std::shared_ptr<Request> r;
        // The caller after this one in the batch wakes once this one holds the GIL again: a
        // batch's callers then line up for the GIL one by one, not all at once (fewer futile wakes).
        if (model_) {
            {
                GilRelease release;
                r = live()->submit(std::move(ins), {}, timeout_us);
                batcher_->wait(*r, /*pass_turn=*/false);
            }
            Batcher::pass_turn(*r);
        } else {
            // Keep the GIL through submit: a request run at once on this thread calls the Python
            // callback without giving the GIL up and taking it back. (No batcher lock is ever
            // held while waiting for the GIL, so holding it here cannot deadlock.)
            r = live()->submit(std::move(ins), {}, timeout_us, /*park=*/false);
            if (!r->done()) {  // queued: wait for a worker without the GIL
                {
                    GilRelease release;
                    batcher_->wait(*r, /*pass_turn=*/false);
                }
                Batcher::pass_turn(*r);
            }
        }
        return results(*r);
    }

    // One array in, one out, for a native model with one input and one output: with
    // max_queue_delay_us == 0 and nobody waiting, the caller runs the model itself on the lean
    // path Model.run1 takes (no request object, no copies); otherwise it queues through run().
    py::object run1(py::handle x) {
        LeanCall call;
        if (model_ && prepare_lean_call(*model_, x, call)) {
            Batcher& b = *live();
            if (b.begin_inline(call.rows)) {
                const auto started = std::chrono::steady_clock::now();
                bool ran = false;
                try {
                    allocate_lean_output(call);
                    GilRelease release;
                    model_->run(*call.plan, &call.in, 1, &call.out_data, 1);
                    ran = true;
                    b.end_inline(call.rows, started, true);
                } catch (...) {
                    if (!ran) b.end_inline(call.rows, started, false);
                    throw;
                }
                return call.out;
            }
        }
        py::list outs = run(py::make_tuple(x), -1);
        return outs[0];
    }

    std::shared_ptr<Request> submit(const py::sequence& arrays, std::shared_ptr<Notifier> notifier, int64_t timeout_us) {
        if (!notifier) throw InvalidArgument("submit needs a BatchNotifier");
        std::vector<py::array> keep;
        std::vector<TensorIn> ins = convert(arrays, false, keep);
        GilRelease release;
        return live()->submit(std::move(ins), [notifier](Request& r) { notifier->push(r.shared_from_this()); }, timeout_us);
    }

    bool cancel(Request& r, bool timeout) {
        std::exception_ptr why = timeout ? std::make_exception_ptr(RequestTimeout("the request timed out in the batch queue"))
                                         : std::make_exception_ptr(BatcherClosed("the request was cancelled"));
        GilRelease release;
        return live()->cancel(r, why);
    }

    void close(bool drain) {
        if (!batcher_) return;
        GilRelease release;
        batcher_->close(drain);
    }

    void abandon() {
        if (!batcher_) return;
        GilRelease release;
        batcher_->abandon();
    }

    bool closed() const { return !batcher_ || batcher_->closed(); }
    Batcher& batcher() const { return *live(); }

private:
    // Framework models: rank and fixed dimensions (after the rows) as the model declares them.
    static void check_shape(const TensorSpec& spec, const Shape& got) {
        bool ok = got.size() == spec.shape.size();
        for (size_t d = 1; ok && d < got.size(); ++d) ok = spec.shape[d] < 0 || spec.shape[d] == got[d];
        if (!ok) {
            throw InvalidArgument(str("input '", spec.name, "' has shape ", shape_str(got), ", expected ", shape_str(spec.shape),
                                      " (-1: any size; dimension 0 is the rows of the request)"));
        }
    }

    const std::shared_ptr<Batcher>& live() const {
        if (!batcher_) throw BatcherClosed("the batcher is closed; make a new one with model.batched()");
        return batcher_;
    }

    std::shared_ptr<const Model> model_;
    std::vector<TensorSpec> specs_;  // callback mode: the model's inputs, checked per request
    std::shared_ptr<Batcher> batcher_;
};

py::dict summary(std::vector<double> v) {
    py::dict d;
    d["count"] = v.size();
    if (v.empty()) return d;
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    auto pct = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))]; };
    d["mean"] = sum / static_cast<double>(v.size());
    d["p50"] = pct(0.50);
    d["p90"] = pct(0.90);
    d["p99"] = pct(0.99);
    d["max"] = v.back();
    return d;
}

py::dict stats_dict(const BatcherStats& s) {
    py::dict d;
    d["requests"] = s.requests;
    d["completed"] = s.completed;
    d["failed"] = s.failed;
    d["queue_full"] = s.queue_full;
    d["timed_out"] = s.timed_out;
    d["closed"] = s.closed;
    d["cancelled"] = s.cancelled;
    d["batches"] = s.batches;
    d["rows"] = s.rows;
    d["isolation_runs"] = s.isolation_runs;
    d["mean_batch_size"] = s.batches ? static_cast<double>(s.rows) / static_cast<double>(s.batches) : 0.0;
    py::dict hist;
    for (size_t i = 0; i < s.batch_size_histogram.size(); ++i) {
        if (s.batch_size_histogram[i]) hist[py::int_(i)] = s.batch_size_histogram[i];
    }
    d["batch_size_histogram"] = hist;
    d["queue_time_us"] = summary(s.queue_us);
    d["latency_us"] = summary(s.latency_us);
    return d;
}

}  // namespace

void register_batching(py::module_& m) {
    py::class_<Notifier, std::shared_ptr<Notifier>>(m, "BatchNotifier",
                                                     "Finished async requests, signalled on an eventfd for an event loop.")
        .def(py::init<>())
        .def_property_readonly("fd", &Notifier::fd)
        .def("drain", &Notifier::drain, "Take every finished request; clears the signal.");

    py::class_<Request, std::shared_ptr<Request>>(m, "BatchRequest", "A request queued in a Batcher.")
        .def_property_readonly("id", &Request::id)
        .def_property_readonly("rows", &Request::rows)
        .def_property_readonly("done", &Request::done)
        .def("result", &results, "Output arrays (views of the batch output), or raises the request's error.");

    py::class_<PyBatcher>(m, "Batcher", "Dynamic batcher over a native model or a Python batch callback.")
        .def(py::init([](py::object target, int64_t max_batch_size, std::vector<int64_t> preferred, int64_t delay_us,
                         int64_t queue_size, int64_t timeout_us, int workers,
                         std::vector<std::pair<std::string, std::vector<int64_t>>> input_shapes) {
                 BatcherConfig c;
                 c.max_batch_size = max_batch_size;
                 c.preferred_batch_sizes = std::move(preferred);
                 c.max_queue_delay_us = delay_us;
                 c.max_queue_size = queue_size;
                 c.timeout_us = timeout_us;
                 c.workers = workers;
                 std::shared_ptr<const Model> model;
                 if (py::isinstance<Model>(target)) model = target.cast<std::shared_ptr<Model>>();
                 std::vector<TensorSpec> specs;
                 for (auto& [name, shape] : input_shapes) {
                     TensorSpec sp;
                     sp.name = name;
                     sp.shape = shape;
                     specs.push_back(std::move(sp));
                 }
                 return std::make_unique<PyBatcher>(model, model ? py::none() : target, std::move(c), std::move(specs));
             }),
             py::arg("target"), py::arg("max_batch_size") = 32, py::arg("preferred_batch_sizes") = std::vector<int64_t>{},
             py::arg("max_queue_delay_us") = 1000, py::arg("max_queue_size") = 1024, py::arg("timeout_us") = 0,
             py::arg("workers") = 1, py::arg("input_shapes") = std::vector<std::pair<std::string, std::vector<int64_t>>>{},
             "target: a _core.Model (runs natively, no GIL) or a callable taking a list of arrays and returning one. "
             "input_shapes: [(name, shape)] a callable's requests are checked against (-1: any size).")
        .def("run", &PyBatcher::run, py::arg("arrays"), py::arg("timeout_us") = -1,
             "Queue arrays (input order) and wait for this request's rows of each output.")
        .def("run1", &PyBatcher::run1, py::arg("x"),
             "run() for one array in and one out; with max_queue_delay_us=0 and nobody waiting, the model runs "
             "on the caller's thread (the lean path of Model.run1).")
        .def("submit", &PyBatcher::submit, py::arg("arrays"), py::arg("notifier"), py::arg("timeout_us") = -1,
             "Queue C-contiguous arrays the caller keeps alive; the request is pushed to `notifier` when done.")
        .def("cancel", &PyBatcher::cancel, py::arg("request"), py::arg("timeout") = false,
             "Fail a still-queued request (TimeoutError if timeout, else cancelled); False if it already runs.")
        .def("close", &PyBatcher::close, py::arg("drain") = true,
             "Stop taking requests; drain=True runs the queued ones, False fails them with BatcherClosedError.")
        .def("abandon", &PyBatcher::abandon,
             "At process exit: stop the workers, answer nobody (waiting daemon threads stay parked).")
        .def_property_readonly("closed", &PyBatcher::closed)
        .def("stats", [](const PyBatcher& b) { return stats_dict(b.batcher().stats()); })
        .def("reset_stats", [](const PyBatcher& b) { b.batcher().reset_stats(); });
}

}  // namespace pyengine::python
