// SPDX-License-Identifier: Apache-2.0
// Winograd F(4x4, 3x3) in the blocked layout: the mode switch and the rule that picks it, the
// weight transform, the driver (task split over the pool, per-thread scratch) and the generic
// kernels for blocks 4, 8 and 16.
#include "kernels/conv_winograd.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "common.h"
#include "kernels/dispatch.h"
#include "kernels/nchwc_tasks.h"
#include "platform/thread_pool.h"

namespace pyengine {
namespace {
void act_row(float* row, int64_t n, const Epilogue& e) {
    if (e.act == Activation::None) return;
    for (int64_t i = 0; i < n; ++i) row[i] = activate(row[i], e);
}
}  // namespace
}  // namespace pyengine

#include "kernels/conv_nchwc_body.h"
#include "kernels/conv_winograd_body.h"

namespace pyengine {

namespace {
// The direct kernel's thresholds (kernels/nchwc_tasks.h).
constexpr int64_t kInlineMacs = kNchwcInlineMacs;
constexpr int64_t kTaskMacs = kNchwcTaskMacs;
// Scratch of one task's tile run (transformed inputs and products): 4 MB, so that a run of
// tiles shares each weight read across as many tiles as fit (weights are read once per run).
constexpr int64_t kScratchFloats = int64_t(1) << 20;
}  // namespace

WinogradMode winograd_mode() {
    const char* env = std::getenv("PYENGINE_WINOGRAD");
    const std::string v = env != nullptr ? env : "";
    if (v.empty() || v == "auto") return WinogradMode::Auto;
    if (v == "0") return WinogradMode::Off;
    if (v == "1") return WinogradMode::Always;
    throw InvalidArgument(str("PYENGINE_WINOGRAD='", v, "' is not '0', '1' or 'auto'"));
}

bool winograd_eligible(const NchwcConv& c) {
    const Conv2DParams& p = c.p;
    return !c.depthwise && p.groups == 1 && c.in_block == c.cb && p.KH == 3 && p.KW == 3 && p.stride_h == 1 &&
           p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1 && p.layout == Layout::NCHW;
}

bool winograd_pick(const NchwcConv& c, WinogradMode mode) {
    if (mode == WinogradMode::Off || !winograd_eligible(c)) return false;
    if (mode == WinogradMode::Always) return true;
    const Conv2DParams& p = c.p;
    // Measured (bench/results/winograd_layers.md): Winograd won on every 3x3 stride-1 layer of
    // ResNet-18/50, VGG-16 and DenseNet-121 at 224x224 (1.5x to 2.7x on one thread) but lost
    // where few tiles share large weights (256x256 channels on 4x4: 0.9x; 512x512 on 6x6): its
    // weights are 4x the direct ones and are read once per call's run of tiles, so they need
    // 8 tiles to pay for, unless they are small (C*O <= 16384: at most 2.4 MB transformed,
    // L2-sized; 64x64 channels on 4x4, one tile, still won 1.25x). Below 16 channels the
    // transforms are a larger share of the work (not measured: the first convolution, the
    // only one that narrow in these nets, reads a plain input and is never eligible).
    const int64_t tiles = ((p.OH + kWinoOut - 1) / kWinoOut) * ((p.OW + kWinoOut - 1) / kWinoOut);
    return p.C >= 16 && p.O >= 16 && (tiles * p.N >= 8 || p.C * p.O <= 16384);
}

std::vector<float> winograd_pack_weights(const NchwcConv& c, const float* w) {
    // G of F(4x4, 3x3) (Lavin and Gray), applied as G g G^T.
    static const double G[6][3] = {{1.0 / 4, 0, 0},
                                   {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                   {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                   {0, 0, 1}};
    const Conv2DParams& p = c.p;
    const int64_t cb = c.cb, OB = (p.O + cb - 1) / cb, icp = (p.C + cb - 1) / cb * cb;
    std::vector<float> out(static_cast<size_t>(kWinoPos * OB * icp * cb), 0.0f);
    // Over the pool by output block: a model's first Winograd call pays this (VGG-16's 3x3
    // weights are 4x15M floats).
    auto block = [&](int64_t ob) {
        for (int64_t ci = 0; ci < p.C; ++ci) {
            for (int64_t lane = 0; lane < cb && ob * cb + lane < p.O; ++lane) {
                const float* g = w + ((ob * cb + lane) * p.C + ci) * 9;
                double gg[6][3];  // G g
                for (int r = 0; r < 6; ++r) {
                    for (int j = 0; j < 3; ++j) gg[r][j] = G[r][0] * g[j] + G[r][1] * g[3 + j] + G[r][2] * g[6 + j];
                }
                float* o = out.data() + (ob * icp + ci) * cb + lane;
                for (int r = 0; r < 6; ++r) {
                    for (int q = 0; q < 6; ++q) {
                        const double u = gg[r][0] * G[q][0] + gg[r][1] * G[q][1] + gg[r][2] * G[q][2];
                        o[(r * 6 + q) * OB * icp * cb] = static_cast<float>(u);
                    }
                }
            }
        }
    };
    if (num_threads() > 1 && OB > 1 && p.O * p.C >= 4096) {
        parallel_for(OB, block);
    } else {
        for (int64_t ob = 0; ob < OB; ++ob) block(ob);
    }
    return out;
}

int64_t winograd_scratch_floats(const NchwcConv& c, int64_t tb, int64_t obs) {
    const int64_t icp = (c.p.C + c.cb - 1) / c.cb * c.cb;
    return kWinoPos * tb * (icp + obs * c.cb);
}

NchwcWinogradKernel conv_winograd_generic(int cb) {
    switch (cb) {
        case 4: return wino_body<4, 2, 4>;
        case 8: return wino_body<8, 2, 4>;
        case 16: return wino_body<16, 1, 4>;
        default: return nullptr;
    }
}

void conv_winograd(const NchwcConv& c, const float* x, float* y) {
    const KernelTable& k = kernels();
    if (k.nchwc_block == c.cb && k.conv_winograd != nullptr) {
        conv_winograd_run(k.conv_winograd, k.nchwc_oc_tile, c, x, y);
    } else {
        conv_winograd_run(conv_winograd_generic(c.cb), 1, c, x, y);
    }
}

void conv_winograd_run(NchwcWinogradKernel kern, int oc_tile, const NchwcConv& c, const float* x, float* y) {
    const Conv2DParams& p = c.p;
    if (p.N == 0 || p.O == 0 || p.OH == 0 || p.OW == 0) return;
    const int64_t OB = (p.O + c.cb - 1) / c.cb, icp = (p.C + c.cb - 1) / c.cb * c.cb;
    const int64_t tiles = ((p.OH + kWinoOut - 1) / kWinoOut) * ((p.OW + kWinoOut - 1) / kWinoOut);
    const int64_t macs = p.N * tiles * kWinoPos * icp * OB * c.cb;
    const int threads = num_threads();
    // Tasks over (image, run of output blocks, run of tiles). Output blocks are split first:
    // each task then reads only its blocks' weights (4x the direct ones), and what that
    // repeats, the input transform, costs about 1/O of the GEMM. Tiles are split next, for
    // convolutions with few output blocks (the large early layers).
    int64_t ob_runs = 1, tile_runs = 1;
    if (threads > 1 && macs >= kInlineMacs) {
        const int64_t want = std::min<int64_t>(4 * static_cast<int64_t>(threads), std::max<int64_t>(1, macs / kTaskMacs));
        const int64_t per_image = (want + p.N - 1) / p.N;
        ob_runs = std::clamp<int64_t>(per_image, 1, (OB + oc_tile - 1) / oc_tile);
        // Each run of tiles reads all of its output blocks' weights again: where the weights
        // outweigh the transformed tiles (more output channels than tiles: 9 MB of weights for
        // 256 channels at 14x14, 16 tiles), two threads splitting tiles read them twice and
        // wait on memory, so only output blocks are split there.
        if (p.O <= tiles) tile_runs = std::clamp<int64_t>((per_image + ob_runs - 1) / ob_runs, 1, tiles);
    }
    const int64_t ob_run = (OB + ob_runs - 1) / ob_runs;
    ob_runs = (OB + ob_run - 1) / ob_run;
    const int64_t tile_run = (tiles + tile_runs - 1) / tile_runs;
    tile_runs = (tiles + tile_run - 1) / tile_run;
    const int64_t tb = std::clamp<int64_t>(kScratchFloats / (kWinoPos * (icp + ob_run * c.cb)), 1, tile_run);
    auto task = [&](int64_t n, int64_t r_ob, int64_t r_t) {
        // Per thread and grow-only: a worker runs one task at a time, so concurrent predict
        // calls never share it, and it is allocated once, not per call.
        thread_local std::vector<float> scratch;
        const size_t need = static_cast<size_t>(winograd_scratch_floats(c, tb, ob_run));
        if (scratch.size() < need) scratch.resize(need);
        const int64_t ob0 = r_ob * ob_run, t0 = r_t * tile_run;
        kern(c, x, y, n, ob0, std::min(OB, ob0 + ob_run), t0, std::min(tiles, t0 + tile_run), tb, scratch.data());
    };
    const int64_t tasks = p.N * ob_runs * tile_runs;
    if (threads <= 1 || tasks == 1 || macs < kInlineMacs) {
        for (int64_t t = 0; t < tasks; ++t) task(t / (ob_runs * tile_runs), (t / tile_runs) % ob_runs, t % tile_runs);
        return;
    }
    parallel_for(tasks, [&](int64_t t) { task(t / (ob_runs * tile_runs), (t / tile_runs) % ob_runs, t % tile_runs); });
}

}  // namespace pyengine
