// SPDX-License-Identifier: Apache-2.0
// libFuzzer target over the .pyem reader and executor (build with clang: -DPYENGINE_FUZZ=ON).
// The test command fuzzes through atheris; this target adds ASan/UBSan coverage where clang exists.
#include <cstdint>
#include <cstdio>
#include <string>
#include <unistd.h>

#include "common.h"
#include "graph/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string path = "/tmp/pyengine_fuzz_" + std::to_string(::getpid()) + ".pyem";
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return 0;
    std::fwrite(data, 1, size, f);
    std::fclose(f);
    try {
        pyengine::Model model(path);
        std::vector<pyengine::Shape> shapes;
        std::vector<std::vector<float>> buffers;
        for (const auto& in : model.inputs()) {
            pyengine::Shape s = in.shape;
            for (auto& d : s) if (d < 0) d = 1;
            if (pyengine::shape_numel(s) > (1 << 20)) return 0;
            shapes.push_back(s);
            buffers.emplace_back(static_cast<size_t>(pyengine::shape_numel(s)), 1.0f);
        }
        auto plan = model.plan(shapes);
        std::vector<std::vector<float>> outs;
        std::vector<const void*> in_ptrs;
        std::vector<void*> out_ptrs;
        for (auto& b : buffers) in_ptrs.push_back(b.data());
        for (const auto& s : plan->output_shapes) {
            if (pyengine::shape_numel(s) > (1 << 24)) return 0;
            outs.emplace_back(static_cast<size_t>(pyengine::shape_numel(s)));
            out_ptrs.push_back(outs.back().data());
        }
        model.run(*plan, in_ptrs, out_ptrs);
    } catch (const pyengine::ModelFormatError&) {
    } catch (const pyengine::InvalidArgument&) {
    } catch (const pyengine::SystemError&) {
    }
    return 0;
}
