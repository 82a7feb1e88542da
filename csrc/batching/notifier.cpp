// SPDX-License-Identifier: Apache-2.0
#include "batching/notifier.h"

#include <cerrno>
#include <cstring>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common.h"

namespace pyengine {

Notifier::Notifier() {
    fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd_ < 0) throw SystemError(str("eventfd failed: ", std::strerror(errno)), errno);
}

Notifier::~Notifier() {
    if (fd_ >= 0) ::close(fd_);
}

void Notifier::push(std::shared_ptr<Request> r) {
    std::lock_guard<std::mutex> lk(mutex_);
    done_.push_back(std::move(r));
    if (!signalled_) {
        const uint64_t one = 1;
        // A full counter (2^64 - 2 pending signals) cannot happen: one signal per drain.
        [[maybe_unused]] const ssize_t n = ::write(fd_, &one, sizeof one);
        signalled_ = true;
    }
}

std::vector<std::shared_ptr<Request>> Notifier::drain() {
    std::lock_guard<std::mutex> lk(mutex_);
    if (signalled_) {
        uint64_t value = 0;
        [[maybe_unused]] const ssize_t n = ::read(fd_, &value, sizeof value);
        signalled_ = false;
    }
    std::vector<std::shared_ptr<Request>> out;
    out.swap(done_);
    return out;
}

}  // namespace pyengine
