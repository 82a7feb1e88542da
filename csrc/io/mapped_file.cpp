// SPDX-License-Identifier: Apache-2.0
#include "io/mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

namespace pyengine {

MappedFile::MappedFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        throw SystemError(str("cannot open '", path, "': ", std::strerror(err)), err);
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        throw SystemError(str("cannot stat '", path, "': ", std::strerror(err)), err);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw SystemError(str("'", path, "' is not a regular file"), EISDIR);
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            int err = errno;
            ::close(fd);
            throw SystemError(str("cannot map '", path, "': ", std::strerror(err)), err);
        }
        data_ = static_cast<const uint8_t*>(p);
        // No madvise: the default readahead suits both the first pass over the weights and
        // repeated calls; MAP_POPULATE would make loading cost proportional to model size.
    }
    ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) {
        ::munmap(const_cast<uint8_t*>(data_), size_);
    }
}

}  // namespace pyengine
