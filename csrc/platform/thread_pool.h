// SPDX-License-Identifier: Apache-2.0
// The intra-op thread pool: one per process, shared by every model and caller.
//
// A caller that finds the pool busy (another caller's op is using it) or that is itself a
// pool worker runs its work inline, so concurrent predict calls never queue behind each other
// and the process never runs more than num_threads() intra-op threads for one op.
#pragma once

#include <cstdint>
#include <functional>

namespace pyengine {

// Threads intra-op work may use: PYENGINE_NUM_THREADS if set (>= 1), else the online cores.
int num_threads();
// Changes the thread count (n >= 1); waits for a running parallel_for to finish first.
void set_num_threads(int n);

// Calls fn(task) for every task in [0, n_tasks), spread over the pool; returns when all ran.
// Runs inline (on the calling thread, in order) when n_tasks <= 1, num_threads() == 1, the pool
// is busy, or the caller is a pool worker. An exception from fn is rethrown here.
void parallel_for(int64_t n_tasks, const std::function<void(int64_t)>& fn);

// While one of these exists (a model run holds one), idle workers wait for the next job by
// spinning, up to PYENGINE_RUN_SPIN_US (default 200) per wait, instead of going to sleep after
// PYENGINE_SPIN_US: the parallel ops of one inference come back to back, separated only by the
// small ops the caller runs alone, and waking a sleeping worker costs tens of microseconds each
// time. Between runs workers sleep as before.
class KeepWorkersAwake {
public:
    KeepWorkersAwake();
    ~KeepWorkersAwake();
    KeepWorkersAwake(const KeepWorkersAwake&) = delete;
    KeepWorkersAwake& operator=(const KeepWorkersAwake&) = delete;
};

}  // namespace pyengine
