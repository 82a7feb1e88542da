// SPDX-License-Identifier: Apache-2.0
#include "platform/thread_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "platform/cpu.h"

namespace pyengine {

namespace {

int threads_from_env() {
    const char* env = std::getenv("PYENGINE_NUM_THREADS");
    if (env == nullptr || *env == '\0') return cpu_features().cores;
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (*end != '\0' || n < 1 || n > 1024) {
        throw InvalidArgument(str("PYENGINE_NUM_THREADS='", env, "' is not an integer from 1 to 1024"));
    }
    return static_cast<int>(n);
}

thread_local bool tls_in_pool = false;

// A spin limit in microseconds from the environment variable `name` (0 to 100000), else `def`.
std::chrono::microseconds spin_us_from_env(const char* name, long def) {
    const char* env = std::getenv(name);
    if (env == nullptr || *env == '\0') return std::chrono::microseconds{def};
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (*end != '\0' || n < 0 || n > 100000) {
        throw InvalidArgument(str(name, "='", env, "' is not an integer from 0 to 100000 (microseconds)"));
    }
    return std::chrono::microseconds{n};
}

// How long an idle worker (and a caller waiting for workers) spins before it blocks:
// PYENGINE_SPIN_US, default 5 (0: never). Long enough to catch the next op of an inference
// coming back to back (waking a blocked worker costs about 12 us), short because on a VM a
// spinning vCPU slows the one doing the work (pause-loop exits, shared cores): on the 2-vCPU
// build machine a 50 us spin made a single-threaded reorder 3x slower and MobileNetV2 on 2
// threads slower than on 1 (9.0 ms vs 7.5; 5.0 ms with this default). Dedicated cores may
// spin longer. While a model run is in progress (KeepWorkersAwake) the limit is
// PYENGINE_RUN_SPIN_US instead, default 200 (0: as between runs).

class ThreadPool {
public:
    explicit ThreadPool(int threads)
        : threads_(threads), spin_(spin_us_from_env("PYENGINE_SPIN_US", 5)),
          run_spin_(spin_us_from_env("PYENGINE_RUN_SPIN_US", 200)) {}

    void awake_begin() { awake_.fetch_add(1, std::memory_order_relaxed); }
    void awake_end() { awake_.fetch_sub(1, std::memory_order_relaxed); }
    ~ThreadPool() { stop_workers(); }

    int threads() const { return threads_.load(std::memory_order_relaxed); }

    void resize(int n) {
        std::lock_guard<std::mutex> own(busy_);  // no job is running while we swap workers
        stop_workers();
        threads_.store(n, std::memory_order_relaxed);
    }

    void run(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
        if (n_tasks <= 0) return;
        if (n_tasks == 1 || tls_in_pool || threads() <= 1 || !busy_.try_lock()) {
            for (int64_t t = 0; t < n_tasks; ++t) fn(t);
            return;
        }
        std::lock_guard<std::mutex> own(busy_, std::adopt_lock);
        start_workers();
        bool wake = true;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            fn_ = &fn;
            n_tasks_ = n_tasks;
            next_.store(0, std::memory_order_relaxed);
            helpers_ = static_cast<int>(std::min<int64_t>(n_tasks - 1, static_cast<int64_t>(workers_.size())));
            open_ = true;
            joined_ = 0;
            joined_count_.store(0, std::memory_order_relaxed);
            error_ = nullptr;
            generation_.fetch_add(1, std::memory_order_release);
            if (sleepers_ == 0) wake = false;  // every worker is spinning: no syscall needed
        }
        if (wake) wake_.notify_all();
        tls_in_pool = true;  // nested parallel_for from fn runs inline
        work();
        tls_in_pool = false;
        // Close the job: a worker that has not woken yet (a busy machine may not schedule it
        // for a while) will not join, so we wait only for workers that are running tasks.
        std::unique_lock<std::mutex> lock(mutex_);
        open_ = false;
        if (joined_ != 0) {
            // Workers still finish their last tasks, usually within microseconds: spin for them
            // (when spinning is on) before blocking.
            lock.unlock();
            const auto spin_end = std::chrono::steady_clock::now() + spin_;
            for (int i = 0; spin_.count() > 0 && joined_count_.load(std::memory_order_acquire) != 0; ++i) {
                cpu_relax();
                if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_end) break;
            }
            lock.lock();
        }
        done_.wait(lock, [&] { return joined_ == 0; });
        fn_ = nullptr;
        if (error_) std::rethrow_exception(error_);
    }

private:
    // Takes tasks until none are left; records the first exception.
    void work() {
        for (;;) {
            const int64_t t = next_.fetch_add(1, std::memory_order_relaxed);
            if (t >= n_tasks_) return;
            try {
                (*fn_)(t);
            } catch (...) {
                std::lock_guard<std::mutex> lock(mutex_);
                if (!error_) error_ = std::current_exception();
                next_.store(n_tasks_, std::memory_order_relaxed);
            }
        }
    }

    void worker_main(int index) {
        tls_in_pool = true;
        uint64_t seen = 0;
        for (;;) {
            // Spin briefly before sleeping (when spinning is on): the ops of one inference come
            // back to back, and a worker that is awake joins the next one without a wake-up.
            // During a model run (KeepWorkersAwake) the spin lasts up to run_spin_.
            const auto start = std::chrono::steady_clock::now();
            const auto spin_end = start + spin_, run_spin_end = start + run_spin_;
            for (int i = 0; (spin_.count() > 0 || awake_.load(std::memory_order_relaxed) > 0) &&
                            generation_.load(std::memory_order_acquire) == seen &&
                            !stop_flag_.load(std::memory_order_relaxed);
                 ++i) {
                cpu_relax();
                if ((i & 63) == 63) {
                    const auto now = std::chrono::steady_clock::now();
                    if (now > spin_end && (awake_.load(std::memory_order_relaxed) == 0 || now > run_spin_end)) break;
                }
            }
            {
                std::unique_lock<std::mutex> lock(mutex_);
                ++sleepers_;
                wake_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_relaxed) != seen; });
                --sleepers_;
                if (stop_) return;
                seen = generation_.load(std::memory_order_relaxed);
                if (!open_ || index >= helpers_) continue;  // job over, or fewer helpers needed
                ++joined_;
                joined_count_.store(joined_, std::memory_order_relaxed);
            }
            work();
            std::lock_guard<std::mutex> lock(mutex_);
            joined_count_.store(--joined_, std::memory_order_release);
            if (joined_ == 0 && !open_) done_.notify_one();
        }
    }

    void start_workers() {
        const int want = threads() - 1;
        if (static_cast<int>(workers_.size()) == want) return;
        stop_workers();
        for (int i = 0; i < want; ++i) workers_.emplace_back([this, i] { worker_main(i); });
    }

    void stop_workers() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
            stop_flag_.store(true, std::memory_order_relaxed);
        }
        wake_.notify_all();
        for (auto& w : workers_) w.join();
        workers_.clear();
        stop_ = false;
        stop_flag_.store(false, std::memory_order_relaxed);
    }

    std::atomic<int> threads_;
    const std::chrono::microseconds spin_, run_spin_;
    std::atomic<int> awake_{0};  // live KeepWorkersAwake scopes
    std::mutex busy_;  // held by the caller whose job the workers run
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    const std::function<void(int64_t)>* fn_ = nullptr;
    int64_t n_tasks_ = 0;
    std::atomic<int64_t> next_{0};
    int helpers_ = 0;
    int joined_ = 0;    // workers inside work() for the current job
    std::atomic<int> joined_count_{0};  // joined_, readable without the lock
    bool open_ = false; // workers may still join the current job
    std::atomic<uint64_t> generation_{0};  // written under mutex_, read by spinning workers
    std::atomic<bool> stop_flag_{false};   // stop_, readable without the lock
    int sleepers_ = 0;                      // workers blocked on wake_
    bool stop_ = false;
    std::exception_ptr error_;
};

ThreadPool& pool() {
    // Leaked on purpose: workers must not be joined during static destruction at exit.
    static ThreadPool* p = new ThreadPool(threads_from_env());
    return *p;
}

}  // namespace

int num_threads() { return pool().threads(); }

void set_num_threads(int n) {
    if (n < 1 || n > 1024) throw InvalidArgument(str("thread count ", n, " is not an integer from 1 to 1024"));
    pool().resize(n);
}

void parallel_for(int64_t n_tasks, const std::function<void(int64_t)>& fn) { pool().run(n_tasks, fn); }

KeepWorkersAwake::KeepWorkersAwake() { pool().awake_begin(); }
KeepWorkersAwake::~KeepWorkersAwake() { pool().awake_end(); }

}  // namespace pyengine
