// SPDX-License-Identifier: Apache-2.0
// The batcher's batches: which queued requests go together (take_batch), their rows gathered
// into one input and the outputs handed back as views (run_batch), and a failed batch run again
// request by request so that one bad request fails only its caller (execute).
#include "batching/batcher.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace pyengine {

namespace {

// Requests batch together when every input has the same dtype, item size and trailing dimensions.
bool compatible(const std::vector<TensorIn>& a, const std::vector<TensorIn>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        if (a[i].dtype != b[i].dtype || a[i].itemsize != b[i].itemsize || a[i].shape.size() != b[i].shape.size()) return false;
        if (!std::equal(a[i].shape.begin() + 1, a[i].shape.end(), b[i].shape.begin() + 1)) return false;
    }
    return true;
}

size_t row_bytes(const Shape& shape, size_t itemsize) {
    size_t n = itemsize;
    for (size_t d = 1; d < shape.size(); ++d) n *= static_cast<size_t>(shape[d]);
    return n;
}

std::shared_ptr<void> aligned_buffer(size_t bytes) {
    const size_t size = std::max<size_t>((bytes + 63) / 64 * 64, 64);
    void* p = std::aligned_alloc(64, size);
    if (p == nullptr) throw std::bad_alloc();
    return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

}  // namespace

std::vector<Batcher::ReqPtr> Batcher::take_batch(Clock::time_point now, Clock::time_point& wake) {
    const ReqPtr& head = queue_.front();
    std::vector<size_t> picked;
    int64_t rows = 0;
    bool full = false;
    for (size_t i = 0; i < queue_.size(); ++i) {
        const ReqPtr& r = queue_[i];
        if (!compatible(head->inputs_, r->inputs_)) continue;
        if (rows + r->rows_ > config_.max_batch_size) {
            full = true;
            break;
        }
        rows += r->rows_;
        picked.push_back(i);
    }
    full = full || rows == config_.max_batch_size;
    const auto due_at = head->enqueued_ + std::chrono::microseconds(config_.max_queue_delay_us);
    const bool due = closing_ || config_.max_queue_delay_us == 0 || now >= due_at;
    if (!full && !due) {
        // A preferred size that the queue can fill goes at once: the largest one reachable.
        int64_t target = 0;
        for (int64_t p : config_.preferred_batch_sizes) {
            if (p <= rows) target = p;
        }
        if (target == 0) {
            wake = std::min(wake, due_at);
            return {};
        }
        int64_t sum = 0;
        size_t n = 0;
        while (n < picked.size() && sum + queue_[picked[n]]->rows_ <= target) sum += queue_[picked[n++]]->rows_;
        picked.resize(std::max<size_t>(n, 1));
    }
    std::vector<ReqPtr> batch;
    batch.reserve(picked.size());
    std::deque<ReqPtr> rest;
    size_t k = 0;
    for (size_t i = 0; i < queue_.size(); ++i) {
        if (k < picked.size() && picked[k] == i) {
            queue_[i]->state_ = Request::State::Running;
            queued_rows_ -= queue_[i]->rows_;
            batch.push_back(std::move(queue_[i]));
            ++k;
        } else {
            rest.push_back(std::move(queue_[i]));
        }
    }
    queue_.swap(rest);
    return batch;
}

void Batcher::run_batch(const std::vector<ReqPtr>& batch) {
    const std::vector<TensorIn>& first = batch.front()->inputs_;
    int64_t rows = 0;
    for (const auto& r : batch) rows += r->rows_;
    std::vector<TensorIn> inputs;
    if (batch.size() == 1) {
        inputs = first;  // one request: its own memory, no copy
    } else {
        inputs.reserve(first.size());
        for (size_t i = 0; i < first.size(); ++i) {
            const size_t rb = row_bytes(first[i].shape, first[i].itemsize);
            std::shared_ptr<void> buf = aligned_buffer(rb * static_cast<size_t>(rows));
            char* dst = static_cast<char*>(buf.get());
            for (const auto& r : batch) {
                const size_t n = rb * static_cast<size_t>(r->rows_);
                if (n > 0) std::memcpy(dst, r->inputs_[i].data, n);
                dst += n;
            }
            TensorIn t;
            t.data = buf.get();
            t.dtype = first[i].dtype;
            t.itemsize = first[i].itemsize;
            t.shape = first[i].shape;
            t.shape[0] = rows;
            t.owner = std::move(buf);
            inputs.push_back(std::move(t));
        }
    }
    {
        std::lock_guard<std::mutex> s(stats_mutex_);
        count_batch_locked(rows);
    }
    std::vector<TensorOut> outs;
    {
        // close() called from inside the batch function must not wait on itself.
        struct Running {
            explicit Running(const Batcher* b) : prev(running_) { running_ = b; }
            ~Running() { running_ = prev; }
            const Batcher* prev;
        } running(this);
        outs = fn_(inputs, rows);
    }
    for (size_t o = 0; o < outs.size(); ++o) {
        if (outs[o].shape.empty() || outs[o].shape[0] != rows) {
            throw InvalidArgument(str("output ", o, " has shape ", shape_str(outs[o].shape), " for a batch of ", rows,
                                      " rows; batching needs outputs whose first dimension is the batch"));
        }
    }
    int64_t offset = 0;
    for (const auto& r : batch) {
        r->outputs_.clear();
        for (const TensorOut& out : outs) {
            TensorOut v = out;
            v.data = static_cast<char*>(out.data) + row_bytes(out.shape, out.itemsize) * static_cast<size_t>(offset);
            v.shape[0] = r->rows_;
            if (batch.size() > 1) v.user = nullptr;
            r->outputs_.push_back(std::move(v));
        }
        offset += r->rows_;
    }
}

void Batcher::execute(const std::vector<ReqPtr>& batch) {
    uint64_t failed = 0, isolated = 0;
    try {
        run_batch(batch);
    } catch (...) {
        if (batch.size() == 1) {
            batch.front()->error_ = std::current_exception();
            failed = 1;
        } else {
            // Find out whose rows failed: each request again on its own, so one bad request
            // fails only its caller.
            for (const auto& r : batch) {
                ++isolated;
                try {
                    run_batch({r});
                } catch (...) {
                    r->outputs_.clear();
                    r->error_ = std::current_exception();
                    ++failed;
                }
            }
        }
    }
    {
        std::lock_guard<std::mutex> s(stats_mutex_);
        stats_.failed += failed;
        stats_.completed += batch.size() - failed;
        stats_.isolation_runs += isolated;
    }
    finish(batch);
}

}  // namespace pyengine
