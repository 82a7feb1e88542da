// SPDX-License-Identifier: Apache-2.0
// Loading a model: the constructor, reading the graph JSON into nodes and values, and the
// load-time passes over it (which values planning needs, each value's element type).
#include "graph/model.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <unordered_map>

#include "common.h"

namespace pyengine {

namespace {

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

std::atomic<uint64_t> next_model_id{1};

}  // namespace

Model::Model(const std::string& path) : reader_(path), id_(next_model_id.fetch_add(1)) {
    parse_graph();
    plan_layout();
    plan_codes();
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

}  // namespace pyengine
