// SPDX-License-Identifier: Apache-2.0
// The batch function for native models: Model::run straight from the worker thread, no Python.
#pragma once

#include <memory>

#include "batching/batcher.h"
#include "graph/model.h"

namespace pyengine {

// Dtype tag that native batches use for float32 tensors (TensorIn::dtype / TensorOut::dtype).
constexpr int32_t kNativeFloat32 = static_cast<int32_t>(DType::Float32);

// Runs `model` on each batch: the cached plan for the batch shapes, outputs in fresh 64-byte
// aligned buffers that the callers' output views share.
BatchFn native_batch_fn(std::shared_ptr<const Model> model);

}  // namespace pyengine
