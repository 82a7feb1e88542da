// SPDX-License-Identifier: Apache-2.0
#include "kernels/dispatch.h"

#include <atomic>
#include <cstdlib>

#include "common.h"
#include "platform/cpu.h"

namespace pyengine {

#ifndef PYENGINE_HAVE_AVX2_KERNELS
const KernelTable* kernel_table_avx2() { return nullptr; }
#endif  // !PYENGINE_HAVE_AVX2_KERNELS
#ifndef PYENGINE_HAVE_AVX512_KERNELS
const KernelTable* kernel_table_avx512() { return nullptr; }
#endif  // !PYENGINE_HAVE_AVX512_KERNELS
#ifndef PYENGINE_HAVE_NEON_KERNELS
const KernelTable* kernel_table_neon() { return nullptr; }
#endif  // !PYENGINE_HAVE_NEON_KERNELS

const KernelTable* kernel_table(Isa isa) {
    switch (isa) {
        case Isa::Generic: return kernel_table_generic();
        case Isa::Avx2: return cpu_support_x86_avx2() ? kernel_table_avx2() : nullptr;
        case Isa::Avx512: return cpu_support_x86_avx512() ? kernel_table_avx512() : nullptr;
        case Isa::Neon: return cpu_support_arm_neon() ? kernel_table_neon() : nullptr;
    }
    return nullptr;
}

namespace {

const KernelTable* by_name(const std::string& name) {
    if (name == "generic") return kernel_table(Isa::Generic);
    if (name == "avx2") return kernel_table(Isa::Avx2);
    if (name == "avx512") return kernel_table(Isa::Avx512);
    if (name == "neon") return kernel_table(Isa::Neon);
    throw InvalidArgument(str("PYENGINE_ISA='", name, "' is not one of generic, avx2, avx512, neon"));
}

const KernelTable* require(const std::string& name) {
    const KernelTable* t = by_name(name);
    if (t == nullptr) {
        std::string have;
        for (const auto& n : kernels_available()) have += (have.empty() ? "" : ", ") + n;
        throw InvalidArgument(str("instruction set '", name, "' is not available on this CPU or build (available: ", have, ")"));
    }
    return t;
}

const KernelTable* choose() {
    const char* env = std::getenv("PYENGINE_ISA");
    if (env != nullptr && *env != '\0') return require(env);
    for (Isa isa : {Isa::Avx512, Isa::Avx2, Isa::Neon}) {
        if (const KernelTable* t = kernel_table(isa)) return t;
    }
    return kernel_table_generic();
}

std::atomic<const KernelTable*>& current() {
    static std::atomic<const KernelTable*> table{choose()};
    return table;
}

}  // namespace

const KernelTable& kernels() { return *current().load(std::memory_order_acquire); }

void kernels_select(const std::string& isa_name) {
    current().store(require(isa_name), std::memory_order_release);
}

std::vector<std::string> kernels_available() {
    std::vector<std::string> out;
    if (kernel_table(Isa::Avx512)) out.push_back("avx512");
    if (kernel_table(Isa::Avx2)) out.push_back("avx2");
    if (kernel_table(Isa::Neon)) out.push_back("neon");
    out.push_back("generic");
    return out;
}

}  // namespace pyengine
