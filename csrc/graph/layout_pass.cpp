// SPDX-License-Identifier: Apache-2.0
// The layout pass: which nodes run in the channel-blocked layout NCHW[c], where reorders go,
// which Conv -> Add -> activation chains fuse, which channel-moving nodes (Concat, Slice,
// ShuffleNet's Reshape-Transpose-Reshape) become blocked channel gathers (composed with each
// other where that saves a copy), and the arena layout of the resulting schedule.
#include <algorithm>
#include <cstdlib>

#include "common.h"
#include "graph/model.h"
#include "kernels/conv_nchwc.h"
#include "kernels/dispatch.h"

namespace pyengine {

namespace {
// A gather that reads another gather's sources instead of its output keeps at most this many
// source blocks per output block (each costs a load, a permute and a merge per pixel).
constexpr int kMaxComposedParts = 4;
}  // namespace

// A value passes as u8 codes when an int8 op writes it on a grid and every reader is an int8
// op that takes that grid on input 0 (and reads it nowhere else); graph outputs never do.
void Model::plan_codes() {
    std::vector<std::vector<std::pair<int, size_t>>> readers(values_.size());
    for (int n : order_) {
        const Node& node = nodes_[static_cast<size_t>(n)];
        for (size_t k = 0; k < node.inputs.size(); ++k) readers[static_cast<size_t>(node.inputs[k])].emplace_back(n, k);
    }
    std::vector<char> is_output(values_.size(), 0);
    for (int o : output_values_) is_output[static_cast<size_t>(o)] = 1;
    for (int n : order_) {
        Node& node = nodes_[static_cast<size_t>(n)];
        const CodeGrid* grid = node.op->code_output();
        if (grid == nullptr || node.outputs.size() != 1) continue;
        const size_t v = static_cast<size_t>(node.outputs[0]);
        bool ok = !is_output[v] && !readers[v].empty();
        for (const auto& r : readers[v]) {
            ok = ok && r.second == 0 && nodes_[static_cast<size_t>(r.first)].op->takes_codes(*grid);
        }
        if (!ok) continue;
        node.op->use_codes(false, true);
        for (const auto& r : readers[v]) nodes_[static_cast<size_t>(r.first)].op->use_codes(true, false);
    }
}

// The blocked layout is planned per input shapes (build_host_schedule); here, once at load:
// the block (the vector width of the kernel variant in use; PYENGINE_LAYOUT=nchw turns the
// layout off), the ops' repacked weights, and the Conv -> Add -> activation chains that a plan
// may fuse.
void Model::plan_layout() {
    const char* env = std::getenv("PYENGINE_LAYOUT");
    const std::string mode = env != nullptr ? env : "";
    if (!mode.empty() && mode != "nchw" && mode != "blocked") {
        throw InvalidArgument(str("PYENGINE_LAYOUT='", mode, "' is not 'nchw' or 'blocked'"));
    }
    block_ = mode == "nchw" ? 0 : kernels().nchwc_block;
    fusion_.assign(nodes_.size(), Fusion{});
    if (block_ == 0) return;
    for (int n : order_) nodes_[static_cast<size_t>(n)].op->prepare_layout(block_);

    const size_t nv = values_.size();
    std::vector<int> uses(nv, 0), reader(nv, -1), position(nodes_.size(), -1);
    std::vector<char> is_output(nv, 0);
    for (int o : output_values_) is_output[static_cast<size_t>(o)] = 1;
    for (size_t pos = 0; pos < order_.size(); ++pos) {
        const int n = order_[pos];
        position[static_cast<size_t>(n)] = static_cast<int>(pos);
        for (int i : nodes_[static_cast<size_t>(n)].inputs) {
            ++uses[static_cast<size_t>(i)];
            reader[static_cast<size_t>(i)] = n;
        }
    }
    // The only reader of v (a node), or -1 when v has several, none, or is a graph output.
    auto sole_reader = [&](int v) {
        return uses[static_cast<size_t>(v)] == 1 && !is_output[static_cast<size_t>(v)] ? reader[static_cast<size_t>(v)] : -1;
    };
    std::vector<char> taken(nodes_.size(), 0);
    for (int n : order_) {
        const Node& conv = nodes_[static_cast<size_t>(n)];
        if (!conv.op->fuses_residual() || conv.outputs.size() != 1) continue;
        const int add = sole_reader(conv.outputs[0]);
        if (add < 0 || taken[static_cast<size_t>(add)] || nodes_[static_cast<size_t>(add)].op_name != "Add") continue;
        const Node& a = nodes_[static_cast<size_t>(add)];
        const int residual = a.inputs[0] == conv.outputs[0] ? a.inputs[1] : a.inputs[0];
        const Value& r = values_[static_cast<size_t>(residual)];
        // The fused step runs where the conv does: the residual must be ready by then.
        if (residual == conv.outputs[0] ||
            (r.kind == Value::NodeOutput && position[static_cast<size_t>(r.index)] > position[static_cast<size_t>(n)])) {
            continue;
        }
        Fusion f;
        f.add = add;
        f.residual = residual;
        f.out = a.outputs[0];
        const int act = sole_reader(f.out);
        if (act >= 0 && nodes_[static_cast<size_t>(act)].op->activation() != nullptr &&
            nodes_[static_cast<size_t>(act)].inputs.size() == 1) {
            f.act = act;
            f.out = nodes_[static_cast<size_t>(act)].outputs[0];
        }
        taken[static_cast<size_t>(add)] = 1;
        fusion_[static_cast<size_t>(n)] = f;
    }
}

Model::LayoutReport Model::layout_report(const Plan& p) const {
    LayoutReport r;
    r.block = block_;
    for (int n : order_) {
        const Op::BlockedWeightBytes w = nodes_[static_cast<size_t>(n)].op->blocked_weight_bytes();
        if (w.mapped > 0) r.weights_mapped.push_back(nodes_[static_cast<size_t>(n)].name);
        r.weights_mapped_bytes += w.mapped;
        r.weights_repacked_bytes += w.copied;
    }
    const HostSchedule& h = p.host;
    const size_t nv = values_.size();
    // An extra slot holds a copy of the value whose shape and producer it shares: find by name.
    auto value_name = [&](int slot) -> std::string {
        if (static_cast<size_t>(slot) < nv) return values_[static_cast<size_t>(slot)].name;
        for (const PlanStep& s : h.steps) {
            if ((s.kind == PlanStep::ToBlocked || s.kind == PlanStep::ToPlain) && s.outs[0] == slot) {
                return static_cast<size_t>(s.ins[0]) < nv ? values_[static_cast<size_t>(s.ins[0])].name : "?";
            }
        }
        for (const PlanStep& s : h.steps) {
            if (s.kind == PlanStep::ToPlain && s.ins[0] == slot) return values_[static_cast<size_t>(s.outs[0])].name;
        }
        return "?";
    };
    for (const PlanStep& s : h.steps) {
        if (s.kind == PlanStep::ToBlocked || s.kind == PlanStep::ToPlain) {
            r.reorders.push_back(str(value_name(s.ins[0]), s.kind == PlanStep::ToPlain ? " to plain" : " to blocked"));
            continue;
        }
        const Node& node = nodes_[static_cast<size_t>(s.node)];
        if (!s.outs.empty() && h.block[static_cast<size_t>(s.outs[0])] != 0) {
            for (int m : s.merged) r.blocked.push_back(nodes_[static_cast<size_t>(m)].name);
            r.blocked.push_back(node.name);
        }
        if (s.kind == PlanStep::Fused) {
            const Fusion& f = fusion_[static_cast<size_t>(s.node)];
            std::string chain = str(node.name, " + ", nodes_[static_cast<size_t>(f.add)].name);
            if (f.act >= 0) chain += str(" + ", nodes_[static_cast<size_t>(f.act)].name);
            r.fused.push_back(chain);
        }
    }
    return r;
}

void Model::build_host_schedule(Plan* p) const {
    HostSchedule& h = p->host;
    const size_t nv = values_.size();
    h.shapes = p->shapes;
    h.block.assign(nv, 0);
    h.dtype.resize(nv);
    for (size_t v = 0; v < nv; ++v) h.dtype[v] = values_[v].dtype;
    std::vector<char> is_output(nv, 0);
    for (int o : output_values_) is_output[static_cast<size_t>(o)] = 1;
    // The slot holding each value in each layout (-1: not made yet).
    std::vector<int> plain_of(nv, -1), blocked_of(nv, -1);
    for (size_t v = 0; v < nv; ++v) {
        if (values_[v].kind != Value::NodeOutput) plain_of[v] = static_cast<int>(v);
    }
    auto new_slot = [&](int like, int block) {
        h.shapes.push_back(h.shapes[static_cast<size_t>(like)]);
        h.block.push_back(block);
        h.dtype.push_back(h.dtype[static_cast<size_t>(like)]);
        return static_cast<int>(h.shapes.size() - 1);
    };
    auto reorder = [&](PlanStep::Kind kind, int src, int dst) {
        PlanStep s;
        s.kind = kind;
        s.ins = {src};
        s.outs = {dst};
        h.steps.push_back(std::move(s));
        ++h.reorders;
    };
    // The slot of value v in layout `want`, reordering it (once) if it lies in the other one.
    auto slot_in = [&](int v, int want) {
        const size_t i = static_cast<size_t>(v);
        if (want == 0) {
            if (plain_of[i] < 0) {
                plain_of[i] = new_slot(v, 0);
                reorder(PlanStep::ToPlain, blocked_of[i], plain_of[i]);
            }
            return plain_of[i];
        }
        if (blocked_of[i] < 0) {
            blocked_of[i] = new_slot(v, want);
            reorder(PlanStep::ToBlocked, plain_of[i], blocked_of[i]);
        }
        return blocked_of[i];
    };
    // The slot a step writes value v to in block b (0: plain); graph outputs that are blocked
    // get a blocked slot, reordered into the caller's array after the step (to_plain).
    std::vector<int> to_plain;
    auto out_slot = [&](int v, int b) {
        const size_t i = static_cast<size_t>(v);
        if (b == 0) {
            plain_of[i] = v;
            return v;
        }
        if (is_output[i]) {
            blocked_of[i] = new_slot(v, b);
            to_plain.push_back(v);
            return blocked_of[i];
        }
        h.block[i] = b;
        blocked_of[i] = v;
        return v;
    };
    auto finish_step = [&](PlanStep&& step) {
        h.steps.push_back(std::move(step));
        for (int v : to_plain) {
            plain_of[static_cast<size_t>(v)] = v;
            reorder(PlanStep::ToPlain, blocked_of[static_cast<size_t>(v)], v);
        }
        to_plain.clear();
    };

    // Readers per value, to spot ShuffleNet's shuffle: Reshape [N,C,H,W] -> [N,g,C/g,H,W],
    // Transpose (0,2,1,3,4), Reshape back to [N,C,H,W], each intermediate read once.
    std::vector<int> uses(nv, 0), reader(nv, -1);
    for (int n : order_) {
        for (int i : nodes_[static_cast<size_t>(n)].inputs) {
            ++uses[static_cast<size_t>(i)];
            reader[static_cast<size_t>(i)] = n;
        }
    }
    auto sole_reader = [&](int v) {
        return uses[static_cast<size_t>(v)] == 1 && !is_output[static_cast<size_t>(v)] ? reader[static_cast<size_t>(v)] : -1;
    };
    // A channel move starting at node n: the values it reads, per output channel the (read
    // value index, channel) it copies, the value it makes, and the nodes it covers after n.
    struct ChannelMove {
        std::vector<int> reads;
        std::vector<std::pair<int, int64_t>> src;
        int out = -1;
        std::vector<int> covers;
    };
    auto channel_move = [&](int n, ChannelMove* m) {
        const Node& node = nodes_[static_cast<size_t>(n)];
        std::vector<Shape> in_shapes;
        for (int i : node.inputs) in_shapes.push_back(p->shapes[static_cast<size_t>(i)]);
        if (node.outputs.size() == 1 && node.op->channel_map(in_shapes, &m->src)) {
            m->reads = node.inputs;
            m->out = node.outputs[0];
            return true;
        }
        if (node.op_name != "Reshape" || node.inputs.empty()) return false;
        const Shape& x = in_shapes[0];
        const Shape& r = p->shapes[static_cast<size_t>(node.outputs[0])];
        if (x.size() != 4 || r.size() != 5 || r[0] != x[0] || r[1] * r[2] != x[1] || r[3] != x[2] || r[4] != x[3]) {
            return false;
        }
        const int t = sole_reader(node.outputs[0]);
        if (t < 0) return false;
        const Node& tn = nodes_[static_cast<size_t>(t)];
        const std::vector<int64_t>* perm = tn.op->permutation();
        if (perm == nullptr || *perm != std::vector<int64_t>{0, 2, 1, 3, 4}) return false;
        const int back = sole_reader(tn.outputs[0]);
        if (back < 0 || nodes_[static_cast<size_t>(back)].op_name != "Reshape" ||
            p->shapes[static_cast<size_t>(nodes_[static_cast<size_t>(back)].outputs[0])] != x) {
            return false;
        }
        // Output channel c = (i, j) of [C/g, g] is input channel (j, i) of [g, C/g].
        const int64_t g = r[1], per = r[2];
        m->src.clear();
        for (int64_t c = 0; c < x[1]; ++c) m->src.emplace_back(0, (c % g) * per + c / g);
        m->reads = {node.inputs[0]};
        m->out = nodes_[static_cast<size_t>(back)].outputs[0];
        m->covers = {t, back};
        return true;
    };
    // Per gather step's output slot: the step and, per channel, the (slot, channel) it copies.
    struct GatherSource {
        size_t step;
        std::vector<std::pair<int, int64_t>> src;
    };
    std::vector<int> gather_of;  // per slot: index into gathers, or -1
    std::vector<GatherSource> gathers;
    std::vector<std::vector<size_t>> through;  // per step: the gather steps it composed past
    auto compile = [&](const std::vector<std::pair<int, int64_t>>& by_slot, std::vector<int>* ins) {
        ins->clear();
        std::vector<std::pair<int, int64_t>> by_input;
        for (const auto& e : by_slot) {
            auto it = std::find(ins->begin(), ins->end(), e.first);
            if (it == ins->end()) it = ins->insert(ins->end(), e.first);
            by_input.emplace_back(static_cast<int>(it - ins->begin()), e.second);
        }
        return std::make_shared<const NchwcGatherMap>(nchwc_gather_compile(by_input, block_));
    };

    std::vector<char> skip(nodes_.size(), 0);
    std::vector<int> want;
    for (int n : order_) {
        if (skip[static_cast<size_t>(n)]) continue;
        const Node& node = nodes_[static_cast<size_t>(n)];
        // The blocked layout holds float32 only: a node touching another dtype stays plain; an
        // op's own layout choice may still take constants of other types (an int8 convolution's
        // weights, which are never blocked themselves).
        bool all_f32 = true, f32_but_constants = true;
        for (int v : node.inputs) {
            const Value& value = values_[static_cast<size_t>(v)];
            all_f32 = all_f32 && value.dtype == DType::Float32;
            f32_but_constants = f32_but_constants && (value.dtype == DType::Float32 || value.kind == Value::Constant);
        }
        for (int v : node.outputs) {
            const bool f32 = values_[static_cast<size_t>(v)].dtype == DType::Float32;
            all_f32 = all_f32 && f32;
            f32_but_constants = f32_but_constants && f32;
        }
        ChannelMove move;
        bool any_blocked = false;
        if (block_ != 0 && all_f32 && channel_move(n, &move)) {
            for (int v : move.reads) any_blocked = any_blocked || blocked_of[static_cast<size_t>(v)] >= 0;
        }
        if (any_blocked) {
            PlanStep step;
            step.kind = PlanStep::Gather;
            step.node = move.covers.empty() ? n : move.covers.back();
            if (!move.covers.empty()) {
                step.merged = {n};
                step.merged.insert(step.merged.end(), move.covers.begin(), move.covers.end() - 1);
            }
            for (int c : move.covers) skip[static_cast<size_t>(c)] = 1;
            std::vector<std::pair<int, int64_t>> direct, composed;
            std::vector<size_t> past;
            std::vector<int> slots;
            for (int v : move.reads) slots.push_back(slot_in(v, block_));
            gather_of.resize(h.shapes.size(), -1);
            for (const auto& e : move.src) {
                const int s = slots[static_cast<size_t>(e.first)];
                direct.emplace_back(s, e.second);
                const int g = gather_of[static_cast<size_t>(s)];
                composed.push_back(g >= 0 ? gathers[static_cast<size_t>(g)].src[static_cast<size_t>(e.second)]
                                          : direct.back());
                if (g >= 0 && std::find(past.begin(), past.end(), gathers[static_cast<size_t>(g)].step) == past.end()) {
                    past.push_back(gathers[static_cast<size_t>(g)].step);
                }
            }
            // Read the earlier gathers' sources instead of their outputs when that stays cheap:
            // an output nobody else reads is then never written (dropped below).
            std::vector<int> ins;
            auto map = compile(composed, &ins);
            const bool compose = composed != direct && nchwc_gather_max_parts(*map) <= kMaxComposedParts;
            if (!compose) map = compile(direct, &ins);
            step.ins = ins;
            step.gather = map;
            step.outs = {out_slot(move.out, block_)};
            gather_of.resize(h.shapes.size(), -1);
            gather_of[static_cast<size_t>(step.outs[0])] = static_cast<int>(gathers.size());
            gathers.push_back(GatherSource{h.steps.size(), compose ? composed : direct});
            through.resize(h.steps.size() + 1);
            if (compose) through[h.steps.size()] = std::move(past);
            ++h.blocked_steps;
            finish_step(std::move(step));
            continue;
        }
        std::vector<Shape> in_shapes;
        std::vector<int> in_block;
        for (int i : node.inputs) {
            in_shapes.push_back(p->shapes[static_cast<size_t>(i)]);
            in_block.push_back(blocked_of[static_cast<size_t>(i)] >= 0 ? block_ : 0);
        }
        int out_block = 0;
        want.assign(node.inputs.size(), 0);
        if (block_ != 0 && f32_but_constants) out_block = node.op->layout(in_shapes, in_block, block_, &want);
        PlanStep step;
        step.node = n;
        const Fusion& f = fusion_[static_cast<size_t>(n)];
        std::vector<int> outs = node.outputs;
        if (f.add >= 0 && out_block != 0 && p->shapes[static_cast<size_t>(f.residual)] == p->shapes[static_cast<size_t>(outs[0])]) {
            step.kind = PlanStep::Fused;
            if (f.act >= 0) step.act = *nodes_[static_cast<size_t>(f.act)].op->activation();
            skip[static_cast<size_t>(f.add)] = 1;
            if (f.act >= 0) skip[static_cast<size_t>(f.act)] = 1;
            outs[0] = f.out;
            ++h.fused;
        }
        for (size_t k = 0; k < node.inputs.size(); ++k) step.ins.push_back(slot_in(node.inputs[k], want[k]));
        if (step.kind == PlanStep::Fused) step.residual = slot_in(f.residual, out_block);
        for (size_t k = 0; k < outs.size(); ++k) step.outs.push_back(out_slot(outs[k], k == 0 ? out_block : 0));
        if (out_block != 0) ++h.blocked_steps;
        finish_step(std::move(step));
    }

    // Drop gathers whose output nothing reads any more (every reader composed past it), last
    // first, so that a chain of them goes at once.
    std::vector<int> reads(h.shapes.size(), 0);
    for (const PlanStep& st : h.steps) {
        for (int i : st.ins) ++reads[static_cast<size_t>(i)];
        if (st.residual >= 0) ++reads[static_cast<size_t>(st.residual)];
    }
    // A dropped gather's nodes are reported as part of the first later step that composed past
    // it (the profiler and layout report show every node once); one nothing composed past
    // (an output no node reads) stays.
    std::vector<char> dead(h.steps.size(), 0);
    std::vector<size_t> heir(h.steps.size(), 0);
    through.resize(h.steps.size());
    for (size_t s = h.steps.size(); s-- > 0;) {
        const PlanStep& st = h.steps[s];
        const size_t o = st.kind == PlanStep::Gather ? static_cast<size_t>(st.outs[0]) : 0;
        if (st.kind != PlanStep::Gather || reads[o] != 0 || (o < nv && is_output[o])) continue;
        size_t r = s + 1;
        while (r < h.steps.size() && std::find(through[r].begin(), through[r].end(), s) == through[r].end()) ++r;
        if (r == h.steps.size()) continue;
        dead[s] = 1;
        heir[s] = dead[r] ? heir[r] : r;
        PlanStep& to = h.steps[heir[s]];
        to.merged.insert(to.merged.begin(), st.node);
        to.merged.insert(to.merged.begin(), st.merged.begin(), st.merged.end());
        --h.blocked_steps;
        for (int i : st.ins) --reads[static_cast<size_t>(i)];
    }
    size_t kept = 0;
    for (size_t s = 0; s < h.steps.size(); ++s) {
        if (dead[s]) continue;
        if (h.steps[s].kind == PlanStep::Gather) ++h.gathers;
        if (kept != s) h.steps[kept] = std::move(h.steps[s]);  // never a self-move: it empties
        ++kept;
    }
    h.steps.resize(kept);

    // Arena: as build_plan, over steps and slots.
    const size_t ns = h.shapes.size();
    h.arena_offset.assign(ns, -1);
    h.storage.resize(ns);
    std::vector<int> last(ns, -1);
    for (size_t s = 0; s < h.steps.size(); ++s) {
        for (int i : h.steps[s].ins) last[static_cast<size_t>(i)] = static_cast<int>(s);
        if (h.steps[s].residual >= 0) last[static_cast<size_t>(h.steps[s].residual)] = static_cast<int>(s);
    }
    for (size_t v = 0; v < ns; ++v) h.storage[v] = static_cast<int>(v);
    struct Block { size_t offset, size; int slot; };
    std::vector<Block> live;
    std::vector<int> root_last(last);
    for (size_t s = 0; s < h.steps.size(); ++s) {
        const PlanStep& st = h.steps[s];
        for (size_t k = 0; k < st.outs.size(); ++k) {
            const int o = st.outs[k];
            const size_t i = static_cast<size_t>(o);
            if (i < nv && is_output[i]) continue;  // written straight into the caller's array
            if (st.kind == PlanStep::Node && k == 0 && nodes_[static_cast<size_t>(st.node)].op->is_view()) {
                const int src = h.storage[static_cast<size_t>(st.ins[0])];
                h.storage[i] = src;
                root_last[static_cast<size_t>(src)] = std::max(root_last[static_cast<size_t>(src)], last[i]);
                continue;
            }
            const Shape& shape = h.shapes[i];
            const int64_t numel = h.block[i] != 0 ? Tensor::storage_numel_blocked(shape, h.block[i]) : shape_numel(shape);
            const size_t bytes = (static_cast<size_t>(numel) * dtype_size(h.dtype[i]) + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
            size_t at = 0;
            auto it = live.begin();
            for (; it != live.end(); ++it) {
                if (it->offset >= at + bytes) break;
                at = std::max(at, it->offset + it->size);
            }
            live.insert(it, Block{at, bytes, o});
            h.arena_offset[i] = static_cast<int64_t>(at);
            h.arena_bytes = std::max(h.arena_bytes, at + bytes);
        }
        live.erase(std::remove_if(live.begin(), live.end(), [&](const Block& b) {
            return root_last[static_cast<size_t>(b.slot)] <= static_cast<int>(s);
        }), live.end());
    }
}

}  // namespace pyengine
