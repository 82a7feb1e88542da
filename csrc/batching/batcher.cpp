// SPDX-License-Identifier: Apache-2.0
#include "batching/batcher.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <pthread.h>

#include "common.h"

namespace pyengine {

namespace {

// How long an idle worker spins for the next request before it blocks.
constexpr std::chrono::microseconds kIdleSpin{50};

void record(std::vector<double>& samples, size_t& pos, double value) {
    if (samples.size() < Batcher::kSampleWindow) {
        samples.push_back(value);
    } else {
        samples[pos] = value;
        pos = (pos + 1) % Batcher::kSampleWindow;
    }
}

double micros(std::chrono::steady_clock::duration d) {
    return std::chrono::duration<double, std::micro>(d).count();
}

}  // namespace

thread_local const Batcher* Batcher::running_ = nullptr;

void batcher_config_validate(const BatcherConfig& c) {
    if (c.max_batch_size < 1) throw InvalidArgument(str("max_batch_size must be >= 1, got ", c.max_batch_size));
    for (int64_t p : c.preferred_batch_sizes) {
        if (p < 1 || p > c.max_batch_size) {
            throw InvalidArgument(str("preferred batch size ", p, " must be between 1 and max_batch_size=", c.max_batch_size));
        }
    }
    if (c.max_queue_delay_us < 0) throw InvalidArgument(str("max_queue_delay_us must be >= 0, got ", c.max_queue_delay_us));
    if (c.max_queue_size < 0) throw InvalidArgument(str("max_queue_size must be >= 0 (0 = unbounded), got ", c.max_queue_size));
    if (c.timeout_us < 0) throw InvalidArgument(str("timeout_us must be >= 0 (0 = none), got ", c.timeout_us));
    if (c.workers < 1 || c.workers > 256) throw InvalidArgument(str("workers must be between 1 and 256, got ", c.workers));
}

Batcher::Batcher(BatcherConfig config, BatchFn fn) : config_(std::move(config)), fn_(std::move(fn)) {
    batcher_config_validate(config_);
    if (!fn_) throw InvalidArgument("the batcher needs a batch function");
    std::sort(config_.preferred_batch_sizes.begin(), config_.preferred_batch_sizes.end());
    stats_.batch_size_histogram.assign(static_cast<size_t>(config_.max_batch_size) + 1, 0);
    workers_.reserve(static_cast<size_t>(config_.workers));
    for (int i = 0; i < config_.workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

Batcher::~Batcher() { close(true); }

std::shared_ptr<Request> Batcher::submit(std::vector<TensorIn> inputs, std::function<void(Request&)> on_done,
                                         int64_t timeout_us, bool park) {
    if (inputs.empty()) throw InvalidArgument("a request needs at least one input");
    int64_t rows = -1;
    for (size_t i = 0; i < inputs.size(); ++i) {
        const TensorIn& t = inputs[i];
        if (t.shape.empty()) {
            throw InvalidArgument(str("input ", i, " is a scalar; batching needs rows along dimension 0 (shape [rows, ...])"));
        }
        if (rows < 0) rows = t.shape[0];
        if (t.shape[0] != rows) {
            throw InvalidArgument(str("input ", i, " has ", t.shape[0], " rows but input 0 has ", rows, "; every input of a request needs the same rows"));
        }
    }
    if (rows < 1) throw InvalidArgument("a request has 0 rows; send at least one");
    if (rows > config_.max_batch_size) {
        throw InvalidArgument(str("a request has ", rows, " rows, more than max_batch_size=", config_.max_batch_size,
                                  "; split it or raise max_batch_size"));
    }
    auto r = std::make_shared<Request>();
    r->inputs_ = std::move(inputs);
    r->rows_ = rows;
    r->on_done_ = std::move(on_done);
    const int64_t t_us = timeout_us < 0 ? config_.timeout_us : timeout_us;

    std::unique_lock<std::mutex> lk(mutex_);
    if (abandoned_ && park) {
        work_cv_.wait(lk, [] { return false; });  // the process is exiting: park this caller
    }
    if (closing_) throw BatcherClosed("the batcher is closed; make a new one with model.batched()");
    if (config_.max_queue_size > 0 && static_cast<int64_t>(queue_.size()) >= config_.max_queue_size) {
        lk.unlock();
        std::lock_guard<std::mutex> s(stats_mutex_);
        ++stats_.queue_full;
        throw QueueFull(str("the batch queue is full (", config_.max_queue_size,
                            " requests waiting, max_queue_size); retry later or raise max_queue_size"));
    }
    r->id_ = next_id_++;
    r->enqueued_ = Clock::now();
    if (t_us > 0) {
        r->has_deadline_ = true;
        r->deadline_ = r->enqueued_ + std::chrono::microseconds(t_us);
    }
    {
        std::lock_guard<std::mutex> s(stats_mutex_);
        ++stats_.requests;
    }
    if (!r->on_done_ && claim_inline_locked()) {
        // Nothing to wait for: run on this thread rather than hand off to a worker and back.
        r->state_ = Request::State::Running;
        lk.unlock();
        const std::vector<ReqPtr> batch{r};
        record_queue_time(batch, r->enqueued_);
        execute(batch);
        release_inline();
        return r;  // answered: notify() ran in execute()
    }
    const int64_t before = queued_rows_;
    queue_.push_back(r);
    arrivals_.fetch_add(1, std::memory_order_release);
    queued_rows_ += r->rows_;
    wake_worker_locked(before);
    return r;
}

bool Batcher::claim_inline_locked() {
    if (closing_ || config_.max_queue_delay_us != 0 || !queue_.empty() || active_ >= config_.workers) return false;
    ++active_;
    return true;
}

void Batcher::release_inline() {
    std::lock_guard<std::mutex> lk(mutex_);
    --active_;
    idle_cv_.notify_all();
    if (!queue_.empty()) work_cv_.notify_one();
}

bool Batcher::begin_inline(int64_t rows) {
    if (rows < 1 || rows > config_.max_batch_size || config_.max_queue_delay_us != 0) return false;
    std::lock_guard<std::mutex> lk(mutex_);
    return claim_inline_locked();
}

void Batcher::end_inline(int64_t rows, Clock::time_point started, bool ok) {
    const auto now = Clock::now();
    release_inline();
    std::lock_guard<std::mutex> s(stats_mutex_);
    ++stats_.requests;
    ++(ok ? stats_.completed : stats_.failed);
    count_batch_locked(rows);
    record(stats_.queue_us, queue_pos_, 0.0);
    record(stats_.latency_us, latency_pos_, micros(now - started));
}

void Batcher::wait(Request& r, bool pass) {
    std::unique_lock<std::mutex> rl(r.m_);
    r.waiting_ = true;
    auto answered = [&] { return r.answered_; };
    if (r.has_deadline_ && !r.cv_.wait_until(rl, r.deadline_, answered)) {
        rl.unlock();
        bool expired = false;
        {
            std::lock_guard<std::mutex> lk(mutex_);
            if (r.state_ == Request::State::Queued && !abandoned_) {
                auto it = std::find_if(queue_.begin(), queue_.end(), [&](const ReqPtr& q) { return q.get() == &r; });
                if (it != queue_.end()) {
                    queue_.erase(it);
                    queued_rows_ -= r.rows_;
                }
                r.error_ = std::make_exception_ptr(RequestTimeout(
                    str("the request waited ", micros(Clock::now() - r.enqueued_) / 1000.0, " ms in the batch queue, longer than its timeout")));
                {
                    std::lock_guard<std::mutex> s(stats_mutex_);
                    ++stats_.timed_out;
                }
                mark_done_locked(r, Clock::now());
                expired = true;
            }
        }
        if (expired) notify({r.shared_from_this()});
        rl.lock();
    }
    r.cv_.wait(rl, [&] { return r.answered_ && r.turn_; });  // woken on its turn
    if (abandoned_) r.cv_.wait(rl, [] { return false; });  // the process is exiting: park for good
    rl.unlock();
    if (pass) pass_turn(r);
}

void Batcher::pass_turn(Request& r) {
    std::shared_ptr<Request> next;
    {
        std::lock_guard<std::mutex> rl(r.m_);
        next = std::move(r.next_turn_);
        r.next_turn_ = nullptr;
    }
    if (next) give_turn(*next);
}

void Batcher::give_turn(Request& r) {
    {
        std::lock_guard<std::mutex> rl(r.m_);
        r.turn_ = true;
    }
    r.cv_.notify_all();
}

bool Batcher::cancel(Request& r, std::exception_ptr why) {
    std::unique_lock<std::mutex> lk(mutex_);
    if (r.state_ != Request::State::Queued) return false;
    auto it = std::find_if(queue_.begin(), queue_.end(), [&](const ReqPtr& q) { return q.get() == &r; });
    if (it != queue_.end()) {
        queue_.erase(it);
        queued_rows_ -= r.rows_;
    }
    r.error_ = std::move(why);
    {
        std::lock_guard<std::mutex> s(stats_mutex_);
        bool timeout = false;
        try {
            std::rethrow_exception(r.error_);
        } catch (const RequestTimeout&) {
            timeout = true;
        } catch (...) {
        }
        ++(timeout ? stats_.timed_out : stats_.cancelled);
    }
    mark_done_locked(r, Clock::now());
    lk.unlock();
    notify({r.shared_from_this()});
    return true;
}

void Batcher::close(bool drain) {
    std::vector<ReqPtr> failed;
    {
        std::lock_guard<std::mutex> lk(mutex_);
        if (!closing_) {
            closing_ = true;
            drain_ = drain;
        }
        if (!drain) {
            const auto err = std::make_exception_ptr(BatcherClosed("the batcher was closed before this request ran"));
            const auto now = Clock::now();
            for (auto& r : queue_) {
                r->error_ = err;
                mark_done_locked(*r, now);
                failed.push_back(std::move(r));
            }
            queue_.clear();
            queued_rows_ = 0;
            std::lock_guard<std::mutex> s(stats_mutex_);
            stats_.closed += failed.size();
        }
        work_cv_.notify_all();
    }
    notify(failed);
    failed.clear();
    if (running_ == this) return;  // called from inside a batch: the workers stop on their own
    {
        std::lock_guard<std::mutex> j(join_mutex_);
        for (auto& t : workers_) {
            if (t.joinable()) t.join();
        }
    }
    std::unique_lock<std::mutex> lk(mutex_);
    idle_cv_.wait(lk, [&] { return active_ == 0; });  // callers running a request inline
}

void Batcher::abandon() {
    {
        std::lock_guard<std::mutex> lk(mutex_);
        closing_ = true;
        abandoned_ = true;
        queue_.clear();  // their callers stay parked in wait()
        queued_rows_ = 0;
        work_cv_.notify_all();
    }
    if (running_ == this) return;
    {
        std::lock_guard<std::mutex> j(join_mutex_);
        for (auto& t : workers_) {
            if (t.joinable()) t.join();
        }
    }
    std::unique_lock<std::mutex> lk(mutex_);
    idle_cv_.wait(lk, [&] { return active_ == 0; });
}

bool Batcher::closed() const { return closing_; }

bool Batcher::in_batch_fn() const { return running_ == this; }

void Batcher::wake_worker_locked(int64_t rows_before) {
    // A worker waiting out the delay need not hear of every arrival: only of the first request,
    // a full batch, or a preferred size within reach.
    const bool worth = rows_before == 0 || config_.max_queue_delay_us == 0 || queued_rows_ >= config_.max_batch_size ||
                       (!config_.preferred_batch_sizes.empty() && queued_rows_ >= config_.preferred_batch_sizes.front());
    if (worth) work_cv_.notify_one();
}

void Batcher::worker_loop() {
    pthread_setname_np(pthread_self(), "pyengine-batch");  // visible in top -H, gdb, /proc
    std::unique_lock<std::mutex> lk(mutex_);
    bool spun = false;  // since the last batch
    for (;;) {
        if (closing_ && queue_.empty()) break;
        if (queue_.empty() && !spun) {
            // Spin briefly for the next request before sleeping: under load one comes within
            // microseconds, and a futex wake-up costs far more (tens of microseconds where an idle
            // vCPU halts). Requests run inline on their callers do not count as arrivals.
            const uint64_t seen = arrivals_.load(std::memory_order_acquire);
            lk.unlock();
            const auto spin_end = Clock::now() + kIdleSpin;
            for (int i = 0; arrivals_.load(std::memory_order_acquire) == seen && !closing_; ++i) {
                cpu_relax();
                if ((i & 63) == 63 && Clock::now() > spin_end) break;
            }
            lk.lock();
            spun = true;
            continue;  // the state changed unlocked: look again (closing_ above)
        }
        if (queue_.empty() || active_ >= config_.workers) {
            work_cv_.wait(lk);
            continue;
        }
        const auto now = Clock::now();
        auto wake = Clock::time_point::max();
        std::vector<ReqPtr> expired, batch;
        take_expired(now, expired);
        for (const auto& r : queue_) {
            if (r->has_deadline_) wake = std::min(wake, r->deadline_);
        }
        if (!queue_.empty()) batch = take_batch(now, wake);
        if (expired.empty() && batch.empty()) {
            work_cv_.wait_until(lk, wake);
            continue;
        }
        if (!batch.empty()) ++active_;
        lk.unlock();
        notify(expired);
        expired.clear();
        if (!batch.empty()) {
            record_queue_time(batch, now);
            execute(batch);
            batch.clear();  // request memory (maybe Python-owned) is freed with no lock held
            lk.lock();
            spun = false;
            --active_;
            idle_cv_.notify_all();
        } else {
            lk.lock();
        }
    }
}

void Batcher::take_expired(Clock::time_point now, std::vector<ReqPtr>& out) {
    size_t kept = 0;
    for (size_t i = 0; i < queue_.size(); ++i) {
        ReqPtr& r = queue_[i];
        if (r->has_deadline_ && r->deadline_ <= now) {
            r->error_ = std::make_exception_ptr(RequestTimeout(
                str("the request waited ", micros(now - r->enqueued_) / 1000.0, " ms in the batch queue, longer than its timeout")));
            mark_done_locked(*r, now);
            queued_rows_ -= r->rows_;
            out.push_back(std::move(r));
        } else {
            if (kept != i) queue_[kept] = std::move(r);
            ++kept;
        }
    }
    queue_.resize(kept);
    if (!out.empty()) {
        std::lock_guard<std::mutex> s(stats_mutex_);
        stats_.timed_out += out.size();
    }
}

void Batcher::count_batch_locked(int64_t rows) {
    ++stats_.batches;
    stats_.rows += static_cast<uint64_t>(rows);
    if (static_cast<size_t>(rows) < stats_.batch_size_histogram.size()) ++stats_.batch_size_histogram[static_cast<size_t>(rows)];
}

void Batcher::record_queue_time(const std::vector<ReqPtr>& reqs, Clock::time_point now) {
    std::lock_guard<std::mutex> s(stats_mutex_);
    for (const auto& r : reqs) record(stats_.queue_us, queue_pos_, micros(now - r->enqueued_));
}

void Batcher::mark_done_locked(Request& r, Clock::time_point now) {
    r.state_ = Request::State::Done;
    {
        std::lock_guard<std::mutex> s(stats_mutex_);
        record(stats_.latency_us, latency_pos_, micros(now - r.enqueued_));
    }
}

void Batcher::finish(const std::vector<ReqPtr>& reqs) {
    {
        std::lock_guard<std::mutex> lk(mutex_);
        const auto now = Clock::now();
        for (const auto& r : reqs) mark_done_locked(*r, now);
    }
    notify(reqs);
}

void Batcher::notify(const std::vector<ReqPtr>& reqs) {
    // The threads waiting on synchronous requests form a chain, each woken by the one before it
    // (see wait()): every request is answered and linked before the head can run and pass its
    // turn on. A request without a waiter yet has its turn now (its wait() returns at once).
    Request* prev_sync = nullptr;
    Request* head = nullptr;
    for (const auto& r : reqs) {
        bool chained = false;
        {
            std::lock_guard<std::mutex> rl(r->m_);
            r->answered_ = true;
            chained = !r->on_done_ && r->waiting_;
            if (!chained) r->turn_ = true;
        }
        if (!chained) continue;
        if (prev_sync != nullptr) {
            std::lock_guard<std::mutex> pl(prev_sync->m_);
            prev_sync->next_turn_ = r;
        } else {
            head = r.get();
        }
        prev_sync = r.get();
    }
    if (head != nullptr) give_turn(*head);
    for (const auto& r : reqs) {
        if (!r->on_done_) continue;
        r->cv_.notify_all();
        auto hook = std::move(r->on_done_);
        r->on_done_ = nullptr;
        try {
            hook(*r);
        } catch (...) {
            // A hook only hands the request on (to a notifier); nothing here can answer twice.
        }
    }
}

BatcherStats Batcher::stats() const {
    std::lock_guard<std::mutex> s(stats_mutex_);
    return stats_;
}

void Batcher::reset_stats() {
    std::lock_guard<std::mutex> s(stats_mutex_);
    BatcherStats fresh;
    fresh.batch_size_histogram.assign(stats_.batch_size_histogram.size(), 0);
    stats_ = std::move(fresh);
    queue_pos_ = latency_pos_ = 0;
}

}  // namespace pyengine
