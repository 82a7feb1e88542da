// SPDX-License-Identifier: Apache-2.0
// A completion queue with a file descriptor that becomes readable when requests finish, so an
// event loop (asyncio's add_reader) learns of answers without the batcher thread touching Python.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "batching/batcher.h"

namespace pyengine {

class Notifier {
public:
    // Opens an eventfd; throws SystemError.
    Notifier();
    ~Notifier();
    Notifier(const Notifier&) = delete;
    Notifier& operator=(const Notifier&) = delete;

    // Readable while finished requests wait to be drained.
    int fd() const { return fd_; }
    // Adds a finished request; signals the fd when the queue was empty. Called from any thread.
    void push(std::shared_ptr<Request> r);
    // Takes every finished request and clears the signal.
    std::vector<std::shared_ptr<Request>> drain();

private:
    int fd_ = -1;
    std::mutex mutex_;
    bool signalled_ = false;
    std::vector<std::shared_ptr<Request>> done_;
};

}  // namespace pyengine
