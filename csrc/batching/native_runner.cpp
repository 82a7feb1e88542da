// SPDX-License-Identifier: Apache-2.0
#include "batching/native_runner.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "common.h"

namespace pyengine {

BatchFn native_batch_fn(std::shared_ptr<const Model> model) {
    if (!model) throw InvalidArgument("native_batch_fn needs a model");
    if (!model->value_inputs().empty()) {
        const TensorSpec& t = model->inputs()[static_cast<size_t>(model->value_inputs()[0])];
        throw InvalidArgument(str("native batching stacks requests along the batch; input '", t.name,
                                  "' sets output shapes by its value (call predict without batching)"));
    }
    for (const auto* specs : {&model->inputs(), &model->outputs()}) {
        for (const TensorSpec& t : *specs) {
            if (t.dtype != DType::Float32) {
                throw InvalidArgument(str("native batching serves float32 models; '", t.name, "' is ", dtype_name(t.dtype),
                                          " (call predict without batching)"));
            }
        }
    }
    return [model](const std::vector<TensorIn>& inputs, int64_t /*rows*/) {
        std::vector<Shape> shapes;
        std::vector<const void*> in_ptrs;
        shapes.reserve(inputs.size());
        in_ptrs.reserve(inputs.size());
        for (const TensorIn& t : inputs) {
            if (t.dtype != kNativeFloat32 || t.itemsize != sizeof(float)) {
                throw InvalidArgument("native batches take float32 inputs only");
            }
            shapes.push_back(t.shape);
            in_ptrs.push_back(t.data);
        }
        std::shared_ptr<const Plan> plan = model->plan(shapes);
        std::vector<TensorOut> outs;
        std::vector<void*> out_ptrs;
        for (const Shape& s : plan->output_shapes) {
            const size_t bytes = static_cast<size_t>(shape_numel(s)) * sizeof(float);
            void* p = std::aligned_alloc(64, std::max<size_t>((bytes + 63) / 64 * 64, 64));
            if (p == nullptr) throw std::bad_alloc();
            TensorOut o;
            o.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
            o.data = p;
            o.dtype = kNativeFloat32;
            o.itemsize = sizeof(float);
            o.shape = s;
            out_ptrs.push_back(p);
            outs.push_back(std::move(o));
        }
        model->run(*plan, in_ptrs, out_ptrs);
        return outs;
    };
}

}  // namespace pyengine
