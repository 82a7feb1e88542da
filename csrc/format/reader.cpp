// SPDX-License-Identifier: Apache-2.0
#include "format/reader.h"

#include <algorithm>
#include <cstring>

#include "common.h"
#include "format/pyem.h"
#include "format/quant_params.h"

namespace pyengine {

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
    throw ModelFormatError(str("'", path, "' is not a valid .pyem model: ", what));
}

// [offset, offset+length) lies inside [0, size): overflow-safe.
bool in_bounds(uint64_t offset, uint64_t length, uint64_t size) {
    return offset <= size && length <= size - offset;
}

}  // namespace

PyemReader::PyemReader(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
    const uint8_t* base = file_->data();
    const uint64_t size = file_->size();
    if (size < pyem::kHeaderSize) {
        bad(path, str("file is ", size, " bytes, shorter than the ", pyem::kHeaderSize,
                      "-byte header (truncated or not a model)"));
    }
    if (std::memcmp(base, pyem::kMagic, sizeof pyem::kMagic) != 0) {
        bad(path, "wrong magic bytes (expected \\x89PYEM\\r\\n\\x1a)");
    }
    version_major_ = pyem::load_u32(base + pyem::kOffVersionMajor);
    version_minor_ = pyem::load_u32(base + pyem::kOffVersionMinor);
    if (version_major_ != pyem::kVersionMajor) {
        bad(path, str("format version ", version_major_, ".", version_minor_,
                      " is not supported (this pyengine reads ", pyem::kVersionMajor,
                      ".x); ", version_major_ > pyem::kVersionMajor ? "upgrade pyengine" : "reconvert the model"));
    }
    const uint64_t graph_off = pyem::load_u64(base + pyem::kOffGraphOffset);
    const uint64_t graph_len = pyem::load_u64(base + pyem::kOffGraphLength);
    const uint64_t table_off = pyem::load_u64(base + pyem::kOffTableOffset);
    const uint64_t table_len = pyem::load_u64(base + pyem::kOffTableLength);
    const uint64_t count = pyem::load_u64(base + pyem::kOffTensorCount);
    const uint64_t data_off = pyem::load_u64(base + pyem::kOffDataOffset);
    data_length_ = pyem::load_u64(base + pyem::kOffDataLength);
    const uint64_t file_len = pyem::load_u64(base + pyem::kOffFileLength);

    if (file_len != size) {
        bad(path, str("header says the file is ", file_len, " bytes but it is ", size,
                      " (truncated or appended to)"));
    }
    struct Section { const char* name; uint64_t off, len; };
    Section sections[] = {{"graph", graph_off, graph_len},
                          {"tensor table", table_off, table_len},
                          {"data", data_off, data_length_}};
    for (const auto& s : sections) {
        if (s.off < pyem::kHeaderSize || !in_bounds(s.off, s.len, size)) {
            bad(path, str(s.name, " section [", s.off, ", +", s.len, ") lies outside the file (",
                          size, " bytes) or inside the header"));
        }
    }
    for (size_t i = 0; i < 3; ++i) {
        for (size_t j = i + 1; j < 3; ++j) {
            const auto& a = sections[i];
            const auto& b = sections[j];
            if (a.len && b.len && a.off < b.off + b.len && b.off < a.off + a.len) {
                bad(path, str(a.name, " and ", b.name, " sections overlap"));
            }
        }
    }
    if (data_off % pyem::kDataAlignment != 0) {
        bad(path, str("data section offset ", data_off, " is not 64-byte aligned"));
    }
    if (graph_len == 0 || graph_len > pyem::kMaxGraphLength) {
        bad(path, str("graph section length ", graph_len, " is out of range (1..",
                      pyem::kMaxGraphLength, ")"));
    }

    // Tensor table: variable-length records, each checked before it is read.
    const uint8_t* t = base + table_off;
    uint64_t pos = 0;
    // Every record takes at least 24 bytes, which bounds `count` before any allocation.
    if (count > table_len / 24) {
        bad(path, str("tensor count ", count, " does not fit in a ", table_len, "-byte table"));
    }
    tensors_.reserve(static_cast<size_t>(count));
    for (uint64_t i = 0; i < count; ++i) {
        if (!in_bounds(pos, pyem::kTableEntryFixed, table_len)) bad(path, str("tensor table entry ", i, " is truncated"));
        const uint32_t name_len = pyem::load_u32(t + pos);
        const uint8_t dtype = t[pos + 4];
        const uint8_t ndim = t[pos + 5];
        pos += pyem::kTableEntryFixed;
        if (name_len == 0 || name_len > pyem::kMaxNameLength) {
            bad(path, str("tensor table entry ", i, " has name length ", name_len, " (1..", pyem::kMaxNameLength, ")"));
        }
        if (ndim > kMaxRank) bad(path, str("tensor table entry ", i, " has rank ", int(ndim), " (at most ", kMaxRank, ")"));
        const uint64_t rest = uint64_t(ndim) * 8 + 16 + name_len;
        if (!in_bounds(pos, rest, table_len)) bad(path, str("tensor table entry ", i, " is truncated"));
        TensorEntry e;
        e.dtype = static_cast<DType>(dtype);
        int64_t numel = 1;
        for (uint8_t d = 0; d < ndim; ++d) {
            const int64_t dim = static_cast<int64_t>(pyem::load_u64(t + pos));
            pos += 8;
            if (dim < 0) bad(path, str("tensor table entry ", i, " has negative dimension ", dim));
            if (mul_overflow(numel, dim, &numel)) bad(path, str("tensor table entry ", i, " shape product overflows"));
            e.shape.push_back(dim);
        }
        const uint64_t rel_off = pyem::load_u64(t + pos);
        e.length = pyem::load_u64(t + pos + 8);
        pos += 16;
        e.name.assign(reinterpret_cast<const char*>(t + pos), name_len);
        pos += name_len;
        if (!json::valid_utf8(e.name)) bad(path, str("tensor table entry ", i, " name is not valid UTF-8"));
        if (!dtype_valid(dtype)) {
            bad(path, str("tensor '", e.name, "' (table entry ", i, ") has unknown dtype code ", int(dtype), " (1..",
                          int(kDTypeLast), ", docs/format.md)"));
        }
        pos = (pos + 7) & ~uint64_t(7);
        int64_t nbytes = 0;
        if (mul_overflow(numel, static_cast<int64_t>(dtype_size(e.dtype)), &nbytes)) {
            bad(path, str("tensor '", e.name, "' byte size overflows"));
        }
        if (static_cast<uint64_t>(nbytes) != e.length) {
            bad(path, str("tensor '", e.name, "' has length ", e.length, " but its shape ",
                          shape_str(e.shape), " of ", dtype_name(e.dtype), " needs ", nbytes));
        }
        if (rel_off % pyem::kDataAlignment != 0) {
            bad(path, str("tensor '", e.name, "' offset ", rel_off, " is not 64-byte aligned"));
        }
        if (!in_bounds(rel_off, e.length, data_length_)) {
            bad(path, str("tensor '", e.name, "' [", rel_off, ", +", e.length,
                          ") lies past the end of the data section (", data_length_, " bytes)"));
        }
        e.offset = data_off + rel_off;
        if (!by_name_.emplace(e.name, tensors_.size()).second) {
            bad(path, str("tensor name '", e.name, "' appears twice"));
        }
        tensors_.push_back(std::move(e));
    }
    // Overlapping tensors would let one write alias another's weights; refuse them.
    std::vector<const TensorEntry*> sorted;
    for (const auto& e : tensors_) if (e.length) sorted.push_back(&e);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < sorted.size(); ++i) {
        if (sorted[i - 1]->offset + sorted[i - 1]->length > sorted[i]->offset) {
            bad(path, str("tensors '", sorted[i - 1]->name, "' and '", sorted[i]->name, "' overlap"));
        }
    }

    try {
        // graph_len was checked against the mapped size (a size_t) above.
        graph_ = json::parse(reinterpret_cast<const char*>(base + graph_off), static_cast<size_t>(graph_len));
    } catch (const ModelFormatError& e) {
        bad(path, str("graph section: ", e.what()));
    }
    if (!graph_.is_object()) bad(path, "graph section is not a JSON object");
    try {
        quant_ = parse_quantization(graph_, [this](const std::string& name, DType* dtype, Shape* shape) {
            const TensorEntry* e = find(name);
            if (e == nullptr) return false;
            *dtype = e->dtype;
            *shape = e->shape;
            return true;
        });
    } catch (const ModelFormatError& e) {
        bad(path, e.what());
    }
}

Tensor PyemReader::view(const TensorEntry& e) const {
    Tensor t;
    t.data = const_cast<uint8_t*>(file_->data() + e.offset);  // read-only mapping: never written
    t.dtype = e.dtype;
    t.shape = e.shape;
    t.quant = quant(e.name);
    return t;
}

const TensorEntry* PyemReader::find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace pyengine
