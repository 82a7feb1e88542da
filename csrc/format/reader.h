// SPDX-License-Identifier: Apache-2.0
// Opens a .pyem file, validates every offset and length, and hands out zero-copy tensor views.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "format/json.h"
#include "format/tensor.h"
#include "io/mapped_file.h"

namespace pyengine {

struct TensorEntry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t offset;  // from the start of the file
    uint64_t length;
};

class PyemReader {
public:
    // Maps and validates `path`; throws ModelFormatError (damaged file) or SystemError (I/O).
    explicit PyemReader(const std::string& path);

    const std::string& path() const { return file_->path(); }
    uint32_t version_major() const { return version_major_; }
    uint32_t version_minor() const { return version_minor_; }
    // The parsed graph document.
    const json::Value& graph() const { return graph_; }
    const std::vector<TensorEntry>& tensors() const { return tensors_; }
    // A view into the mapping: no copy. The reader must outlive the view.
    Tensor view(const TensorEntry& e) const;
    // Entry by name, or nullptr.
    const TensorEntry* find(const std::string& name) const;
    // Scale and zero point of a quantized tensor (the graph's "quantization" section), or nullptr.
    const QuantParams* quant(const std::string& name) const {
        auto it = quant_.find(name);
        return it == quant_.end() ? nullptr : &it->second;
    }
    // Total bytes of tensor data.
    uint64_t data_length() const { return data_length_; }

private:
    std::unique_ptr<MappedFile> file_;
    uint32_t version_major_ = 0;
    uint32_t version_minor_ = 0;
    uint64_t data_length_ = 0;
    json::Value graph_;
    std::vector<TensorEntry> tensors_;
    std::unordered_map<std::string, size_t> by_name_;
    std::unordered_map<std::string, QuantParams> quant_;  // node-based: views keep pointers into it
};

}  // namespace pyengine
