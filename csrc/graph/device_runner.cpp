// SPDX-License-Identifier: Apache-2.0
#include "graph/device_runner.h"

#include "common.h"

namespace pyengine {

namespace {
constexpr size_t kMaxCachedPrograms = 64;
}  // namespace

DeviceRunner::DeviceRunner(std::shared_ptr<const Model> model, int index, bool emulate) : model_(std::move(model)) {
    if (emulate) {
        info_.index = -1;
        info_.name = "host emulation of the device executor";
        const auto span = model_->weight_span();
        device_ = device_model_emulated(span.first, span.second);
        return;
    }
    const CudaRuntime& rt = cuda_runtime();
    if (rt.backend == nullptr) throw DeviceUnavailable(str("device 'cuda:", index, "' is not available: ", rt.error));
    const std::vector<DeviceInfo> devices = rt.backend->devices();
    if (devices.empty()) {
        throw DeviceUnavailable(str("device 'cuda:", index, "' is not available: no CUDA GPU is usable (",
                                    rt.backend->status(), ")"));
    }
    if (index < 0 || static_cast<size_t>(index) >= devices.size()) {
        throw DeviceUnavailable(str("device 'cuda:", index, "' does not exist: this machine has ", devices.size(),
                                    " CUDA GPU(s), cuda:0..cuda:", devices.size() - 1));
    }
    info_ = devices[static_cast<size_t>(index)];
    const auto span = model_->weight_span();
    device_ = rt.backend->load(index, span.first, span.second);
}

void DeviceRunner::run(const std::shared_ptr<const Plan>& plan, const std::vector<const void*>& inputs,
                       const std::vector<void*>& outputs) const {
    std::shared_ptr<const DeviceProgram> prog;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = programs_.find(plan.get());
        if (it != programs_.end()) prog = it->second.second;
    }
    if (!prog) {
        prog = model_->device_program(*plan);
        std::lock_guard<std::mutex> lock(mutex_);
        if (programs_.size() >= kMaxCachedPrograms) programs_.clear();
        programs_.emplace(plan.get(), std::make_pair(plan, prog));
    }
    device_->run(*prog, inputs, outputs);
}

}  // namespace pyengine
