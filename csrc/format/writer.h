// SPDX-License-Identifier: Apache-2.0
// Writes a .pyem file: header, graph JSON, tensor table, 64-byte-aligned data.
#pragma once

#include <string>
#include <vector>

#include "format/tensor.h"

namespace pyengine {

struct TensorToWrite {
    std::string name;
    DType dtype;
    Shape shape;
    const void* data;  // little-endian, numel * dtype_size bytes
    size_t length;
};

// Writes atomically (temporary file, fsync, rename). Throws InvalidArgument for bad input and
// SystemError for I/O failures.
void write_pyem(const std::string& path, const std::string& graph_json,
                const std::vector<TensorToWrite>& tensors);

}  // namespace pyengine
