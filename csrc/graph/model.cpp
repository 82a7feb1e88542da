// SPDX-License-Identifier: Apache-2.0
#include "graph/model.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <unordered_map>

#include "common.h"
#include "kernels/conv_nchwc.h"
#include "kernels/dispatch.h"

namespace pyengine {

namespace {

constexpr size_t kMaxCachedPlans = 64;
// Elements a parameter value (a graph input or a node output read by value) may hold: they key
// the plan cache.
constexpr int64_t kMaxParamElements = 4096;

[[noreturn]] void graph_error(const std::string& path, const std::string& what) {
    throw ModelFormatError(str("'", path, "' has an invalid graph: ", what));
}

const json::Value& member(const std::string& path, const json::Value& obj, const char* key,
                          json::Type type, const std::string& where) {
    const json::Value* v = obj.find(key);
    if (v == nullptr) graph_error(path, str(where, " has no '", key, "'"));
    if (v->type() != type) {
        graph_error(path, str(where, " '", key, "' must be a ", json::type_name(type), ", got ", json::type_name(v->type())));
    }
    return *v;
}

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

namespace {
std::atomic<uint64_t> next_model_id{1};
}  // namespace

Model::Model(const std::string& path) : reader_(path), id_(next_model_id.fetch_add(1)) {
    parse_graph();
    plan_layout();
    if (!value_inputs_.empty()) {
        // Shapes depend on parameter values only predict has: plans are checked then.
        infer_output_specs();
        return;
    }
    // Validate shapes once at load with the free dimensions filled in.
    std::vector<Shape> probe;
    for (const auto& in : inputs_) {
        Shape s = in.shape;
        for (size_t d = 0; d < s.size(); ++d) if (s[d] < 0) s[d] = d == 0 ? 1 : 64;
        probe.push_back(s);
    }
    try {
        plan(probe);
    } catch (const InvalidArgument& e) {
        graph_error(path, e.what());
    }
    infer_output_specs();
}

void Model::parse_graph() {
    const std::string& path = reader_.path();
    const json::Value& g = reader_.graph();
    std::unordered_map<std::string, int> by_name;
    auto add_value = [&](Value v) {
        if (v.name.empty()) graph_error(path, "a value has an empty name");
        if (!by_name.emplace(v.name, static_cast<int>(values_.size())).second) {
            graph_error(path, str("value name '", v.name, "' is defined twice"));
        }
        values_.push_back(std::move(v));
    };
    for (const auto& t : reader_.tensors()) {
        add_value(Value{t.name, Value::Constant, -1, reader_.view(t), t.dtype});
    }

    const json::Value& inputs = member(path, g, "inputs", json::Type::Array, "graph");
    // A graph with no inputs (only constants, as ONNX allows) is valid: it answers its constants.
    for (size_t i = 0; i < inputs.items().size(); ++i) {
        const json::Value& in = inputs.items()[i];
        const std::string where = str("input ", i);
        if (!in.is_object()) graph_error(path, str(where, " must be an object"));
        TensorSpec spec;
        spec.name = member(path, in, "name", json::Type::String, where).as_string();
        const std::string& dt = member(path, in, "dtype", json::Type::String, where).as_string();
        if (!dtype_from_name(dt, &spec.dtype)) {
            graph_error(path, str("input '", spec.name, "' has dtype '", dt,
                                  "'; expected float32, float64, int8/16/32/64, uint8/16/32/64 or bool"));
        }
        const json::Value& shape = member(path, in, "shape", json::Type::Array, where);
        if (shape.items().size() > kMaxRank) graph_error(path, str("input '", spec.name, "' has rank above ", kMaxRank));
        for (const auto& d : shape.items()) {
            if (!d.is_integer() || d.as_int() < -1 || d.as_int() > (int64_t(1) << 31)) {
                graph_error(path, str("input '", spec.name, "' shape entries must be integers >= -1, got ", d.dump()));
            }
            spec.shape.push_back(d.as_int());
        }
        input_values_.push_back(static_cast<int>(values_.size()));
        add_value(Value{spec.name, Value::Input, static_cast<int>(i), Tensor{}, spec.dtype});
        inputs_.push_back(std::move(spec));
    }

    const json::Value& nodes = member(path, g, "nodes", json::Type::Array, "graph");
    std::unordered_map<std::string, int> node_names;
    for (size_t n = 0; n < nodes.items().size(); ++n) {
        const json::Value& jn = nodes.items()[n];
        if (!jn.is_object()) graph_error(path, str("node ", n, " must be an object"));
        Node node;
        node.name = member(path, jn, "name", json::Type::String, str("node ", n)).as_string();
        const std::string where = str("node '", node.name, "'");
        if (node.name.empty()) graph_error(path, str("node ", n, " has an empty name"));
        if (!node_names.emplace(node.name, static_cast<int>(n)).second) graph_error(path, str(where, " is defined twice"));
        node.op_name = member(path, jn, "op", json::Type::String, where).as_string();
        const json::Value* attrs = jn.find("attrs");
        OpSpec spec{};
        node.op = op_create(node.op_name, Attrs(attrs, node.name, node.op_name), &spec);
        const auto& ins = member(path, jn, "inputs", json::Type::Array, where).items();
        const auto& outs = member(path, jn, "outputs", json::Type::Array, where).items();
        if (ins.size() < static_cast<size_t>(spec.min_inputs) || ins.size() > static_cast<size_t>(spec.max_inputs)) {
            graph_error(path, str(where, " (", node.op_name, ") has ", ins.size(), " inputs; it takes ",
                                  spec.min_inputs, spec.min_inputs == spec.max_inputs ? "" : str("..", spec.max_inputs)));
        }
        if (outs.size() != static_cast<size_t>(spec.outputs)) {
            graph_error(path, str(where, " (", node.op_name, ") has ", outs.size(), " outputs; it makes ", spec.outputs));
        }
        for (const auto& o : outs) {
            if (!o.is_string()) graph_error(path, str(where, " output names must be strings"));
            node.outputs.push_back(static_cast<int>(values_.size()));
            add_value(Value{o.as_string(), Value::NodeOutput, static_cast<int>(nodes_.size()), Tensor{}});
        }
        // Inputs are resolved after every node's outputs exist (nodes may be listed in any order).
        for (const auto& i : ins) {
            if (!i.is_string()) graph_error(path, str(where, " input names must be strings"));
        }
        nodes_.push_back(std::move(node));
    }
    for (size_t n = 0; n < nodes_.size(); ++n) {
        Node& node = nodes_[n];
        for (const auto& i : nodes.items()[n].find("inputs")->items()) {
            auto it = by_name.find(i.as_string());
            if (it == by_name.end()) {
                graph_error(path, str("node '", node.name, "' reads '", i.as_string(),
                                      "', which is not a graph input, a tensor in the file or any node's output"));
            }
            node.inputs.push_back(it->second);
        }
    }

    const json::Value& outputs = member(path, g, "outputs", json::Type::Array, "graph");
    if (outputs.items().empty()) graph_error(path, "graph has no outputs");
    for (size_t i = 0; i < outputs.items().size(); ++i) {
        const json::Value& o = outputs.items()[i];
        if (!o.is_object()) graph_error(path, str("output ", i, " must be an object"));
        const std::string& name = member(path, o, "name", json::Type::String, str("output ", i)).as_string();
        auto it = by_name.find(name);
        if (it == by_name.end()) graph_error(path, str("output '", name, "' is not produced by any node, input or tensor"));
        if (std::find(output_values_.begin(), output_values_.end(), it->second) != output_values_.end()) {
            graph_error(path, str("output '", name, "' is listed twice"));
        }
        output_values_.push_back(it->second);
        outputs_.push_back(TensorSpec{name, DType::Float32, {}});
        Shape declared;
        const json::Value* shape = o.find("shape");
        if (shape != nullptr) {
            if (!shape->is_array() || shape->items().size() > kMaxRank) {
                graph_error(path, str("output '", name, "' 'shape' must be a list of at most ", kMaxRank, " integers"));
            }
            for (const auto& d : shape->items()) {
                if (!d.is_integer() || d.as_int() < -1 || d.as_int() > (int64_t(1) << 31)) {
                    graph_error(path, str("output '", name, "' shape entries must be integers >= -1, got ", d.dump()));
                }
                declared.push_back(d.as_int());
            }
        }
        declared_output_shapes_.push_back(std::move(declared));
    }

    // Keep only the nodes the outputs need, then order them (Kahn); what is left is a cycle.
    std::vector<char> needed(nodes_.size(), 0);
    std::deque<int> work(output_values_.begin(), output_values_.end());
    while (!work.empty()) {
        const Value& v = values_[static_cast<size_t>(work.front())];
        work.pop_front();
        if (v.kind != Value::NodeOutput || needed[static_cast<size_t>(v.index)]) continue;
        needed[static_cast<size_t>(v.index)] = 1;
        for (int i : nodes_[static_cast<size_t>(v.index)].inputs) work.push_back(i);
    }
    std::vector<int> pending(nodes_.size(), 0);
    std::vector<std::vector<int>> consumers(nodes_.size());
    std::deque<int> ready;
    for (size_t n = 0; n < nodes_.size(); ++n) {
        if (!needed[n]) continue;
        for (int i : nodes_[n].inputs) {
            const Value& v = values_[static_cast<size_t>(i)];
            if (v.kind == Value::NodeOutput) {
                ++pending[n];
                consumers[static_cast<size_t>(v.index)].push_back(static_cast<int>(n));
            }
        }
        if (pending[n] == 0) ready.push_back(static_cast<int>(n));
    }
    while (!ready.empty()) {
        const int n = ready.front();
        ready.pop_front();
        order_.push_back(n);
        for (int c : consumers[static_cast<size_t>(n)]) {
            if (--pending[static_cast<size_t>(c)] == 0) ready.push_back(c);
        }
    }
    const size_t n_needed = static_cast<size_t>(std::count(needed.begin(), needed.end(), 1));
    if (order_.size() != n_needed) {
        for (size_t n = 0; n < nodes_.size(); ++n) {
            if (needed[n] && pending[n] > 0) graph_error(path, str("the graph has a cycle through node '", nodes_[n].name, "'"));
        }
    }

    last_use_.assign(values_.size(), -1);
    for (size_t pos = 0; pos < order_.size(); ++pos) {
        for (int i : nodes_[static_cast<size_t>(order_[pos])].inputs) last_use_[static_cast<size_t>(i)] = static_cast<int>(pos);
    }
    infer_dtypes();
    find_plan_values();
    // Ops may precompute from constant inputs (folded batch norm, packed weights later).
    for (int n : order_) {
        Node& node = nodes_[static_cast<size_t>(n)];
        std::vector<const Tensor*> constants;
        for (int i : node.inputs) {
            const Value& v = values_[static_cast<size_t>(i)];
            constants.push_back(v.kind == Value::Constant ? &v.constant : nullptr);
        }
        node.op->prepare(constants);
    }
    // Blocked weights the converter stored beside the plain ones (docs/format.md): checked on
    // every machine, so a file that does not fit fails at load everywhere; used in place where
    // the layout's block matches (plan_layout).
    for (int n : order_) {
        const json::Value* stored = nodes.items()[static_cast<size_t>(n)].find("blocked_weights");
        if (stored == nullptr) continue;
        Node& node = nodes_[static_cast<size_t>(n)];
        const std::string where = str("node '", node.name, "' (", node.op_name, ") 'blocked_weights'");
        if (!stored->is_array()) graph_error(path, str(where, " must be a list of {block, tensor}"));
        for (const json::Value& item : stored->items()) {
            const json::Value* block = item.is_object() ? item.find("block") : nullptr;
            const json::Value* tensor = item.is_object() ? item.find("tensor") : nullptr;
            if (block == nullptr || tensor == nullptr || !block->is_integer() || !tensor->is_string()) {
                graph_error(path, str(where, " entries must be {\"block\": integer, \"tensor\": name}, got ", item.dump()));
            }
            auto it = by_name.find(tensor->as_string());
            if (it == by_name.end() || values_[static_cast<size_t>(it->second)].kind != Value::Constant) {
                graph_error(path, str(where, " names '", tensor->as_string(), "', which is not a tensor in the file"));
            }
            const Tensor& packed = values_[static_cast<size_t>(it->second)].constant;
            if (packed.dtype != DType::Float32) {
                graph_error(path, str(where, " tensor '", tensor->as_string(), "' is ", dtype_name(packed.dtype), ", not float32"));
            }
            try {
                node.op->attach_blocked_weights(static_cast<int>(std::clamp<int64_t>(block->as_int(), -1, 1 << 20)), packed);
            } catch (const InvalidArgument& e) {
                graph_error(path, str(where, " tensor '", tensor->as_string(), "': ", e.what()));
            }
        }
    }
}

// Which values the planner must know (not only their shapes): the parameter inputs ops read by
// value, and everything those are computed from. Walking the execution order backwards sees a
// node after all its readers.
void Model::find_plan_values() {
    plan_value_.assign(values_.size(), 0);
    plan_node_.assign(nodes_.size(), 0);
    for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
        const Node& node = nodes_[static_cast<size_t>(*it)];
        bool needed = false;
        for (int o : node.outputs) needed = needed || plan_value_[static_cast<size_t>(o)];
        plan_node_[static_cast<size_t>(*it)] = needed;
        for (size_t k = 0; k < node.inputs.size(); ++k) {
            if ((needed && node.op->reads_data(k)) || node.op->reads_value(k)) {
                plan_value_[static_cast<size_t>(node.inputs[k])] = 1;
            }
        }
    }
    for (size_t i = 0; i < input_values_.size(); ++i) {
        if (plan_value_[static_cast<size_t>(input_values_[i])]) value_inputs_.push_back(static_cast<int>(i));
    }
}

// Every value's element type, node by node in execution order: a node given a dtype it does not
// take is a ModelFormatError naming the node, the input and the dtype.
void Model::infer_dtypes() {
    const std::string& path = reader_.path();
    for (int n : order_) {
        const Node& node = nodes_[static_cast<size_t>(n)];
        std::vector<DType> in;
        for (int i : node.inputs) in.push_back(values_[static_cast<size_t>(i)].dtype);
        std::vector<DType> out;
        try {
            out = node.op->infer_dtypes(in, node.outputs.size());
        } catch (const InvalidArgument& e) {
            std::string what = e.what();
            // Name the value too: "input 1 ('indices') has dtype float32; it takes int32 or int64".
            const size_t at = what.find(" has dtype ");
            if (what.rfind("input ", 0) == 0 && at != std::string::npos) {
                const size_t k = static_cast<size_t>(std::stoul(what.substr(6, at - 6)));
                if (k < node.inputs.size()) {
                    what.insert(at, str(" ('", values_[static_cast<size_t>(node.inputs[k])].name, "')"));
                }
            }
            graph_error(path, str("node '", node.name, "' (", node.op_name, "): ", what));
        }
        for (size_t k = 0; k < node.outputs.size() && k < out.size(); ++k) {
            values_[static_cast<size_t>(node.outputs[k])].dtype = out[k];
        }
    }
    for (size_t o = 0; o < output_values_.size(); ++o) outputs_[o].dtype = values_[static_cast<size_t>(output_values_[o])].dtype;
}

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
