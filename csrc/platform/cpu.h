// SPDX-License-Identifier: Apache-2.0
// CPU features, read once and cached.
#pragma once

#include <string>

namespace pyengine {

struct CpuFeatures {
    std::string arch;   // "x86_64", "aarch64", "armv7l", ...
    std::string model;  // brand string where the CPU gives one
    bool avx = false;
    bool avx2 = false;
    bool fma = false;
    bool f16c = false;
    bool avx512f = false;
    bool avx512bw = false;
    bool avx512_vnni = false;  // vpdpbusd on zmm (the int8 GEMM)
    bool avx_vnni = false;     // vpdpbusd on ymm, VEX-encoded (AVX-VNNI: Alder Lake and later)
    bool amx_int8 = false;     // AMX tiles with tdpbusd, the OS saving their state (Sapphire Rapids and later)
    bool asimddp = false;      // ARMv8.2 sdot/udot (HWCAP_ASIMDDP)
    bool neon = false;
    int cores = 1;  // online logical CPUs
};

// Read once: cpuid + XCR0 on x86 (the OS must have enabled AVX state), getauxval on ARM.
const CpuFeatures& cpu_features();

// True when the CPU and OS can run the AVX2+FMA kernels.
bool cpu_support_x86_avx2();
// True when the CPU and OS can run the AVX-512F kernels (which also use AVX2 and FMA).
bool cpu_support_x86_avx512();
// True when the CPU and OS can run the AVX-512 VNNI int8 GEMM (AVX-512F, BW and VNNI).
bool cpu_support_x86_avx512_vnni();
// True when the AMX int8 GEMM may run: the CPU and OS have AMX-INT8 and Linux granted this
// process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, asked once, on the first call).
bool cpu_support_x86_amx_int8();
// True when the CPU has NEON (always on aarch64).
bool cpu_support_arm_neon();

}  // namespace pyengine
