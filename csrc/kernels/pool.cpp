// SPDX-License-Identifier: Apache-2.0
#include "kernels/pool.h"

#include "kernels/pool_body.h"
#include "kernels/dispatch.h"

namespace pyengine {

void pool2d_generic(const Pool2DParams& p, const float* x, float* y) { pool_body(p, x, y); }

void pool2d(const Pool2DParams& p, const float* x, float* y) { kernels().pool2d(p, x, y); }

}  // namespace pyengine
