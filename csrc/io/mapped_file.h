// SPDX-License-Identifier: Apache-2.0
// Read-only, shared memory mapping of a whole file (RAII). Pages are shared between processes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pyengine {

class MappedFile {
public:
    // Maps `path` read-only and shared; throws SystemError with strerror text on failure.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    // First byte of the mapping (nullptr for an empty file).
    const uint8_t* data() const { return data_; }
    // Size of the file in bytes.
    size_t size() const { return size_; }
    // Path the mapping was made from.
    const std::string& path() const { return path_; }

private:
    std::string path_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace pyengine
