// SPDX-License-Identifier: Apache-2.0
// A loaded native model: the validated graph, its execution order, and the executor.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "format/reader.h"
#include "graph/op.h"
#include "format/tensor.h"
#include "kernels/channel_gather.h"

namespace pyengine {

struct DeviceProgram;

struct TensorSpec {
    std::string name;
    DType dtype = DType::Float32;
    Shape shape;  // -1 marks a free dimension
};

// Bytes every arena block is aligned (and rounded) to.
constexpr size_t kArenaAlignment = 64;

// One step of the CPU executor: a node, a node with the Add (and activation) after it fused
// in, a reorder between plain NCHW and the blocked layout, or a channel gather of blocked
// tensors that does the work of one or more channel-moving nodes (Concat, Slice, a shuffle).
struct PlanStep {
    enum Kind : uint8_t { Node, Fused, ToBlocked, ToPlain, Gather } kind = Node;
    int node = -1;               // Node, Fused, Gather (the last node it stands for)
    std::vector<int> merged;     // Gather: the other nodes it stands for
    std::shared_ptr<const NchwcGatherMap> gather;  // Gather: the map from ins to outs[0]
    std::vector<int> ins, outs;  // slots: a value's index, or an extra slot after the values
    int residual = -1;           // Fused: the slot added before the activation
    Epilogue act;                // Fused: the activation after the Add (None if there is none)
};

// How the CPU executor runs one plan: the layout pass's result. Slots are the graph's values
// followed by extra ones (a value's copy in the other layout).
struct HostSchedule {
    std::vector<PlanStep> steps;
    std::vector<Shape> shapes;          // per slot, logical [N, C, H, W] also when blocked
    std::vector<int> block;             // per slot: 0 plain, else the NCHW[c] block
    std::vector<DType> dtype;           // per slot: the element type
    std::vector<int64_t> arena_offset;  // per slot: byte offset in the arena, or -1
    std::vector<int> storage;           // per slot: the slot whose memory it uses (views)
    size_t arena_bytes = 0;
    int reorders = 0;                   // reorder steps
    int blocked_steps = 0;              // node steps that run in the blocked layout
    int fused = 0;                      // Add (+ activation) pairs fused into a convolution
    int gathers = 0;                    // channel gather steps
};

// Shapes and memory layout for one set of input shapes; computed once and cached.
struct Plan {
    std::vector<Shape> shapes;         // per value
    std::vector<int64_t> arena_offset; // per value: byte offset in the arena, or -1
    std::vector<int> storage;          // per value: the value whose memory it uses (views)
    size_t arena_bytes = 0;            // (these four: the plain layout a device program uses)
    std::vector<Shape> output_shapes;
    HostSchedule host;                 // what Model::run executes
};

// Filled by a profiled run: when each node (in execution order) started and ended, in
// nanoseconds of the steady clock.
struct RunTrace {
    std::vector<int64_t> start_ns, end_ns;
};

// One node as the profiler reports it, for one plan's shapes.
struct NodeProfile {
    std::string name, op;
    std::vector<Shape> inputs, outputs;
    OpRunInfo run;
};

class Model {
public:
    // Loads and validates `path`; throws ModelFormatError naming the problem.
    explicit Model(const std::string& path);

    const std::string& path() const { return reader_.path(); }
    const std::vector<TensorSpec>& inputs() const { return inputs_; }
    const std::vector<TensorSpec>& outputs() const { return outputs_; }
    // Bytes of weights mapped from the file (not copied).
    uint64_t weight_bytes() const { return reader_.data_length(); }
    size_t node_count() const { return order_.size(); }

    // Checks input shapes (in inputs() order) and returns the cached plan for them.
    // Throws InvalidArgument naming the input, what was expected and what came. A model with
    // parameter inputs (value_inputs()) also needs `input_data` (inputs() order): their values
    // decide shapes and are part of the cache key.
    std::shared_ptr<const Plan> plan(const std::vector<Shape>& input_shapes,
                                     const void* const* input_data = nullptr) const;
    // Positions (in inputs()) of the inputs whose values the planner reads: parameters such as
    // a Reduce's axes or a Resize's sizes given at run time (docs/format.md).
    const std::vector<int>& value_inputs() const { return value_inputs_; }

    // Runs the graph. `inputs` and `outputs` follow inputs()/outputs() order; outputs are
    // allocated by the caller with plan.output_shapes. Parameter inputs (value_inputs()) must
    // hold the values the plan was made for. Thread-safe; takes no locks while
    // computing (scratch memory is per calling thread).
    void run(const Plan& plan, const std::vector<const void*>& inputs,
             const std::vector<void*>& outputs) const;
    // The same with plain arrays of n_inputs / n_outputs buffers (the lean call path). With a
    // `trace`, each node's start and end times are recorded into it (the profiler); without
    // one, the executor only pays a null check per node.
    void run(const Plan& plan, const void* const* inputs, size_t n_inputs, void* const* outputs,
             size_t n_outputs, RunTrace* trace = nullptr) const;
    // The nodes run() executes for `plan`, in execution order (RunTrace's order).
    std::vector<NodeProfile> profile_nodes(const Plan& plan) const;

    // The block of the blocked layout this model plans with (0: plain NCHW everywhere).
    int layout_block() const { return block_; }
    // What the layout pass made of `plan`: the nodes that run blocked, the fused Conv -> Add
    // (-> activation) chains, and each reorder ("value to plain" / "value to blocked"); and
    // where the blocked convolutions' weights come from: the nodes that read them in place from
    // the file's mapping, those bytes, and the bytes repacked into memory at load.
    struct LayoutReport {
        int block = 0;
        std::vector<std::string> blocked, fused, reorders, weights_mapped;
        int64_t weights_mapped_bytes = 0, weights_repacked_bytes = 0;
    };
    LayoutReport layout_report(const Plan& plan) const;

    // Unique for the life of the process (unlike the address): keys per-thread plan caches.
    uint64_t id() const { return id_; }

    // The element type of each value (per value index).
    DType value_dtype(int v) const { return values_[static_cast<size_t>(v)].dtype; }

    // Device hook (defined in graph/device_lowering.cpp): the graph lowered for a device executor
    // with `plan`'s shapes and memory layout. Weights are addressed from weight_span().first.
    std::shared_ptr<const DeviceProgram> device_program(const Plan& plan) const;
    // The mapped bytes that hold every constant tensor, {start, length}; uploaded as one block.
    std::pair<const void*, uint64_t> weight_span() const;

private:
    struct Value {
        std::string name;
        enum Kind { Input, Constant, NodeOutput } kind;
        int index;  // input position, or producing node
        Tensor constant;
        DType dtype = DType::Float32;  // set at load (infer_dtypes)
    };
    struct Node {
        std::string name;
        std::string op_name;
        std::unique_ptr<Op> op;
        std::vector<int> inputs, outputs;
    };

    // Conv -> Add -> activation chains the planner may run as one fused step (per conv node).
    struct Fusion {
        int add = -1, act = -1;  // nodes folded into the conv (act: -1 if none)
        int residual = -1;       // the Add's other input
        int out = -1;            // the value the fused step writes
    };

    void parse_graph();
    void plan_layout();
    // Pairs int8 ops that pass a value as u8 codes (Op::code_output), once at load.
    void plan_codes();
    std::shared_ptr<Plan> build_plan(const std::vector<Shape>& input_shapes,
                                     const void* const* input_data = nullptr) const;
    void find_plan_values();
    void build_host_schedule(Plan* p) const;
    void infer_output_specs();
    void infer_dtypes();

    PyemReader reader_;
    uint64_t id_;
    std::vector<TensorSpec> inputs_, outputs_;
    std::vector<Value> values_;
    std::vector<Node> nodes_;
    std::vector<int> order_;          // nodes to run, topologically sorted
    std::vector<int> input_values_, output_values_;
    std::vector<int> last_use_;       // per value: last position in order_ that reads it
    int block_ = 0;                   // see layout_block()
    std::vector<Fusion> fusion_;      // per node
    // Values the planner needs (parameters read by value, and what computes them): per value and
    // per node (run at plan time); value_inputs_: the graph inputs among them.
    std::vector<char> plan_value_, plan_node_;
    std::vector<int> value_inputs_;
    // Graph outputs' optional "shape" (format 1.2): what outputs() reports for a model with
    // parameter inputs, whose output shapes load cannot probe.
    std::vector<Shape> declared_output_shapes_;

    mutable std::mutex plan_mutex_;
    mutable std::map<std::vector<int64_t>, std::shared_ptr<const Plan>> plans_;
};

}  // namespace pyengine
