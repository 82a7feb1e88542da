// SPDX-License-Identifier: Apache-2.0
#include "graph/model.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "kernels/conv_nchwc.h"
#include "kernels/dispatch.h"
#include "platform/thread_pool.h"

namespace pyengine {

namespace {

constexpr size_t kMaxCachedPlans = 64;
// Elements a parameter value (a graph input or a node output read by value) may hold: they key
// the plan cache.
constexpr int64_t kMaxParamElements = 4096;

// Scratch memory of the calling thread, reused across calls and models.
class Arena {
public:
    void* get(size_t bytes) {
        if (bytes > capacity_) {
            std::free(data_);
            capacity_ = (bytes + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
            data_ = std::aligned_alloc(kArenaAlignment, capacity_);
            if (data_ == nullptr) {
                capacity_ = 0;
                throw std::bad_alloc();
            }
        }
        return data_;
    }
    ~Arena() { std::free(data_); }

private:
    void* data_ = nullptr;
    size_t capacity_ = 0;
};

thread_local Arena tls_arena;

// A small tensor's values for an error message: "[1, -2, 5]" (the first 16, then "...").
std::string values_str(const Tensor& t) {
    std::string out = "[";
    const int64_t n = t.numel();
    for (int64_t i = 0; i < std::min<int64_t>(n, 16); ++i) {
        if (i > 0) out += ", ";
        switch (t.dtype) {
            case DType::Int64: out += std::to_string(t.as<const int64_t>()[i]); break;
            case DType::Int32: out += std::to_string(t.as<const int32_t>()[i]); break;
            case DType::Float32: out += str(t.f32()[i]); break;
            case DType::Float64: out += str(t.as<const double>()[i]); break;
            default: out += "?"; break;
        }
    }
    return out + (n > 16 ? ", ...]" : "]");
}

}  // namespace

std::shared_ptr<const Plan> Model::plan(const std::vector<Shape>& input_shapes, const void* const* input_data) const {
    if (input_shapes.size() != inputs_.size()) {
        throw InvalidArgument(str("the model takes ", inputs_.size(), " inputs, got ", input_shapes.size()));
    }
    std::vector<int64_t> key;
    for (size_t i = 0; i < inputs_.size(); ++i) {
        const Shape& want = inputs_[i].shape;
        const Shape& got = input_shapes[i];
        bool ok = want.size() == got.size();
        for (size_t d = 0; ok && d < want.size(); ++d) ok = got[d] >= 0 && (want[d] < 0 || want[d] == got[d]);
        if (!ok) {
            throw InvalidArgument(str("input '", inputs_[i].name, "' has shape ", shape_str(got),
                                      ", expected ", shape_str(want), " (-1: any size)"));
        }
        key.push_back(static_cast<int64_t>(got.size()));
        key.insert(key.end(), got.begin(), got.end());
    }
    // Parameter inputs: their bytes join the key (the shapes above fix how many there are), so
    // another value gets another plan.
    for (int i : value_inputs_) {
        const TensorSpec& spec = inputs_[static_cast<size_t>(i)];
        if (input_data == nullptr || input_data[i] == nullptr) {
            throw InvalidArgument(str("input '", spec.name, "' sets output shapes by its value; planning needs its data"));
        }
        const int64_t n = shape_numel(input_shapes[static_cast<size_t>(i)]);
        if (n > kMaxParamElements) {
            throw InvalidArgument(str("input '", spec.name, "' sets output shapes by its value and holds at most ",
                                      kMaxParamElements, " elements; got shape ", shape_str(input_shapes[static_cast<size_t>(i)])));
        }
        const size_t bytes = static_cast<size_t>(n) * dtype_size(spec.dtype);
        const size_t at = key.size();
        key.resize(at + (bytes + 7) / 8, 0);
        std::memcpy(key.data() + at, input_data[i], bytes);
    }
    {
        std::lock_guard<std::mutex> lock(plan_mutex_);
        auto it = plans_.find(key);
        if (it != plans_.end()) return it->second;
    }
    std::shared_ptr<const Plan> p = build_plan(input_shapes, input_data);
    std::lock_guard<std::mutex> lock(plan_mutex_);
    if (plans_.size() >= kMaxCachedPlans) plans_.clear();  // many distinct shapes: start over
    plans_.emplace(key, p);
    return p;
}

std::shared_ptr<Plan> Model::build_plan(const std::vector<Shape>& input_shapes, const void* const* input_data) const {
    auto p = std::make_shared<Plan>();
    const size_t nv = values_.size();
    p->shapes.assign(nv, Shape{});
    p->arena_offset.assign(nv, -1);
    p->storage.resize(nv);
    for (size_t v = 0; v < nv; ++v) {
        p->storage[v] = static_cast<int>(v);
        if (values_[v].kind == Value::Constant) p->shapes[v] = values_[v].constant.shape;
    }
    for (size_t i = 0; i < input_values_.size(); ++i) p->shapes[static_cast<size_t>(input_values_[i])] = input_shapes[i];

    std::vector<char> is_output(nv, 0);
    for (int o : output_values_) is_output[static_cast<size_t>(o)] = 1;

    // Live arena blocks sorted by offset: {offset, size, value}.
    struct Block { size_t offset, size; int value; };
    std::vector<Block> live;
    std::vector<int> root_last_use(last_use_);
    auto allocate = [&](int v, size_t bytes) {
        bytes = (bytes + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
        size_t at = 0;
        auto it = live.begin();
        for (; it != live.end(); ++it) {
            if (it->offset >= at + bytes) break;  // the gap before this block fits
            at = std::max(at, it->offset + it->size);
        }
        live.insert(it, Block{at, bytes, v});
        p->arena_offset[static_cast<size_t>(v)] = static_cast<int64_t>(at);
        p->arena_bytes = std::max(p->arena_bytes, at + bytes);
    };

    // The values the planner reads (find_plan_values): parameter inputs from the caller, tensors
    // from the file, and node outputs computed here, into `held`.
    std::vector<Tensor> known(nv);
    std::vector<std::vector<int64_t>> held(nv);
    for (size_t v = 0; v < nv; ++v) {
        if (plan_value_[v] && values_[v].kind == Value::Constant) known[v] = values_[v].constant;
    }
    for (int i : value_inputs_) {
        const int v = input_values_[static_cast<size_t>(i)];
        known[static_cast<size_t>(v)] =
            Tensor{const_cast<void*>(input_data[i]), values_[static_cast<size_t>(v)].dtype, input_shapes[static_cast<size_t>(i)]};
    }

    for (size_t pos = 0; pos < order_.size(); ++pos) {
        const int n = order_[pos];
        const Node& node = nodes_[static_cast<size_t>(n)];
        std::vector<Shape> in_shapes;
        std::vector<const Tensor*> values(node.inputs.size(), nullptr);
        for (size_t k = 0; k < node.inputs.size(); ++k) {
            const int i = node.inputs[k];
            in_shapes.push_back(p->shapes[static_cast<size_t>(i)]);
            if (plan_value_[static_cast<size_t>(i)]) values[k] = &known[static_cast<size_t>(i)];
        }
        std::vector<Shape> out_shapes;
        try {
            out_shapes = node.op->infer_values(in_shapes, values);
            if (plan_node_[static_cast<size_t>(n)]) {
                // Computes a parameter another node reads: run it now, on the known inputs.
                std::vector<Tensor*> outs;
                for (size_t k = 0; k < node.outputs.size(); ++k) {
                    const size_t v = static_cast<size_t>(node.outputs[k]);
                    const int64_t numel = shape_numel(out_shapes[k]);
                    if (numel > kMaxParamElements) {
                        shape_error(str("output '", values_[v].name, "' sets shapes by its value and may hold at most ",
                                        kMaxParamElements, " elements; it has shape ", shape_str(out_shapes[k])));
                    }
                    held[v].assign(static_cast<size_t>(std::max<int64_t>(numel, 1)), 0);
                    known[v] = Tensor{held[v].data(), values_[v].dtype, out_shapes[k]};
                    outs.push_back(&known[v]);
                }
                // Inputs it reads only the shape of (Shape) carry their shape and no data.
                std::vector<Tensor> shape_only(node.inputs.size());
                std::vector<const Tensor*> ins;
                for (size_t k = 0; k < node.inputs.size(); ++k) {
                    const size_t i = static_cast<size_t>(node.inputs[k]);
                    if (plan_value_[i]) {
                        ins.push_back(&known[i]);
                    } else {
                        shape_only[k] = Tensor{nullptr, values_[i].dtype, p->shapes[i]};
                        ins.push_back(&shape_only[k]);
                    }
                }
                node.op->run(ins, outs);
            }
        } catch (const InvalidArgument& e) {
            std::string params;  // the parameter values it was given: what the caller fixes
            for (size_t k = 0; k < node.inputs.size(); ++k) {
                if (values[k] == nullptr || !node.op->reads_value(k)) continue;
                params += str(params.empty() ? " (" : ", ", "input ", k, " '",
                              values_[static_cast<size_t>(node.inputs[k])].name, "' = ", values_str(*values[k]));
            }
            throw InvalidArgument(str("node '", node.name, "' (", node.op_name, "): ", e.what(), params,
                                      params.empty() ? "" : ")"));
        }
        for (size_t k = 0; k < node.outputs.size(); ++k) {
            const int v = node.outputs[k];
            int64_t numel = 1;
            for (int64_t d : out_shapes[k]) {
                if (d < 0 || mul_overflow(numel, d, &numel) || numel > (int64_t(1) << 40)) {
                    throw InvalidArgument(str("node '", node.name, "' (", node.op_name, ") output shape ",
                                              shape_str(out_shapes[k]), " is too large"));
                }
            }
            p->shapes[static_cast<size_t>(v)] = out_shapes[k];
            if (is_output[static_cast<size_t>(v)]) continue;  // written straight into the caller's array
            if (node.op->is_view() && k == 0) {
                // Share the input's memory; that memory now lives as long as this value is read.
                const int src = p->storage[static_cast<size_t>(node.inputs[0])];
                p->storage[static_cast<size_t>(v)] = src;
                root_last_use[static_cast<size_t>(src)] =
                    std::max(root_last_use[static_cast<size_t>(src)], last_use_[static_cast<size_t>(v)]);
                continue;
            }
            allocate(v, static_cast<size_t>(numel) * dtype_size(values_[static_cast<size_t>(v)].dtype));
        }
        // Free arena blocks whose last reader was this node.
        live.erase(std::remove_if(live.begin(), live.end(), [&](const Block& b) {
            return root_last_use[static_cast<size_t>(b.value)] <= static_cast<int>(pos);
        }), live.end());
    }
    for (int o : output_values_) p->output_shapes.push_back(p->shapes[static_cast<size_t>(o)]);
    build_host_schedule(p.get());
    return p;
}

void Model::infer_output_specs() {
    if (!value_inputs_.empty()) {
        // Shapes follow parameter values load does not have: report what the file declares
        // (-1: decided at predict), or an empty shape when it declares none.
        for (size_t o = 0; o < outputs_.size(); ++o) outputs_[o].shape = declared_output_shapes_[o];
        return;
    }
    // Probe with other sizes for the free dimensions; output dimensions that move are free.
    auto probe = [&](int64_t batch, int64_t other) -> std::vector<Shape> {
        std::vector<Shape> shapes;
        for (const auto& in : inputs_) {
            Shape s = in.shape;
            for (size_t d = 0; d < s.size(); ++d) if (s[d] < 0) s[d] = d == 0 ? batch : other;
            shapes.push_back(s);
        }
        return build_plan(shapes)->output_shapes;
    };
    const std::vector<Shape> base = probe(1, 64);
    for (size_t o = 0; o < outputs_.size(); ++o) outputs_[o].shape = base[o];
    for (auto sizes : {std::pair<int64_t, int64_t>{2, 64}, {1, 96}}) {
        std::vector<Shape> other;
        try {
            other = probe(sizes.first, sizes.second);
        } catch (const InvalidArgument&) {
            continue;  // the model only takes some sizes; those dimensions stay as probed
        }
        for (size_t o = 0; o < outputs_.size(); ++o) {
            Shape& s = outputs_[o].shape;
            if (other[o].size() != s.size()) continue;
            for (size_t d = 0; d < s.size(); ++d) if (other[o][d] != base[o][d]) s[d] = -1;
        }
    }
}

void Model::run(const Plan& p, const std::vector<const void*>& inputs,
                const std::vector<void*>& outputs) const {
    run(p, inputs.data(), inputs.size(), outputs.data(), outputs.size());
}

std::vector<NodeProfile> Model::profile_nodes(const Plan& p) const {
    // One entry per step of the layout pass's schedule: nodes, fused chains and reorders.
    std::vector<NodeProfile> out;
    const HostSchedule& h = p.host;
    const std::string blocked = str("NCHW", block_, "c");
    for (const PlanStep& st : h.steps) {
        if (st.kind == PlanStep::ToBlocked || st.kind == PlanStep::ToPlain) {
            const bool to_blocked = st.kind == PlanStep::ToBlocked;
            const Shape& s = h.shapes[static_cast<size_t>(st.ins[0])];
            NodeProfile np{str("reorder to ", to_blocked ? blocked : "NCHW"), "Reorder", {s}, {s}, {}};
            np.run = OpRunInfo{to_blocked ? str("NCHW -> ", blocked) : str(blocked, " -> NCHW"), "reorder"};
            out.push_back(std::move(np));
            continue;
        }
        const Node& node = nodes_[static_cast<size_t>(st.node)];
        NodeProfile np{node.name, node.op_name, {}, {}, {}};
        for (int o : st.outs) np.outputs.push_back(h.shapes[static_cast<size_t>(o)]);
        if (st.kind == PlanStep::Gather) {  // one or more channel-moving nodes as one copy
            std::string names, ops;
            for (int m : st.merged) {
                names += str(nodes_[static_cast<size_t>(m)].name, " + ");
                ops += str(nodes_[static_cast<size_t>(m)].op_name, "+");
            }
            np.name = names + node.name;
            np.op = ops + node.op_name;
            for (int i : st.ins) np.inputs.push_back(h.shapes[static_cast<size_t>(i)]);
            np.run = OpRunInfo{blocked, str(kernels().nchwc_block == block_ ? kernels().name : "generic", " nchwc",
                                            block_, " channel gather")};
            out.push_back(std::move(np));
            continue;
        }
        for (int i : node.inputs) np.inputs.push_back(p.shapes[static_cast<size_t>(i)]);
        np.run = node.op->run_info(np.inputs);
        if (st.kind == PlanStep::Fused) {
            const Fusion& f = fusion_[static_cast<size_t>(st.node)];
            np.name += str(" + ", nodes_[static_cast<size_t>(f.add)].name);
            np.op += "+Add";
            if (f.act >= 0) {
                np.name += str(" + ", nodes_[static_cast<size_t>(f.act)].name);
                np.op += str("+", nodes_[static_cast<size_t>(f.act)].op_name);
            }
        }
        if (!st.outs.empty() && h.block[static_cast<size_t>(st.outs[0])] != 0) np.run.layout = blocked;
        out.push_back(std::move(np));
    }
    return out;
}

namespace {
int64_t steady_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}
}  // namespace

void Model::run(const Plan& p, const void* const* inputs, size_t n_inputs, void* const* outputs,
                size_t n_outputs, RunTrace* trace) const {
    if (n_inputs != input_values_.size() || n_outputs != output_values_.size()) {
        throw InvalidArgument("wrong number of input or output buffers");
    }
    const size_t nv = values_.size();
    const HostSchedule& h = p.host;
    const size_t ns = h.shapes.size();
    const KeepWorkersAwake awake;  // the run's parallel ops come back to back
    // Per-thread scratch reused across calls: no heap allocation once shapes have been seen.
    thread_local std::vector<Tensor> t;
    thread_local std::vector<const Tensor*> in;
    thread_local std::vector<Tensor*> out;
    thread_local std::vector<const float*> srcs;
    thread_local std::vector<int64_t> channels;
    t.resize(ns);
    char* arena = static_cast<char*>(tls_arena.get(std::max<size_t>(h.arena_bytes, 1)));
    for (size_t v = 0; v < ns; ++v) {
        t[v].shape = h.shapes[v];
        t[v].block = h.block[v];
        t[v].dtype = h.dtype[v];
        t[v].data = v < nv && values_[v].kind == Value::Constant ? values_[v].constant.data : nullptr;
    }
    for (size_t i = 0; i < n_inputs; ++i) t[static_cast<size_t>(input_values_[i])].data = const_cast<void*>(inputs[i]);
    for (size_t o = 0; o < n_outputs; ++o) t[static_cast<size_t>(output_values_[o])].data = outputs[o];
    for (size_t v = 0; v < ns; ++v) {
        if (h.arena_offset[v] >= 0) t[v].data = arena + h.arena_offset[v];
    }
    // Views take their storage's pointer; storage is always resolved before its views.
    for (const PlanStep& st : h.steps) {
        for (int v : st.outs) {
            const int s = h.storage[static_cast<size_t>(v)];
            if (s != v) t[static_cast<size_t>(v)].data = t[static_cast<size_t>(s)].data;
        }
    }
    if (trace != nullptr) {
        trace->start_ns.assign(h.steps.size(), 0);
        trace->end_ns.assign(h.steps.size(), 0);
    }
    for (size_t pos = 0; pos < h.steps.size(); ++pos) {
        const PlanStep& st = h.steps[pos];
        if (trace != nullptr) trace->start_ns[pos] = steady_ns();
        if (st.kind == PlanStep::ToBlocked || st.kind == PlanStep::ToPlain) {
            const Tensor& src = t[static_cast<size_t>(st.ins[0])];
            const Tensor& dst = t[static_cast<size_t>(st.outs[0])];
            const Shape& s = src.shape;
            nchwc_reorder(src.f32(), dst.f32(), s[0], s[1], s[2] * s[3], block_, st.kind == PlanStep::ToBlocked);
        } else if (st.kind == PlanStep::Gather) {
            srcs.clear();
            channels.clear();
            for (int i : st.ins) {
                srcs.push_back(t[static_cast<size_t>(i)].f32());
                channels.push_back(t[static_cast<size_t>(i)].shape[1]);
            }
            const Tensor& y = t[static_cast<size_t>(st.outs[0])];
            nchwc_gather(*st.gather, srcs.data(), channels.data(), static_cast<int>(srcs.size()), y.f32(), y.shape[0],
                         y.shape[2] * y.shape[3]);
        } else {
            const Node& node = nodes_[static_cast<size_t>(st.node)];
            in.clear();
            out.clear();
            for (int i : st.ins) in.push_back(&t[static_cast<size_t>(i)]);
            for (int o : st.outs) out.push_back(&t[static_cast<size_t>(o)]);
            if (st.kind == PlanStep::Fused) {
                node.op->run_fused(in, t[static_cast<size_t>(st.residual)], st.act, out);
            } else {
                node.op->run(in, out);
            }
        }
        if (trace != nullptr) trace->end_ns[pos] = steady_ns();
    }
    // Outputs that no node writes (an input or a tensor passed straight through).
    for (size_t o = 0; o < output_values_.size(); ++o) {
        const Value& v = values_[static_cast<size_t>(output_values_[o])];
        if (v.kind == Value::NodeOutput) continue;
        const void* src = v.kind == Value::Constant ? v.constant.data : inputs[static_cast<size_t>(v.index)];
        std::memcpy(outputs[o], src, static_cast<size_t>(shape_numel(p.output_shapes[o])) * dtype_size(v.dtype));
    }
}

}  // namespace pyengine
