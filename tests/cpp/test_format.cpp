// SPDX-License-Identifier: Apache-2.0
// The .pyem reader: valid files load; every kind of damage is a ModelFormatError.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <unistd.h>

#include "common.h"
#include "format/pyem.h"
#include "format/writer.h"
#include "graph/model.h"
#include "test_util.h"

using namespace pyengine;

namespace {

std::string tmp_path(const char* name) { return std::string("/tmp/pyengine_test_") + std::to_string(::getpid()) + "_" + name; }

const char* kGraph = R"({"inputs":[{"name":"x","dtype":"float32","shape":[-1,3]}],)"
                     R"("outputs":[{"name":"y"}],)"
                     R"("nodes":[{"name":"fc","op":"Dense","inputs":["x","w","b"],"outputs":["y"],"attrs":{"activation":"relu"}}]})";

std::string write_valid(const char* name, const std::string& graph = kGraph) {
    static const float w[6] = {1, 2, 3, 4, 5, 6};  // [3, 2]
    static const float b[2] = {0.5f, -100.0f};
    std::string path = tmp_path(name);
    write_pyem(path, graph, {{"w", DType::Float32, {3, 2}, w, sizeof w}, {"b", DType::Float32, {2}, b, sizeof b}});
    return path;
}

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

void spit(const std::string& path, const std::string& data) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

void put_u64(std::string& b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; ++i) b[at + static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

}  // namespace

TEST_CASE(valid_model_runs) {
    std::string path = write_valid("valid.pyem");
    Model m(path);
    CHECK(m.inputs().size() == 1);
    CHECK(m.outputs()[0].shape == (Shape{-1, 2}));
    float x[6] = {1, 1, 1, 0, 1, 0};
    float y[4] = {};
    auto plan = m.plan({{2, 3}});
    m.run(*plan, {x}, {y});
    CHECK(y[0] == 1 + 3 + 5 + 0.5f);
    CHECK(y[1] == 0.0f);  // relu of 12 - 100
    CHECK(y[2] == 3 + 0.5f);
    CHECK_THROWS(m.plan({{2, 4}}), InvalidArgument, "expected [-1, 3]");
    ::unlink(path.c_str());
}

TEST_CASE(damaged_headers) {
    std::string path = write_valid("damaged.pyem");
    const std::string good = slurp(path);
    struct Damage { const char* name; std::function<void(std::string&)> fn; const char* fragment; };
    std::vector<Damage> damages = {
        {"empty", [](std::string& b) { b.clear(); }, "shorter than"},
        {"magic", [](std::string& b) { b[1] = 'X'; }, "magic"},
        {"future version", [](std::string& b) { b[pyem::kOffVersionMajor] = 9; }, "upgrade pyengine"},
        {"truncated", [](std::string& b) { b.resize(b.size() - 10); }, "truncated"},
        {"graph past end", [](std::string& b) { put_u64(b, pyem::kOffGraphLength, uint64_t(1) << 62); }, "outside the file"},
        {"data misaligned", [](std::string& b) { put_u64(b, pyem::kOffDataOffset, pyem::load_u64(reinterpret_cast<const uint8_t*>(b.data()) + pyem::kOffDataOffset) + 8); }, ""},
        {"count huge", [](std::string& b) { put_u64(b, pyem::kOffTensorCount, uint64_t(1) << 60); }, "tensor count"},
        {"graph garbage", [](std::string& b) { b[pyem::kHeaderSize] = '#'; }, "invalid JSON"},
    };
    for (auto& d : damages) {
        std::string bytes = good;
        d.fn(bytes);
        spit(path, bytes);
        CHECK_THROWS(Model m(path), ModelFormatError, d.fragment);
    }
    ::unlink(path.c_str());
}

TEST_CASE(bad_graphs) {
    struct Bad { const char* graph; const char* fragment; };
    std::vector<Bad> bads = {
        {R"({"inputs":[{"name":"x","dtype":"float32","shape":[-1,3]}],"outputs":[{"name":"y"}],"nodes":[{"name":"n","op":"Frobnicate","inputs":["x"],"outputs":["y"]}]})", "unknown op 'Frobnicate'"},
        {R"({"inputs":[{"name":"x","dtype":"float32","shape":[-1,3]}],"outputs":[{"name":"y"}],"nodes":[{"name":"n","op":"Relu","inputs":["nope"],"outputs":["y"]}]})", "reads 'nope'"},
        {R"({"inputs":[{"name":"x","dtype":"float32","shape":[-1,3]}],"outputs":[{"name":"y"}],"nodes":[{"name":"a","op":"Add","inputs":["x","z"],"outputs":["y"]},{"name":"b","op":"Relu","inputs":["y"],"outputs":["z"]}]})", "cycle"},
        {R"({"inputs":[{"name":"x","dtype":"float32","shape":[-1,3]}],"outputs":[{"name":"y"}],"nodes":[{"name":"n","op":"Softmax","inputs":["x"],"outputs":["y"],"attrs":{"axis":"last"}}]})", "attribute 'axis' must be an integer"},
        {R"({"inputs":[{"name":"x","dtype":"float32","shape":[-1,3]}],"outputs":[{"name":"y"}],"nodes":[{"name":"n","op":"Relu","inputs":["x"],"outputs":["y"],"attrs":{"bogus":1}}]})", "unknown attribute 'bogus'"},
        {R"({"inputs":[{"name":"x","dtype":"float32","shape":[-1,4]}],"outputs":[{"name":"y"}],"nodes":[{"name":"fc","op":"Dense","inputs":["x","w","b"],"outputs":["y"]}]})", "needs 3"},
        {R"({"inputs":[{"name":"x","dtype":"float32","shape":[-1,3]}],"outputs":[{"name":"q"}],"nodes":[]})", "output 'q'"},
    };
    for (const auto& b : bads) {
        std::string path = write_valid("badgraph.pyem", b.graph);
        CHECK_THROWS(Model m(path), ModelFormatError, b.fragment);
        ::unlink(path.c_str());
    }
}

// A parameter input (Reduce's axes) is read by value when planning: each value its own plan.
TEST_CASE(parameter_inputs_plan_per_value) {
    const std::string graph =
        R"({"inputs":[{"name":"x","dtype":"float32","shape":[2,3]},{"name":"axes","dtype":"int64","shape":[-1]}],)"
        R"("outputs":[{"name":"y","shape":[-1,-1]}],)"
        R"("nodes":[{"name":"sum","op":"Reduce","inputs":["x","axes"],"outputs":["y"],"attrs":{"kind":"sum"}}]})";
    std::string path = write_valid("params.pyem", graph);
    Model m(path);
    CHECK(m.value_inputs() == std::vector<int>{1});
    CHECK(m.outputs()[0].shape == (Shape{-1, -1}));  // the file's declaration: load cannot plan
    const float x[6] = {1, 2, 3, 4, 5, 6};
    CHECK_THROWS(m.plan({{2, 3}, {1}}), InvalidArgument, "planning needs its data");
    int64_t axes = 1;
    const void* in[2] = {x, &axes};
    auto rows = m.plan({{2, 3}, {1}}, in);
    CHECK(rows->output_shapes[0] == (Shape{2, 1}));
    float y[3] = {};
    m.run(*rows, std::vector<const void*>{x, &axes}, {y});
    CHECK(y[0] == 6.0f && y[1] == 15.0f);
    axes = 0;
    auto cols = m.plan({{2, 3}, {1}}, in);
    CHECK(cols != rows && cols->output_shapes[0] == (Shape{1, 3}));
    m.run(*cols, std::vector<const void*>{x, &axes}, {y});
    CHECK(y[0] == 5.0f && y[2] == 9.0f);
    axes = 1;
    CHECK(m.plan({{2, 3}, {1}}, in) == rows);  // the cached plan of that value
    axes = 7;
    CHECK_THROWS(m.plan({{2, 3}, {1}}, in), InvalidArgument, "input 1 'axes' = [7]");
    ::unlink(path.c_str());
}

TEST_MAIN()
