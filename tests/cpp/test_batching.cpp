// SPDX-License-Identifier: Apache-2.0
// The batcher without Python: rows routed back to their callers from many threads (a batch
// function and a native model), queue limits, timeouts, close, and failure isolation.
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <unistd.h>

#include "batching/batcher.h"
#include "batching/native_runner.h"
#include "common.h"
#include "format/writer.h"
#include "graph/model.h"
#include "test_util.h"

using namespace pyengine;

namespace {

constexpr int64_t kWidth = 3;

// A gate a batch function waits at, so that a test can keep the worker busy.
struct Gate {
    std::mutex m;
    std::condition_variable cv;
    bool open = false;
    std::atomic<int> entered{0};
    void wait() {
        ++entered;
        std::unique_lock<std::mutex> lk(m);
        cv.wait(lk, [&] { return open; });
    }
    void release() {
        std::lock_guard<std::mutex> lk(m);
        open = true;
        cv.notify_all();
    }
};

// y = 2x on [rows, kWidth] float32; throws on a negative value; waits at `gate` if given.
BatchFn doubler(Gate* gate = nullptr, std::atomic<int>* calls = nullptr) {
    return [gate, calls](const std::vector<TensorIn>& in, int64_t rows) {
        if (gate) gate->wait();
        if (calls) ++*calls;
        const float* x = static_cast<const float*>(in[0].data);
        for (int64_t i = 0; i < rows * kWidth; ++i) {
            if (x[i] < 0) throw InvalidArgument(str("negative value in a batch of ", rows));
        }
        auto buf = std::shared_ptr<void>(new float[static_cast<size_t>(rows * kWidth)], [](void* p) { delete[] static_cast<float*>(p); });
        float* y = static_cast<float*>(buf.get());
        for (int64_t i = 0; i < rows * kWidth; ++i) y[i] = 2 * x[i];
        TensorOut o;
        o.owner = buf;
        o.data = y;
        o.dtype = in[0].dtype;
        o.shape = {rows, kWidth};
        return std::vector<TensorOut>{o};
    };
}

TensorIn view(const std::vector<float>& v) {
    TensorIn t;
    t.data = v.data();
    t.dtype = 1;
    t.itemsize = sizeof(float);
    t.shape = {static_cast<int64_t>(v.size()) / kWidth, kWidth};
    return t;
}

std::vector<float> rows_of(float base, int64_t rows) {
    std::vector<float> v(static_cast<size_t>(rows * kWidth));
    for (size_t i = 0; i < v.size(); ++i) v[i] = base + static_cast<float>(i);
    return v;
}

bool is_error(const Request& r, const char* fragment) {
    if (!r.error()) return false;
    try {
        std::rethrow_exception(r.error());
    } catch (const std::exception& e) {
        return std::string(e.what()).find(fragment) != std::string::npos;
    }
    return false;
}

void wait_for(const std::function<bool()>& cond) {
    for (int i = 0; i < 5000 && !cond(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

}  // namespace

TEST_CASE(rows_return_to_their_callers) {
    for (int64_t delay : {0, 300}) {
        std::atomic<int> calls{0};
        BatcherConfig c;
        c.max_batch_size = 16;
        c.max_queue_delay_us = delay;
        c.workers = 2;
        Batcher b(c, doubler(nullptr, &calls));
        std::atomic<int> wrong{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 8; ++t) {
            threads.emplace_back([&, t] {
                std::mt19937 rng(static_cast<unsigned>(t));
                for (int k = 0; k < 100; ++k) {
                    const int64_t rows = 1 + static_cast<int64_t>(rng() % 4);
                    std::vector<float> x = rows_of(static_cast<float>(t * 100000 + k * 100), rows);
                    auto r = b.submit({view(x)});
                    b.wait(*r);
                    const auto& out = r->outputs();
                    if (r->error() || out.size() != 1 || out[0].shape != Shape{rows, kWidth}) {
                        ++wrong;
                        continue;
                    }
                    const float* y = static_cast<const float*>(out[0].data);
                    for (size_t i = 0; i < x.size(); ++i) {
                        if (y[i] != 2 * x[i]) ++wrong;
                    }
                }
            });
        }
        for (auto& t : threads) t.join();
        CHECK(wrong == 0);
        const BatcherStats s = b.stats();
        CHECK(s.requests == 800 && s.completed == 800);
        CHECK(static_cast<uint64_t>(calls) == s.batches);
        uint64_t rows = 0;
        for (size_t i = 0; i < s.batch_size_histogram.size(); ++i) rows += i * s.batch_size_histogram[i];
        CHECK(rows == s.rows);
    }
}

TEST_CASE(native_model_batches_match_single_runs) {
    const char* graph = R"({"inputs":[{"name":"x","dtype":"float32","shape":[-1,3]}],"outputs":[{"name":"y"}],)"
                        R"("nodes":[{"name":"fc","op":"Dense","inputs":["x","w","b"],"outputs":["y"]}]})";
    static const float w[6] = {1, 2, 3, 4, 5, 6};
    static const float bias[2] = {0.5f, -1.0f};
    const std::string path = "/tmp/pyengine_test_batching_" + std::to_string(::getpid()) + ".pyem";
    write_pyem(path, graph, {{"w", DType::Float32, {3, 2}, w, sizeof w}, {"b", DType::Float32, {2}, bias, sizeof bias}});
    auto model = std::make_shared<const Model>(path);
    std::remove(path.c_str());
    BatcherConfig c;
    c.max_batch_size = 8;
    c.max_queue_delay_us = 500;
    Batcher b(c, native_batch_fn(model));
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&, t] {
            for (int k = 0; k < 50; ++k) {
                const int64_t rows = 1 + (t + k) % 3;
                std::vector<float> x = rows_of(static_cast<float>(t * 10 + k), rows);
                TensorIn in = view(x);
                in.dtype = kNativeFloat32;
                auto r = b.submit({in});
                b.wait(*r);
                std::vector<float> ref(static_cast<size_t>(rows * 2));
                model->run(*model->plan({{rows, 3}}), {x.data()}, {ref.data()});
                if (r->error() || std::memcmp(r->outputs()[0].data, ref.data(), ref.size() * sizeof(float)) != 0) ++wrong;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(wrong == 0);
    CHECK(b.stats().batches < 300);
}

TEST_CASE(queue_full_timeout_and_close) {
    Gate gate;
    BatcherConfig c;
    c.max_batch_size = 1;
    c.max_queue_delay_us = 0;
    c.max_queue_size = 2;
    Batcher b(c, doubler(&gate));
    std::vector<float> x = rows_of(1, 1);
    auto running = b.submit({view(x)}, [](Request&) {});  // async: a worker runs it
    wait_for([&] { return gate.entered > 0; });
    auto timed = b.submit({view(x)}, {}, 20000);
    auto queued = b.submit({view(x)}, [](Request&) {});
    CHECK_THROWS(b.submit({view(x)}), QueueFull, "max_queue_size");
    b.wait(*timed);  // the worker is busy: the caller's own deadline fails it
    CHECK(is_error(*timed, "longer than its timeout"));
    CHECK_THROWS(b.submit({view(rows_of(1, 2))}), InvalidArgument, "more than max_batch_size=1");
    std::thread closer([&] { b.close(false); });
    b.wait(*queued);
    CHECK(is_error(*queued, "closed before this request ran"));
    gate.release();
    closer.join();
    b.wait(*running);
    CHECK(!running->error() && running->outputs().size() == 1);
    CHECK_THROWS(b.submit({view(x)}), BatcherClosed, "closed");
    const BatcherStats s = b.stats();
    CHECK(s.queue_full == 1 && s.timed_out == 1 && s.closed == 1 && s.completed == 1);
}

TEST_CASE(a_failing_request_fails_alone) {
    Gate gate;
    BatcherConfig c;
    c.max_batch_size = 16;
    c.max_queue_delay_us = 0;
    Batcher b(c, doubler(&gate));
    std::vector<float> first = rows_of(1, 1);
    auto busy = b.submit({view(first)}, [](Request&) {});
    wait_for([&] { return gate.entered > 0; });
    std::vector<std::vector<float>> xs;
    for (int i = 0; i < 5; ++i) xs.push_back(rows_of(static_cast<float>(10 * i), 2));
    xs[3][1] = -1;
    std::vector<std::shared_ptr<Request>> reqs;
    for (auto& x : xs) reqs.push_back(b.submit({view(x)}, [](Request&) {}));
    gate.release();
    for (auto& r : reqs) b.wait(*r);
    b.wait(*busy);
    for (size_t i = 0; i < reqs.size(); ++i) {
        CHECK((i == 3) == is_error(*reqs[i], "negative value in a batch of 2"));
    }
    CHECK(b.stats().isolation_runs == 5);
}

TEST_CASE(waiters_wake_in_turn_and_a_request_nobody_waits_on_is_skipped) {
    Gate gate;
    BatcherConfig c;
    c.max_batch_size = 16;
    c.max_queue_delay_us = 0;
    Batcher b(c, doubler(&gate));
    std::vector<float> x = rows_of(1, 1);
    auto busy = b.submit({view(x)}, [](Request&) {});
    wait_for([&] { return gate.entered > 0; });
    // One batch of three synchronous requests: nobody ever waits for the first, so it must not
    // hold up the chain; the second and third have waiters, and the second wakes the third.
    auto unwaited = b.submit({view(x)});
    auto second = b.submit({view(x)});
    auto third = b.submit({view(x)});
    std::atomic<int> woken{0};
    std::thread t2([&] { b.wait(*second); ++woken; });
    std::thread t3([&] { b.wait(*third); ++woken; });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // both threads now in wait()
    gate.release();
    t2.join();
    t3.join();
    CHECK(woken == 2 && !second->error() && !third->error() && unwaited->done());
    b.wait(*unwaited);  // answered with its turn already: returns at once
    b.wait(*busy);
}

TEST_CASE(config_is_validated) {
    BatcherConfig c;
    c.max_batch_size = 0;
    CHECK_THROWS(batcher_config_validate(c), InvalidArgument, "max_batch_size must be >= 1");
    c.max_batch_size = 4;
    c.preferred_batch_sizes = {8};
    CHECK_THROWS(batcher_config_validate(c), InvalidArgument, "preferred batch size 8");
    c.preferred_batch_sizes = {};
    c.workers = 0;
    CHECK_THROWS(batcher_config_validate(c), InvalidArgument, "workers must be between 1 and 256");
}

TEST_MAIN()
