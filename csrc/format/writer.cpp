// SPDX-License-Identifier: Apache-2.0
#include "format/writer.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include <unordered_set>

#include "common.h"
#include "format/json.h"
#include "format/pyem.h"

namespace pyengine {

namespace {

void put_u64(std::string& b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) b[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
void put_u32(std::string& b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}
void append_u64(std::string& b, uint64_t v) {
    size_t at = b.size();
    b.resize(at + 8);
    put_u64(b, at, v);
}
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

class File {
public:
    explicit File(const std::string& path) : path_(path) {
        fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd_ < 0) throw SystemError(str("cannot create '", path, "': ", std::strerror(errno)));
    }
    ~File() { if (fd_ >= 0) ::close(fd_); }
    void write(const void* p, size_t n) {
        const char* c = static_cast<const char*>(p);
        while (n > 0) {
            ssize_t w = ::write(fd_, c, n);
            if (w < 0) {
                if (errno == EINTR) continue;
                throw SystemError(str("cannot write '", path_, "': ", std::strerror(errno)));
            }
            c += w;
            n -= static_cast<size_t>(w);
        }
    }
    void zeros(uint64_t n) {  // 64-bit: file offsets, also on 32-bit targets
        static const char z[pyem::kDataAlignment] = {};
        while (n > 0) {
            const size_t k = n < sizeof z ? static_cast<size_t>(n) : sizeof z;
            write(z, k);
            n -= k;
        }
    }
    void sync_and_close() {
        if (::fsync(fd_) != 0) throw SystemError(str("cannot fsync '", path_, "': ", std::strerror(errno)));
        if (::close(fd_) != 0) { fd_ = -1; throw SystemError(str("cannot close '", path_, "': ", std::strerror(errno))); }
        fd_ = -1;
    }

private:
    std::string path_;
    int fd_ = -1;
};

}  // namespace

void write_pyem(const std::string& path, const std::string& graph_json,
                const std::vector<TensorToWrite>& tensors) {
    // Refuse what the reader would refuse, so a written file always loads.
    try {
        json::Value g = json::parse(graph_json.data(), graph_json.size());
        if (!g.is_object()) throw InvalidArgument("graph JSON must be an object");
    } catch (const ModelFormatError& e) {
        throw InvalidArgument(str("graph JSON: ", e.what()));
    }
    if (graph_json.size() > pyem::kMaxGraphLength) throw InvalidArgument("graph JSON is too large");

    std::string table;
    std::vector<uint64_t> offsets;
    uint64_t data_len = 0;
    std::unordered_set<std::string> names;
    for (const auto& t : tensors) {
        if (t.name.empty() || t.name.size() > pyem::kMaxNameLength) {
            throw InvalidArgument(str("tensor name '", t.name, "' must be 1..", pyem::kMaxNameLength, " bytes"));
        }
        if (!json::valid_utf8(t.name)) throw InvalidArgument("tensor names must be valid UTF-8");
        if (!names.insert(t.name).second) throw InvalidArgument(str("tensor name '", t.name, "' appears twice"));
        if (t.shape.size() > kMaxRank) throw InvalidArgument(str("tensor '", t.name, "' has rank above ", kMaxRank));
        for (int64_t d : t.shape) {
            if (d < 0) throw InvalidArgument(str("tensor '", t.name, "' has negative dimension ", d));
        }
        const uint64_t need = static_cast<uint64_t>(shape_numel(t.shape)) * dtype_size(t.dtype);
        if (need != t.length) {
            throw InvalidArgument(str("tensor '", t.name, "' has ", t.length, " bytes, shape ",
                                      shape_str(t.shape), " needs ", need));
        }
        size_t at = table.size();
        table.resize(at + pyem::kTableEntryFixed);
        put_u32(table, at, static_cast<uint32_t>(t.name.size()));
        table[at + 4] = static_cast<char>(t.dtype);
        table[at + 5] = static_cast<char>(t.shape.size());
        for (int64_t d : t.shape) append_u64(table, static_cast<uint64_t>(d));
        data_len = align_up(data_len, pyem::kDataAlignment);
        offsets.push_back(data_len);
        append_u64(table, data_len);
        append_u64(table, t.length);
        table += t.name;
        table.resize(static_cast<size_t>(align_up(table.size(), 8)), '\0');
        data_len += t.length;
    }
    data_len = align_up(data_len, pyem::kDataAlignment);

    const uint64_t graph_off = pyem::kHeaderSize;
    const uint64_t table_off = align_up(graph_off + graph_json.size(), 8);
    const uint64_t data_off = align_up(table_off + table.size(), pyem::kDataAlignment);
    const uint64_t file_len = data_off + data_len;

    std::string header(pyem::kHeaderSize, '\0');
    std::memcpy(&header[0], pyem::kMagic, sizeof pyem::kMagic);
    put_u32(header, pyem::kOffVersionMajor, pyem::kVersionMajor);
    put_u32(header, pyem::kOffVersionMinor, pyem::kVersionMinor);
    put_u64(header, pyem::kOffGraphOffset, graph_off);
    put_u64(header, pyem::kOffGraphLength, graph_json.size());
    put_u64(header, pyem::kOffTableOffset, table_off);
    put_u64(header, pyem::kOffTableLength, table.size());
    put_u64(header, pyem::kOffTensorCount, tensors.size());
    put_u64(header, pyem::kOffDataOffset, data_off);
    put_u64(header, pyem::kOffDataLength, data_len);
    put_u64(header, pyem::kOffFileLength, file_len);

    const std::string tmp = str(path, ".tmp.", ::getpid());
    try {
        File f(tmp);
        f.write(header.data(), header.size());
        f.write(graph_json.data(), graph_json.size());
        f.zeros(table_off - (graph_off + graph_json.size()));
        f.write(table.data(), table.size());
        f.zeros(data_off - (table_off + table.size()));
        uint64_t pos = 0;
        for (size_t i = 0; i < tensors.size(); ++i) {
            f.zeros(offsets[i] - pos);
            f.write(tensors[i].data, tensors[i].length);
            pos = offsets[i] + tensors[i].length;
        }
        f.zeros(data_len - pos);
        f.sync_and_close();
        if (::rename(tmp.c_str(), path.c_str()) != 0) {
            throw SystemError(str("cannot rename '", tmp, "' to '", path, "': ", std::strerror(errno)));
        }
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
}

}  // namespace pyengine
