// SPDX-License-Identifier: Apache-2.0
// Errors shared by every layer of the core; the Python binding maps each to an exception type.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pyengine maps little-endian .pyem weights in place and supports little-endian hosts only"
#endif  // defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__

namespace pyengine {

// A model file or graph that cannot be used: bad magic, bad offsets, bad graph. -> pyengine.ModelFormatError
class ModelFormatError : public std::runtime_error {
public:
    explicit ModelFormatError(const std::string& what) : std::runtime_error(what) {}
};

// A caller passed something the model cannot take (shape, dtype, name). -> ValueError
class InvalidArgument : public std::invalid_argument {
public:
    explicit InvalidArgument(const std::string& what) : std::invalid_argument(what) {}
};

// An operating-system call failed (open, mmap); the message carries strerror. -> OSError
class SystemError : public std::runtime_error {
public:
    explicit SystemError(const std::string& what, int code = 0) : std::runtime_error(what), code_(code) {}
    // errno of the failed call (0 when there was none), so Python can raise FileNotFoundError etc.
    int code() const { return code_; }

private:
    int code_;
};

// A device was asked for that this build or machine cannot provide (no CUDA support, no GPU,
// a GPU not granted). -> pyengine.DeviceUnavailableError (a RuntimeError)
class DeviceUnavailable : public std::runtime_error {
public:
    explicit DeviceUnavailable(const std::string& what) : std::runtime_error(what) {}
};

// Builds a message from streamable parts: str("node '", name, "' has ", n, " inputs").
template <typename... Args>
std::string str(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}

// a * b, or false when it overflows int64 (shape products come from untrusted files).
inline bool mul_overflow(int64_t a, int64_t b, int64_t* out) {
    return __builtin_mul_overflow(a, b, out);
}
inline bool add_overflow(uint64_t a, uint64_t b, uint64_t* out) {
    return __builtin_add_overflow(a, b, out);
}

// The pause hint for a spin-wait loop (lets the sibling hyperthread run, saves power).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif  // defined(__x86_64__) || defined(__i386__)
}

}  // namespace pyengine
