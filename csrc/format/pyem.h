// SPDX-License-Identifier: Apache-2.0
// Layout constants of the .pyem file (docs/format.md is the specification).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyengine::pyem {

constexpr uint8_t kMagic[8] = {0x89, 'P', 'Y', 'E', 'M', '\r', '\n', 0x1A};
constexpr uint32_t kVersionMajor = 1;
constexpr uint32_t kVersionMinor = 2;  // 1.1: Conv2D "blocked_weights" (optional node key); 1.2: parameter inputs
constexpr size_t kHeaderSize = 128;
constexpr size_t kDataAlignment = 64;
constexpr size_t kTableEntryFixed = 8;      // name_length u32, dtype u8, ndim u8, reserved u16
constexpr size_t kMaxNameLength = 4096;
constexpr uint64_t kMaxGraphLength = 256ull << 20;  // JSON text; graphs are small next to weights

// Header field offsets (all little-endian).
enum HeaderField : size_t {
    kOffMagic = 0,
    kOffVersionMajor = 8,   // u32
    kOffVersionMinor = 12,  // u32
    kOffGraphOffset = 16,   // u64
    kOffGraphLength = 24,   // u64
    kOffTableOffset = 32,   // u64
    kOffTableLength = 40,   // u64
    kOffTensorCount = 48,   // u64
    kOffDataOffset = 56,    // u64
    kOffDataLength = 64,    // u64
    kOffFileLength = 72,    // u64
};

// Reads little-endian integers from unaligned bytes.
inline uint64_t load_u64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
inline uint32_t load_u32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
           (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint16_t load_u16(const uint8_t* p) {
    return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

}  // namespace pyengine::pyem
