// SPDX-License-Identifier: Apache-2.0
// The operator interface the executor runs, attribute parsing, and the op registry.
#pragma once

#include <memory>
#include <utility>
#include <set>
#include <string>
#include <vector>

#include "common.h"
#include "format/json.h"
#include "format/tensor.h"
#include "kernels/activation.h"
#include "kernels/conv2d.h"
#include "device/device.h"

namespace pyengine {

// Typed access to a node's attributes. Every getter validates; anything wrong is a
// ModelFormatError naming the node, the op, the attribute and the value found.
class Attrs {
public:
    Attrs(const json::Value* attrs, std::string node, std::string op);

    bool has(const std::string& key) const;
    int64_t get_int(const std::string& key, int64_t def) const;
    int64_t get_int_required(const std::string& key) const;
    float get_float(const std::string& key, float def) const;
    bool get_bool(const std::string& key, bool def) const;
    std::string get_string(const std::string& key, const std::string& def,
                           const std::vector<std::string>& allowed) const;
    // A list of integers; `size` < 0 means any length. `def` is used when the key is absent.
    std::vector<int64_t> get_ints(const std::string& key, int size, std::vector<int64_t> def,
                                  int64_t min_value) const;
    // A list of finite numbers; `size` < 0 means any length. Absent: empty.
    std::vector<double> get_floats(const std::string& key, int size) const;
    // The fused activation: "activation" (+ "alpha", "beta" where it needs them).
    Epilogue get_epilogue() const;
    Layout get_layout() const;

    // Throws if the node has an attribute no getter asked for (catches converter typos).
    void check_all_used() const;
    [[noreturn]] void fail(const std::string& what) const;
    const std::string& node() const { return node_; }

private:
    const json::Value* find(const std::string& key) const;
    const json::Value* attrs_;
    std::string node_;
    std::string op_;
    mutable std::set<std::string> used_;
};

// How an op runs on given input shapes, as the profiler reports it (docs/kernels.md).
struct OpRunInfo {
    std::string layout;  // layout of the activations it reads/writes ("NCHW", "NCHW16c"); "" = none
    std::string kernel;  // the kernel path that runs ("avx512 gemm", "reorder", "view")
};

// An activation's int8 grid: code = round(x / scale) + zero_point, saturated to [lo, hi].
struct CodeGrid {
    float scale = 1.0f;
    int32_t zero_point = 0, lo = 0, hi = 255;
    bool operator==(const CodeGrid& o) const {
        return scale == o.scale && zero_point == o.zero_point && lo == o.lo && hi == o.hi;
    }
};
// Bytes per pixel of an image of `channels` as u8 codes: whole blocks of 16.
inline int64_t code_pixel_stride(int64_t channels) { return (channels + 15) / 16 * 16; }

// One node's computation. Created once at load; `infer` and `run` are const and thread-safe.
class Op {
public:
    virtual ~Op() = default;
    // Output shapes from input shapes; throws InvalidArgument when the shapes do not fit.
    virtual std::vector<Shape> infer(const std::vector<Shape>& in) const = 0;
    // ---- Parameters read by value (docs/format.md "Parameter inputs") ----
    // True when input `i` is a parameter (axes, sizes, pads, shape, k...) whose value decides
    // the output shapes. The planner reads it when planning (a graph input's value is part of
    // the plan cache key) and passes it to infer_values; run reads it again (a few numbers).
    virtual bool reads_value(size_t i) const {
        (void)i;
        return false;
    }
    // False when the op reads only input i's shape, never its elements (Shape): a value the
    // planner computes then needs no value of that input.
    virtual bool reads_data(size_t i) const {
        (void)i;
        return true;
    }
    // infer, for ops with parameter inputs: `values[i]` is input i for each i with
    // reads_value(i), nullptr elsewhere. Default: infer(in).
    virtual std::vector<Shape> infer_values(const std::vector<Shape>& in,
                                            const std::vector<const Tensor*>& values) const {
        (void)values;
        return infer(in);
    }
    // Computes outputs (already allocated with the inferred shapes) from inputs.
    virtual void run(const std::vector<const Tensor*>& in, const std::vector<Tensor*>& out) const = 0;
    // Called once at load with the inputs that are constant (nullptr elsewhere).
    virtual void prepare(const std::vector<const Tensor*>& constants) { (void)constants; }
    // ---- Element types (checked once at load, in execution order) ----
    // True when input `i` may have dtype `t`. Default: float32 only.
    virtual bool takes_dtype(size_t i, DType t) const {
        (void)i;
        return t == DType::Float32;
    }
    // The dtypes of the `n_out` outputs for input dtypes `in`; throws InvalidArgument naming the
    // input and its dtype when the op does not take it. Default: every input checked with
    // takes_dtype, every output float32. Typed ops (Cast, comparisons, Gather...) override it.
    virtual std::vector<DType> infer_dtypes(const std::vector<DType>& in, size_t n_out) const;
    // True when output 0 may share the memory of input 0 (a reshape of the same bytes).
    virtual bool is_view() const { return false; }
    // Fills `step` (kind and resolved parameters) for input shapes `in` so a device executor
    // can run this op (device/device.h); false when the op has no device kernel, and the
    // executor then runs `run` on host copies of the tensors.
    virtual bool lower(const std::vector<Shape>& in, DeviceStep* step) const {
        (void)in;
        (void)step;
        return false;
    }

    // ---- The blocked layout (graph/model.cpp plans it; kernels/conv_nchwc.h) ----
    // Called once at load, after prepare, with the block of the blocked layout (0: none):
    // ops with blocked kernels get ready for it (a convolution repacks its weights).
    virtual void prepare_layout(int block) { (void)block; }
    // Called at load, after prepare and before prepare_layout, for each blocked weight the file
    // stores for this node (the node's "blocked_weights", docs/format.md): `packed` is the
    // mapped tensor for `block`, used in place when the layout's block is `block`. Throws
    // InvalidArgument saying why when it does not fit; the default takes none.
    virtual void attach_blocked_weights(int block, const Tensor& packed) {
        (void)block;
        (void)packed;
        throw InvalidArgument("this op takes no blocked weights (only an NCHW Conv2D does)");
    }
    // Bytes of the weights this op uses in the blocked layout: read from the file's mapping
    // (`mapped`) or repacked into memory at load (`copied`).
    struct BlockedWeightBytes {
        int64_t mapped = 0, copied = 0;
    };
    virtual BlockedWeightBytes blocked_weight_bytes() const { return {}; }
    // For input shapes `in` whose values have blocks `in_block` (0: plain), the block this op
    // writes its output in (0: plain, else `block`); fills `want` with the block each input
    // must have (the planner reorders a value that has another). Default: plain everywhere.
    virtual int layout(const std::vector<Shape>& in, const std::vector<int>& in_block, int block,
                       std::vector<int>* want) const {
        (void)in_block;
        (void)block;
        want->assign(in.size(), 0);
        return 0;
    }
    // True when run_fused may fold a following Add and activation into this op's blocked output.
    virtual bool fuses_residual() const { return false; }
    // run, with `residual` (same shape and block as the output) added before activation `act`.
    virtual void run_fused(const std::vector<const Tensor*>& in, const Tensor& residual, const Epilogue& act,
                           const std::vector<Tensor*>& out) const {
        (void)in;
        (void)residual;
        (void)act;
        (void)out;
    }
    // For 4-D NCHW inputs `in`: when every output channel is a copy of one input channel (Concat
    // and Slice on the channel axis), fills `src` with (input, channel) per output channel and
    // returns true; the layout pass then runs it as a blocked channel gather.
    virtual bool channel_map(const std::vector<Shape>& in, std::vector<std::pair<int, int64_t>>* src) const {
        (void)in;
        (void)src;
        return false;
    }
    // A Transpose's permutation; nullptr for other ops (the layout pass spots channel shuffles).
    virtual const std::vector<int64_t>* permutation() const { return nullptr; }
    // The activation this op applies when it is a plain activation op; nullptr otherwise.
    virtual const Epilogue* activation() const { return nullptr; }
    // ---- int8 codes between int8 ops (graph/layout_pass.cpp) ----
    // A value written by a requantizing int8 op and read only by int8 ops that quantize their
    // input onto the same grid can pass as u8 codes (NHWC pixel rows, channels padded to 16)
    // in the float value's memory: the reader skips quantizing, the writer skips dequantizing,
    // with the same results. The grid output 0 can be written on, or nullptr.
    virtual const CodeGrid* code_output() const { return nullptr; }
    // True when input 0 may come as codes on `grid`.
    virtual bool takes_codes(const CodeGrid& grid) const {
        (void)grid;
        return false;
    }
    // Called once at load, for the ops the planner paired: input 0 and/or output 0 as codes.
    virtual void use_codes(bool input, bool output) {
        (void)input;
        (void)output;
    }
    // What the profiler reports for inputs shaped `in`. The default: no layout, and the kernel
    // table in use ("avx512"), or "view" for a view; ops with several paths say which one runs.
    virtual OpRunInfo run_info(const std::vector<Shape>& in) const;
};

struct OpSpec {
    int min_inputs;
    int max_inputs;
    int outputs;
};

// Creates the op named `op` from attributes, or throws ModelFormatError for an unknown op.
std::unique_ptr<Op> op_create(const std::string& op, const Attrs& attrs, OpSpec* spec);
// Names of every op the engine runs.
std::vector<std::string> op_names();

// Helpers shared by op implementations.
// Throws InvalidArgument "input i has dtype X; it takes <takes>".
[[noreturn]] void dtype_error(size_t i, DType got, const std::string& takes);
int64_t normalize_axis(int64_t axis, size_t rank, const std::string& what);
[[noreturn]] void shape_error(const std::string& what);
// Copies the elements (`elem` bytes each) of a tensor shaped `out` into `dst`: element i reads
// src[offset + Σ i[d] · strides[d]] (element strides; 0 repeats, negative walks back).
void copy_strided(const void* src, size_t elem, const Shape& out, int64_t offset, const std::vector<int64_t>& strides,
                  void* dst);
// Row-major element strides of `s`.
std::vector<int64_t> row_strides(const Shape& s);
// The integers of parameter input `t` (int32 or int64), named `what` in errors; at most
// `max_count` of them (-1: any number).
std::vector<int64_t> param_ints(const Tensor& t, const std::string& what, int64_t max_count);
// infer_dtypes for an op whose output has input 0's dtype and whose inputs `int_params` (those
// present) are integer parameters: InvalidArgument naming any of them that is not int32/int64.
std::vector<DType> dtype_of_input0(const std::vector<DType>& in, const std::vector<size_t>& int_params);
// The numbers of parameter input `t` (float32 or float64), named `what` in errors.
std::vector<double> param_floats(const Tensor& t, const std::string& what, int64_t max_count);

}  // namespace pyengine
