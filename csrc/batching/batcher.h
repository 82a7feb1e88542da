// SPDX-License-Identifier: Apache-2.0
// Dynamic batcher: callers submit requests of one or more rows; worker threads gather them into
// batches (up to a size limit, waiting at most a delay), run one function per batch and route each
// caller's rows of the outputs back to it. Knows nothing of Python: the native path calls
// Model::run directly (see native_runner.h); the Python binding supplies a callback for frameworks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "format/tensor.h"

namespace pyengine {

// The queue holds max_queue_size requests already; the call fails at once. -> pyengine.QueueFullError
class QueueFull : public std::runtime_error {
public:
    explicit QueueFull(const std::string& what) : std::runtime_error(what) {}
};

// A request waited longer than its timeout before a batch took it. -> TimeoutError
class RequestTimeout : public std::runtime_error {
public:
    explicit RequestTimeout(const std::string& what) : std::runtime_error(what) {}
};

// The batcher was closed before the request ran, or a request came after close(). -> pyengine.BatcherClosedError
class BatcherClosed : public std::runtime_error {
public:
    explicit BatcherClosed(const std::string& what) : std::runtime_error(what) {}
};

struct BatcherConfig {
    int64_t max_batch_size = 32;               // rows per batch, at most
    std::vector<int64_t> preferred_batch_sizes; // dispatch at once when one of these can be formed
    int64_t max_queue_delay_us = 1000;         // the longest the oldest request waits for company
    int64_t max_queue_size = 1024;             // queued requests; 0 = unbounded
    int64_t timeout_us = 0;                    // default per-request queue timeout; 0 = none
    int workers = 1;                           // batches run at once (worker threads)
};

// Throws InvalidArgument naming the first bad field.
void batcher_config_validate(const BatcherConfig& c);

// One input of a request or a batch: a view of row-major memory, rows along dimension 0.
// `dtype` is an opaque tag chosen by the runner's side (DType for native, a numpy type number for
// the Python path); requests batch together only when tags, item sizes and trailing dims agree.
struct TensorIn {
    const void* data = nullptr;
    int32_t dtype = 0;
    size_t itemsize = 4;
    Shape shape;
    std::shared_ptr<const void> owner;  // keeps a concatenated batch's memory alive
    const void* user = nullptr;         // the caller's own object for `data` (opaque; valid while
                                        // the request is), passed on when a batch is one request
};

// One output of a batch (or a caller's rows of it): `owner` keeps the batch's memory alive.
struct TensorOut {
    std::shared_ptr<void> owner;
    void* data = nullptr;
    int32_t dtype = 0;
    size_t itemsize = 4;
    Shape shape;
    bool writable = true;
    const void* user = nullptr;  // the runner's own object for the whole output (opaque); kept on
                                 // a caller's view only when the batch was that caller alone
};

// The function a batch runs through: inputs concatenated along dimension 0, `rows` in all.
// Returns one tensor per output, each with `rows` rows. Throws to fail the batch.
using BatchFn = std::function<std::vector<TensorOut>(const std::vector<TensorIn>& inputs, int64_t rows)>;

class Batcher;

class Request : public std::enable_shared_from_this<Request> {
public:
    enum class State { Queued, Running, Done };

    int64_t rows() const { return rows_; }
    uint64_t id() const { return id_; }
    // True once the request is answered: outputs() or error() is final.
    bool done() const {
        std::lock_guard<std::mutex> lk(m_);
        return answered_;
    }
    // This request's rows of each output (views sharing the batch's memory); empty on error.
    // Read outputs() and error() only once done() (after wait() or in on_done).
    const std::vector<TensorOut>& outputs() const { return outputs_; }
    // The failure, or null.
    std::exception_ptr error() const { return error_; }

private:
    friend class Batcher;
    std::vector<TensorIn> inputs_;
    int64_t rows_ = 0;
    uint64_t id_ = 0;
    std::chrono::steady_clock::time_point enqueued_, deadline_;
    bool has_deadline_ = false;
    State state_ = State::Queued;  // guarded by Batcher::mutex_
    // The waiter's own lock and signal, so that answering a batch never convoys on the queue lock.
    mutable std::mutex m_;
    std::condition_variable cv_;
    bool answered_ = false;  // guarded by m_; set once, after state_ became Done
    // Waiters of one batch wake one after another, not all at once (see Batcher::wait):
    // `turn_` lets wait() return; `next_turn_` is the waiter to wake next; `waiting_`: a thread
    // is in wait() (only those join the chain). Guarded by m_.
    bool waiting_ = false;
    bool turn_ = false;
    std::shared_ptr<Request> next_turn_;
    std::vector<TensorOut> outputs_;
    std::exception_ptr error_;
    std::function<void(Request&)> on_done_;
};

// Counters and recent samples (the last kSampleWindow requests) for percentiles.
struct BatcherStats {
    uint64_t requests = 0;     // accepted by submit()
    uint64_t completed = 0;    // answered with outputs
    uint64_t failed = 0;       // answered with an error from the model or the callback
    uint64_t queue_full = 0;   // refused by submit()
    uint64_t timed_out = 0;
    uint64_t closed = 0;       // failed because the batcher was closed without draining
    uint64_t cancelled = 0;
    uint64_t batches = 0;
    uint64_t rows = 0;
    uint64_t isolation_runs = 0;  // single-request reruns after a failed batch
    std::vector<uint64_t> batch_size_histogram;  // index = rows in the batch
    std::vector<double> queue_us;    // submit -> taken into a batch
    std::vector<double> latency_us;  // submit -> answered
};

class Batcher {
public:
    static constexpr size_t kSampleWindow = 8192;

    // Starts config.workers threads that run batches through `fn`. Throws InvalidArgument.
    Batcher(BatcherConfig config, BatchFn fn);
    // Drains the queue and joins the workers.
    ~Batcher();
    Batcher(const Batcher&) = delete;
    Batcher& operator=(const Batcher&) = delete;

    const BatcherConfig& config() const { return config_; }

    // Queues a request (rows along dimension 0 of every input). `on_done` runs exactly once, on the
    // thread that finished the request, with no batcher lock held. timeout_us < 0 takes the
    // config's default, 0 means none. Throws InvalidArgument, QueueFull or BatcherClosed.
    // With max_queue_delay_us == 0, a synchronous request (no on_done) that finds the queue empty
    // and a worker slot free runs at once on the calling thread, saving two thread hand-offs.
    // After abandon(), a caller is parked for good, or with park=false gets BatcherClosed (for a
    // caller that holds a lock the exiting process needs, such as Python's GIL).
    std::shared_ptr<Request> submit(std::vector<TensorIn> inputs, std::function<void(Request&)> on_done = {},
                                    int64_t timeout_us = -1, bool park = true);
    // The lean form of that inline run, for a caller that runs the model itself on one request of
    // `rows`: true claims a worker slot (max_queue_delay_us == 0, queue empty, a slot free, rows
    // within max_batch_size, not closed); the caller then must call end_inline(). False: submit().
    bool begin_inline(int64_t rows);
    // Frees the slot begin_inline() claimed and records the request; ok: it was answered.
    void end_inline(int64_t rows, std::chrono::steady_clock::time_point started, bool ok);
    // Blocks until `r` is done; enforces its timeout (a request still queued at its deadline fails
    // with RequestTimeout; one already in a batch runs to the end).
    // The threads waiting on a batch's synchronous requests wake in turn: each wakes the next as
    // it leaves wait() (or, with pass_turn=false, when it calls pass_turn(r) itself, which it
    // then must), so that a big batch does not wake every caller at once into a fight for one
    // lock (such as Python's GIL). Requests nobody waits on yet when the batch ends are not in
    // the chain: their wait() returns at once.
    void wait(Request& r, bool pass_turn = true);
    // Wakes the waiter after `r` (see wait()); once per request, after its wait() returned.
    static void pass_turn(Request& r);
    // Fails `r` with `why` if it is still queued (true); false if a batch has it or it is done.
    bool cancel(Request& r, std::exception_ptr why);
    // Stops accepting requests; drain=true runs what is queued, false fails it with BatcherClosed.
    // Waits for running batches and joins the workers. Idempotent.
    void close(bool drain = true);
    // For process exit: stops the workers after their current batch and answers nobody; callers
    // still waiting (daemon threads) stay parked instead of waking into a finalizing interpreter.
    void abandon();
    bool closed() const;
    // True on a thread that is running this batcher's batch function right now.
    bool in_batch_fn() const;

    BatcherStats stats() const;
    void reset_stats();

private:
    using Clock = std::chrono::steady_clock;
    using ReqPtr = std::shared_ptr<Request>;

    // The batcher whose batch function the current thread is running (close() must not wait
    // on itself).
    static thread_local const Batcher* running_;

    void worker_loop();
    // Under mutex_: moves expired requests from the queue into `out`.
    void take_expired(Clock::time_point now, std::vector<ReqPtr>& out);
    // Under mutex_: picks the next batch from the queue if it should go now; else returns empty and
    // sets `wake` to when it will.
    std::vector<ReqPtr> take_batch(Clock::time_point now, Clock::time_point& wake);
    // Runs a batch and answers its requests (outside mutex_).
    void execute(const std::vector<ReqPtr>& batch);
    void run_batch(const std::vector<ReqPtr>& batch);
    // Under mutex_: marks `r` done, records its latency and wakes its waiter.
    void mark_done_locked(Request& r, Clock::time_point now);
    // Marks finished batch requests done (takes mutex_), then calls their on_done hooks.
    void finish(const std::vector<ReqPtr>& reqs);
    // Wakes the waiters of requests already marked done and calls their on_done; no lock held.
    void notify(const std::vector<ReqPtr>& reqs);
    // Under mutex_: wakes a worker if the queue just became worth looking at.
    void wake_worker_locked(int64_t rows_before);
    void record_queue_time(const std::vector<ReqPtr>& reqs, Clock::time_point now);
    // Under stats_mutex_: counts a batch of `rows` (batches, rows, the size histogram).
    void count_batch_locked(int64_t rows);
    // Lets `r`'s waiter leave wait() and wakes it.
    static void give_turn(Request& r);
    // Under mutex_: true (and a slot taken) when a request may run on its caller's thread now.
    bool claim_inline_locked();
    // Gives back a slot claim_inline_locked() took (takes mutex_).
    void release_inline();

    BatcherConfig config_;
    BatchFn fn_;
    mutable std::mutex mutex_;
    std::condition_variable work_cv_;  // workers: queue changed, a slot freed, or closing
    std::condition_variable idle_cv_;  // close(): a running batch finished
    std::deque<ReqPtr> queue_;
    int active_ = 0;  // batches running (workers and inline callers)
    int64_t queued_rows_ = 0;
    std::atomic<bool> closing_{false};  // written under mutex_; read without it by closed()
    bool drain_ = true;
    std::atomic<bool> abandoned_{false};
    uint64_t next_id_ = 1;
    std::atomic<uint64_t> arrivals_{0};  // requests queued so far (an idle worker spins on it)
    std::vector<std::thread> workers_;
    std::mutex join_mutex_;

    mutable std::mutex stats_mutex_;
    BatcherStats stats_;
    size_t queue_pos_ = 0, latency_pos_ = 0;
};

}  // namespace pyengine
