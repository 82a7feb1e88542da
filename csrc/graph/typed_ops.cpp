// SPDX-License-Identifier: Apache-2.0
#include "graph/typed_ops.h"

#include <cmath>
#include <type_traits>

#include "common.h"
#include "graph/broadcast.h"
#include "graph/dtype_dispatch.h"

namespace pyengine {

namespace {

template <class T>
T integer_pow(T x, T e) {
    if (e < T(0)) return x == T(1) ? T(1) : T(0);
    T r = T(1);
    for (; e > T(0); e = static_cast<T>(e - T(1))) r = static_cast<T>(r * x);
    return r;
}

template <class T>
T apply_binary(TypedFn fn, T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
        switch (fn) {
            case TypedFn::Add: return a + b;
            case TypedFn::Sub: return a - b;
            case TypedFn::Mul: return a * b;
            case TypedFn::Div: return a / b;
            case TypedFn::Min: return std::isnan(a) || a < b ? a : b;
            case TypedFn::Max: return std::isnan(a) || a > b ? a : b;
            case TypedFn::Pow: return std::pow(a, b);
            case TypedFn::Fmod: return std::fmod(a, b);
            case TypedFn::Mod: {
                const T r = std::fmod(a, b);
                return r != T(0) && ((r < T(0)) != (b < T(0))) ? r + b : r;
            }
            default: break;
        }
    } else {
        if ((fn == TypedFn::Div || fn == TypedFn::Mod || fn == TypedFn::Fmod) && b == T(0)) {
            throw InvalidArgument("integer division by zero");
        }
        switch (fn) {
            case TypedFn::Add: return static_cast<T>(a + b);
            case TypedFn::Sub: return static_cast<T>(a - b);
            case TypedFn::Mul: return static_cast<T>(a * b);
            case TypedFn::Div: return static_cast<T>(a / b);
            case TypedFn::Min: return a < b ? a : b;
            case TypedFn::Max: return a > b ? a : b;
            case TypedFn::Pow: return integer_pow(a, b);
            case TypedFn::BitAnd: return static_cast<T>(a & b);
            case TypedFn::BitOr: return static_cast<T>(a | b);
            case TypedFn::BitXor: return static_cast<T>(a ^ b);
            // A shift out of [0, width) shifts every bit out (ONNX): 0, or the sign for a right
            // shift of a negative value; never undefined behaviour.
            case TypedFn::ShiftLeft:
                return b >= T(0) && static_cast<uint64_t>(b) < sizeof(T) * 8 ? static_cast<T>(a << b) : T(0);
            case TypedFn::ShiftRight:
                if (b >= T(0) && static_cast<uint64_t>(b) < sizeof(T) * 8) return static_cast<T>(a >> b);
                return a < T(0) ? static_cast<T>(-1) : T(0);
            case TypedFn::Fmod: return static_cast<T>(a % b);
            case TypedFn::Mod: {
                const T r = static_cast<T>(a % b);
                if constexpr (std::is_signed_v<T>) {
                    return r != T(0) && ((r < T(0)) != (b < T(0))) ? static_cast<T>(r + b) : r;
                }
                return r;
            }
            default: break;
        }
    }
    return a;
}

template <class T>
T apply_unary(TypedFn fn, T x) {
    switch (fn) {
        case TypedFn::Abs:
            if constexpr (std::is_signed_v<T>) return x < T(0) ? static_cast<T>(-x) : x;
            return x;
        case TypedFn::Neg:
            if constexpr (std::is_signed_v<T>) return static_cast<T>(-x);
            return static_cast<T>(T(0) - x);
        case TypedFn::Sign: return static_cast<T>((T(0) < x) - (x < T(0)));
        case TypedFn::BitNot:
            if constexpr (std::is_integral_v<T>) return static_cast<T>(~x);
            return x;
        default: return x;
    }
}

}  // namespace

std::vector<DType> numeric_dtypes(const std::vector<DType>& in) {
    if (in[0] == DType::Bool) dtype_error(0, in[0], "a number type");
    for (size_t i = 1; i < in.size(); ++i) {
        if (in[i] != in[0]) dtype_error(i, in[i], str(dtype_name(in[0]), " (input 0's dtype)"));
    }
    return {in[0]};
}

void typed_binary(TypedFn fn, const Tensor& a, const Tensor& b, const Tensor& y) {
    dispatch_dtype(a.dtype, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, bool>) {
            throw InvalidArgument("arithmetic on bool");
        } else {
            const T* pa = a.as<T>();
            const T* pb = b.as<T>();
            T* py = y.as<T>();
            const Shape& os = y.shape;
            for_each_broadcast(os, broadcast_strides(a.shape, os), broadcast_strides(b.shape, os),
                               [&](int64_t e, int64_t ia, int64_t ib) { py[e] = apply_binary<T>(fn, pa[ia], pb[ib]); });
        }
    });
}

void typed_unary(TypedFn fn, const Tensor& x, const Tensor& y) {
    dispatch_dtype(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, bool>) {
            throw InvalidArgument("arithmetic on bool");
        } else {
            const T* px = x.as<T>();
            T* py = y.as<T>();
            const int64_t n = x.numel();
            for (int64_t i = 0; i < n; ++i) py[i] = apply_unary<T>(fn, px[i]);
        }
    });
}

void typed_where(const Tensor& c, const Tensor& a, const Tensor& b, const Tensor& y) {
    const Shape& os = y.shape;
    const std::vector<std::vector<int64_t>> strides = {broadcast_strides(c.shape, os), broadcast_strides(a.shape, os),
                                                       broadcast_strides(b.shape, os)};
    dispatch_dtype(a.dtype, [&](auto tag) {
        using T = decltype(tag);
        const T* pa = a.as<T>();
        const T* pb = b.as<T>();
        T* py = y.as<T>();
        if (c.dtype == DType::Bool) {
            const bool* pc = c.as<bool>();
            for_each_broadcast_n(os, strides, [&](int64_t e, const int64_t* off) { py[e] = pc[off[0]] ? pa[off[1]] : pb[off[2]]; });
        } else {
            const float* pc = c.f32();
            for_each_broadcast_n(os, strides,
                                 [&](int64_t e, const int64_t* off) { py[e] = pc[off[0]] != 0.0f ? pa[off[1]] : pb[off[2]]; });
        }
    });
}

}  // namespace pyengine
