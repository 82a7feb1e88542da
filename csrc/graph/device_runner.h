// SPDX-License-Identifier: Apache-2.0
// A Model bound to a device: its weights uploaded once, its lowered programs cached per plan.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "graph/model.h"
#include "device/device.h"

namespace pyengine {

class DeviceRunner {
public:
    // Uploads `model`'s weights to CUDA device `index`. Throws DeviceUnavailable naming what is
    // missing (no CUDA support in this build, backend library not loadable, no such GPU).
    // emulate: run on the host emulation of the device executor instead (no GPU needed).
    DeviceRunner(std::shared_ptr<const Model> model, int index, bool emulate = false);

    const Model& model() const { return *model_; }
    const DeviceInfo& device() const { return info_; }
    uint64_t device_bytes() const { return device_->device_bytes(); }

    // Runs like Model::run, on the device. Thread-safe.
    void run(const std::shared_ptr<const Plan>& plan, const std::vector<const void*>& inputs,
             const std::vector<void*>& outputs) const;

private:
    std::shared_ptr<const Model> model_;
    DeviceInfo info_;
    std::unique_ptr<DeviceModel> device_;
    mutable std::mutex mutex_;
    // Keyed by the plan, which the entry keeps alive so the address stays unique.
    mutable std::map<const Plan*, std::pair<std::shared_ptr<const Plan>, std::shared_ptr<const DeviceProgram>>> programs_;
};

}  // namespace pyengine
