// SPDX-License-Identifier: Apache-2.0
// Lowering a Model for a device executor: where each value lives, one DeviceStep per node.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "common.h"
#include "graph/model.h"
#include "device/device.h"

namespace pyengine {

namespace {

// Device buffers start on 256-byte boundaries (what cudaMalloc guarantees, and enough for
// vectorized loads); the CPU arena's 64-byte offsets are kept as they are.
constexpr uint64_t kDeviceAlignment = 256;

uint64_t align_up(uint64_t v) { return (v + kDeviceAlignment - 1) / kDeviceAlignment * kDeviceAlignment; }

// PYENGINE_DEVICE_HOST_OPS=Conv2D,Softmax runs those ops through the CPU fallback: a workaround
// for a misbehaving device kernel, and how the fallback path is tested. Read per lowering.
bool forced_to_host(const std::string& op) {
    const char* env = std::getenv("PYENGINE_DEVICE_HOST_OPS");
    if (env == nullptr) return false;
    const std::string list = env;
    size_t at = 0;
    while (at <= list.size()) {
        const size_t comma = std::min(list.find(',', at), list.size());
        if (list.compare(at, comma - at, op) == 0 && comma - at == op.size()) return true;
        at = comma + 1;
    }
    return false;
}

}  // namespace

std::pair<const void*, uint64_t> Model::weight_span() const {
    const char* lo = nullptr;
    const char* hi = nullptr;
    for (const Value& v : values_) {
        if (v.kind != Value::Constant || v.constant.data == nullptr) continue;
        const char* p = static_cast<const char*>(v.constant.data);
        if (lo == nullptr || p < lo) lo = p;
        if (hi == nullptr || p + v.constant.nbytes() > hi) hi = p + v.constant.nbytes();
    }
    return {lo, static_cast<uint64_t>(hi - lo)};
}

std::shared_ptr<const DeviceProgram> Model::device_program(const Plan& p) const {
    auto prog = std::make_shared<DeviceProgram>();
    const char* weights = static_cast<const char*>(weight_span().first);
    const size_t nv = values_.size();

    // Workspace: the plan's arena, then each input, then each output.
    uint64_t at = align_up(p.arena_bytes);
    prog->io_offset = at;
    auto bytes_of = [&](const Shape& s, int v) {
        return static_cast<uint64_t>(shape_numel(s)) * dtype_size(values_[static_cast<size_t>(v)].dtype);
    };
    for (int v : input_values_) {
        const uint64_t n = bytes_of(p.shapes[static_cast<size_t>(v)], v);
        prog->input_offset.push_back(at);
        prog->input_bytes.push_back(n);
        at += align_up(n);
    }
    for (size_t o = 0; o < output_values_.size(); ++o) {
        const uint64_t n = bytes_of(p.output_shapes[o], output_values_[o]);
        prog->output_offset.push_back(at);
        prog->output_bytes.push_back(n);
        at += align_up(n);
    }
    prog->workspace_bytes = at;
    prog->output_shapes = p.output_shapes;

    // Where each value lives, as Model::run resolves it on the host.
    std::vector<DeviceArg> loc(nv);
    for (size_t v = 0; v < nv; ++v) {
        loc[v].shape = p.shapes[v];
        loc[v].dtype = values_[v].dtype;
        if (values_[v].kind == Value::Constant) {
            loc[v].region = DeviceArg::Weights;
            loc[v].offset = static_cast<uint64_t>(static_cast<const char*>(values_[v].constant.data) - weights);
        } else if (p.arena_offset[v] >= 0) {
            loc[v].offset = static_cast<uint64_t>(p.arena_offset[v]);
        }
    }
    for (size_t i = 0; i < input_values_.size(); ++i) loc[static_cast<size_t>(input_values_[i])].offset = prog->input_offset[i];
    for (size_t o = 0; o < output_values_.size(); ++o) {
        const int v = output_values_[o];
        if (values_[static_cast<size_t>(v)].kind == Value::NodeOutput) loc[static_cast<size_t>(v)].offset = prog->output_offset[o];
    }
    for (int n : order_) {
        for (int v : nodes_[static_cast<size_t>(n)].outputs) {
            const int s = p.storage[static_cast<size_t>(v)];
            if (s == v) continue;
            loc[static_cast<size_t>(v)].region = loc[static_cast<size_t>(s)].region;  // a view of a weight stays one
            loc[static_cast<size_t>(v)].offset = loc[static_cast<size_t>(s)].offset;
        }
    }

    for (int n : order_) {
        const Node& node = nodes_[static_cast<size_t>(n)];
        DeviceStep step;
        step.name = node.name;
        std::vector<Shape> in_shapes;
        for (int i : node.inputs) {
            step.in.push_back(loc[static_cast<size_t>(i)]);
            in_shapes.push_back(p.shapes[static_cast<size_t>(i)]);
        }
        for (int o : node.outputs) step.out.push_back(loc[static_cast<size_t>(o)]);
        // Device kernels compute float32; other element types run on the host (a Copy copies any).
        bool typed = false;
        for (const std::vector<DeviceArg>* args : {&step.in, &step.out}) {
            for (const DeviceArg& a : *args) typed = typed || a.dtype != DType::Float32;
        }
        if (forced_to_host(node.op_name) || !node.op->lower(in_shapes, &step) ||
            (typed && step.kind != DeviceStep::Copy)) {
            step.kind = DeviceStep::Host;
            const Op* op = node.op.get();
            step.host = [op](const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) { op->run(in, out); };
        }
        if (step.kind == DeviceStep::Copy && step.in[0].region == step.out[0].region &&
            step.in[0].offset == step.out[0].offset) {
            step.kind = DeviceStep::Nop;
        }
        prog->steps.push_back(std::move(step));
    }
    // Outputs that no node writes (a graph input or a tensor passed straight through).
    for (size_t o = 0; o < output_values_.size(); ++o) {
        const int v = output_values_[o];
        if (values_[static_cast<size_t>(v)].kind == Value::NodeOutput) continue;
        DeviceStep step;
        step.kind = DeviceStep::Copy;
        step.name = outputs_[o].name;
        step.in.push_back(loc[static_cast<size_t>(v)]);
        DeviceArg dst;
        dst.offset = prog->output_offset[o];
        dst.shape = p.output_shapes[o];
        dst.dtype = outputs_[o].dtype;
        step.out.push_back(dst);
        prog->steps.push_back(std::move(step));
    }
    return prog;
}

}  // namespace pyengine
