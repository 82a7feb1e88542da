// SPDX-License-Identifier: Apache-2.0
#include "platform/cpu.h"

#include <cstring>
#include <thread>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif  // defined(__x86_64__) || defined(__i386__)
#if defined(__arm__) || defined(__aarch64__)
#include <sys/auxv.h>
#if defined(__arm__)
#include <asm/hwcap.h>
#endif  // defined(__arm__)
#endif  // defined(__arm__) || defined(__aarch64__)

namespace pyengine {

namespace {

#if defined(__x86_64__) || defined(__i386__)
uint64_t read_xcr0() {
    uint32_t eax = 0, edx = 0;
    // xgetbv is only legal once cpuid reports OSXSAVE; the caller checks first.
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<uint64_t>(edx) << 32) | eax;
}

void detect_x86(CpuFeatures& f) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const bool osxsave = (c & bit_OSXSAVE) != 0;
    const bool cpu_avx = (c & bit_AVX) != 0;
    f.fma = (c & bit_FMA) != 0;
    f.f16c = (c & bit_F16C) != 0;
    bool os_ymm = false, os_zmm = false, os_tiles = false;
    if (osxsave) {
        const uint64_t xcr0 = read_xcr0();
        os_ymm = (xcr0 & 0x6) == 0x6;     // SSE and AVX state
        os_zmm = (xcr0 & 0xE6) == 0xE6;   // plus opmask and ZMM state
        os_tiles = (xcr0 & 0x60000) == 0x60000;  // XTILECFG and XTILEDATA (bits 17, 18)
    }
    f.avx = cpu_avx && os_ymm;
    if (__get_cpuid_max(0, nullptr) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        const unsigned subleaves = a;
        f.avx2 = f.avx && (b & bit_AVX2) != 0;
        f.avx512f = os_zmm && (b & bit_AVX512F) != 0;
        f.avx512bw = f.avx512f && (b & bit_AVX512BW) != 0;
        f.avx512_vnni = f.avx512f && (c & (1u << 11)) != 0;  // CPUID.7.0:ECX bit 11
        // CPUID.7.0:EDX bit 24 AMX-TILE, bit 25 AMX-INT8
        f.amx_int8 = os_tiles && f.avx512_vnni && (d & (1u << 24)) != 0 && (d & (1u << 25)) != 0;
        if (subleaves >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            f.avx_vnni = f.avx2 && (a & (1u << 4)) != 0;  // CPUID.7.1:EAX bit 4
        }
    }
    if (!f.avx) f.fma = f.f16c = false;
    unsigned brand[12] = {};
    if (__get_cpuid_max(0x80000000, nullptr) >= 0x80000004) {
        for (unsigned i = 0; i < 3; ++i) {
            __get_cpuid(0x80000002 + i, &brand[4 * i], &brand[4 * i + 1], &brand[4 * i + 2], &brand[4 * i + 3]);
        }
        char text[49] = {};
        std::memcpy(text, brand, 48);
        f.model = text;
        while (!f.model.empty() && f.model.back() == ' ') f.model.pop_back();
        size_t start = f.model.find_first_not_of(' ');
        f.model = start == std::string::npos ? "" : f.model.substr(start);
    }
}
#endif  // defined(__x86_64__) || defined(__i386__)

CpuFeatures detect() {
    CpuFeatures f;
    struct utsname u {};
    if (::uname(&u) == 0) f.arch = u.machine;
    long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    f.cores = n > 0 ? static_cast<int>(n) : 1;
#if defined(__x86_64__) || defined(__i386__)
    detect_x86(f);
#elif defined(__aarch64__)
    f.neon = true;  // Advanced SIMD is mandatory on AArch64
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif  // !HWCAP_ASIMDDP
    f.asimddp = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__arm__)
    f.neon = (getauxval(AT_HWCAP) & HWCAP_NEON) != 0;
#endif  // defined(__x86_64__) || defined(__i386__)
    return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

bool cpu_support_x86_avx2() {
    const auto& f = cpu_features();
    return f.avx2 && f.fma;
}

bool cpu_support_x86_avx512() {
    const auto& f = cpu_features();
    return f.avx512f && f.avx2 && f.fma;
}

bool cpu_support_x86_avx512_vnni() {
    const auto& f = cpu_features();
    return cpu_support_x86_avx512() && f.avx512bw && f.avx512_vnni;
}

bool cpu_support_x86_amx_int8() {
#if defined(__x86_64__) && defined(SYS_arch_prctl)
    // Linux hands out the 8 KiB tile state only on request; without it the first tile
    // instruction faults. The grant holds for the whole process and its children.
    static const bool granted = [] {
        if (!cpu_features().amx_int8) return false;
        constexpr int kArchReqXcompPerm = 0x1023, kArchGetXcompPerm = 0x1022, kXfeatureXtiledata = 18;
        if (::syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
        unsigned long features = 0;
        return ::syscall(SYS_arch_prctl, kArchGetXcompPerm, &features) == 0 &&
               (features & (1ul << kXfeatureXtiledata)) != 0;
    }();
    return granted;
#else
    return false;
#endif  // defined(__x86_64__) && defined(SYS_arch_prctl)
}

bool cpu_support_arm_neon() { return cpu_features().neon; }

}  // namespace pyengine
