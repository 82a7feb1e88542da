// SPDX-License-Identifier: Apache-2.0
// A minimal test harness: CHECK macros and a runner that counts failures (ctest reads the exit code).
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace test {

struct Case { const char* name; std::function<void()> fn; };
inline std::vector<Case>& cases() { static std::vector<Case> c; return c; }
inline int& failures() { static int f = 0; return f; }

struct Register {
    Register(const char* name, std::function<void()> fn) { cases().push_back({name, std::move(fn)}); }
};

inline int run_all() {
    int failed_cases = 0;
    for (auto& c : cases()) {
        const int before = failures();
        try {
            c.fn();
        } catch (const std::exception& e) {
            std::printf("  %s: unexpected exception: %s\n", c.name, e.what());
            ++failures();
        }
        const bool ok = failures() == before;
        failed_cases += ok ? 0 : 1;
        std::printf("[%s] %s\n", ok ? "PASS" : "FAIL", c.name);
    }
    std::printf("%zu passed, %d failed\n", cases().size() - static_cast<size_t>(failed_cases), failed_cases);
    return failed_cases == 0 ? 0 : 1;
}

}  // namespace test

#define TEST_CASE(name)                                          \
    static void name();                                          \
    static test::Register reg_##name(#name, name);               \
    static void name()

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);       \
            ++test::failures();                                                          \
        }                                                                                \
    } while (0)

#define CHECK_THROWS(expr, type, fragment)                                               \
    do {                                                                                 \
        bool caught = false;                                                             \
        try { expr; } catch (const type& e) {                                            \
            caught = std::string(e.what()).find(fragment) != std::string::npos;          \
            if (!caught) std::printf("  %s:%d: message '%s' lacks '%s'\n", __FILE__,     \
                                     __LINE__, e.what(), fragment);                      \
        }                                                                                \
        if (!caught) {                                                                   \
            std::printf("  %s:%d: %s did not throw %s\n", __FILE__, __LINE__, #expr, #type); \
            ++test::failures();                                                          \
        }                                                                                \
    } while (0)

#define TEST_MAIN() int main() { return test::run_all(); }
