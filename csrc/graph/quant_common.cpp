// SPDX-License-Identifier: Apache-2.0
#include "graph/quant_common.h"

#include <cmath>

#include "common.h"
#include "format/quant_params.h"

namespace pyengine {

namespace {
void dtype_range(const Attrs& a, const std::string& key, int32_t* lo, int32_t* hi) {
    const std::string dt = a.get_string(key, "uint8", {"uint8", "int8"});
    quant_range(dt == "int8" ? DType::Int8 : DType::UInt8, lo, hi);
}

void check_scale(const Attrs& a, const std::string& key, double s) {
    if (!(s > 0) || !std::isfinite(static_cast<float>(s)) || static_cast<float>(s) <= 0.0f) {
        a.fail(str("attribute '", key, "' is ", s, "; a scale must be a finite number > 0"));
    }
}
}  // namespace

AxisQuant get_axis_quant(const Attrs& a) {
    AxisQuant q;
    dtype_range(a, "dtype", &q.lo, &q.hi);
    q.axis = a.get_int("axis", 1);
    if (!a.has("scale")) a.fail("attribute 'scale' is required");
    std::vector<double> scales;
    std::vector<int64_t> zps;
    // A number or a list (per axis).
    try {
        scales = {static_cast<double>(a.get_float("scale", 0.0f))};
    } catch (const ModelFormatError&) {
        scales = a.get_floats("scale", -1);
    }
    for (double s : scales) {
        check_scale(a, "scale", s);
        q.scale.push_back(static_cast<float>(s));
    }
    if (q.scale.empty()) a.fail("attribute 'scale' is an empty list");
    if (a.has("zero_point")) {
        try {
            zps = {a.get_int("zero_point", 0)};
        } catch (const ModelFormatError&) {
            zps = a.get_ints("zero_point", static_cast<int>(q.scale.size()), {}, -128);
        }
    }
    for (int64_t z : zps) {
        if (z < q.lo || z > q.hi) a.fail(str("attribute 'zero_point' ", z, " is outside [", q.lo, ", ", q.hi, "]"));
        q.zero_point.push_back(static_cast<int32_t>(z));
    }
    if (q.zero_point.empty()) q.zero_point.assign(q.scale.size(), 0);
    if (q.zero_point.size() == 1 && q.scale.size() > 1) q.zero_point.assign(q.scale.size(), q.zero_point[0]);
    if (q.zero_point.size() != q.scale.size()) {
        a.fail(str("attribute 'zero_point' has ", q.zero_point.size(), " entries but 'scale' has ", q.scale.size()));
    }
    return q;
}

ActQuant get_act_quant(const Attrs& a, const std::string& prefix, bool required) {
    ActQuant q;
    const std::string sk = prefix + "_scale", zk = prefix + "_zero_point", dk = prefix + "_dtype";
    dtype_range(a, dk, &q.lo, &q.hi);
    if (!a.has(sk)) {
        if (required) a.fail(str("attribute '", sk, "' is required"));
        if (a.has(zk)) a.fail(str("attribute '", zk, "' needs '", sk, "'"));
        return q;
    }
    q.present = true;
    q.scale = a.get_float(sk, 1.0f);
    check_scale(a, sk, q.scale);
    const int64_t z = a.get_int(zk, 0);
    if (z < q.lo || z > q.hi) a.fail(str("attribute '", zk, "' ", z, " is outside [", q.lo, ", ", q.hi, "]"));
    q.zero_point = static_cast<int32_t>(z);
    return q;
}

void get_quant_activation(const Attrs& a, float* lo, float* hi) {
    const std::string act = a.get_string("activation", "none", {"none", "relu", "relu6", "clip"});
    *lo = -INFINITY;
    *hi = INFINITY;
    if (act == "relu" || act == "relu6") *lo = 0.0f;
    if (act == "relu6") *hi = 6.0f;
    if (act == "clip") {
        *lo = a.get_float("min", -INFINITY);
        *hi = a.get_float("max", INFINITY);
        if (!(*lo <= *hi)) a.fail("attribute 'min' must not exceed 'max'");
    }
}

QuantWeights prepare_quant_weights(const std::string& node, const Tensor* w, int64_t axis, int64_t N, int64_t K,
                                   int64_t stride_n, int64_t stride_k, const Tensor* bias, float x_scale) {
    auto fail = [&](const std::string& what) { throw ModelFormatError(str("node '", node, "': ", what)); };
    if (w == nullptr) fail("the weight (input 1) must be a tensor in the file");
    if (w->dtype != DType::Int8 && w->dtype != DType::UInt8) fail(str("the weight is ", dtype_name(w->dtype), "; expected int8 or uint8"));
    if (w->quant == nullptr) fail("the weight has no scale and zero point (the graph's 'quantization' section)");
    const QuantParams& qp = *w->quant;
    if (qp.per_channel() && qp.axis != axis) {
        fail(str("the weight is quantized per channel along axis ", qp.axis, "; this op needs axis ", axis,
                 " (its output channels)"));
    }
    QuantWeights q;
    q.N = N;
    q.K = K;
    q.centered.resize(static_cast<size_t>(N * K));
    q.wsum.assign(static_cast<size_t>(N), 0);
    q.scale.resize(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) {
        const size_t c = qp.per_channel() ? static_cast<size_t>(n) : 0;
        const int32_t zp = qp.zero_point[c];
        q.scale[static_cast<size_t>(n)] = x_scale * qp.scale[c];
        for (int64_t k = 0; k < K; ++k) {
            const int64_t i = n * stride_n + k * stride_k;
            const int32_t raw = w->dtype == DType::Int8 ? static_cast<const int8_t*>(w->data)[i]
                                                        : static_cast<const uint8_t*>(w->data)[i];
            const int32_t v = raw - zp;
            if (v < -128 || v > 127) {
                fail(str("weight value ", raw, " minus zero point ", zp, " (output channel ", n,
                         ") does not fit int8; the int8 kernels take weights in [zero_point - 128, zero_point + 127]"));
            }
            q.centered[static_cast<size_t>(n * K + k)] = static_cast<int8_t>(v);
            q.wsum[static_cast<size_t>(n)] += v;
        }
    }
    q.packed.resize(qgemm_packed_size(K, N));
    qgemm_pack_b(K, N, q.centered.data(), 1, K, q.packed.data());
    if (bias != nullptr) {
        if (bias->shape.size() != 1 || bias->shape[0] != N) {
            fail(str("the bias has shape ", shape_str(bias->shape), "; expected [", N, "]"));
        }
        q.bias.resize(static_cast<size_t>(N));
        for (int64_t n = 0; n < N; ++n) {
            if (bias->dtype == DType::Int32) {
                q.bias[static_cast<size_t>(n)] = static_cast<const int32_t*>(bias->data)[n];
            } else {
                const double b = std::nearbyint(static_cast<double>(bias->f32()[n]) / q.scale[static_cast<size_t>(n)]);
                q.bias[static_cast<size_t>(n)] = static_cast<int32_t>(std::max(-2147483647.0, std::min(2147483647.0, b)));
            }
        }
    }
    return q;
}

QEpilogue make_qepilogue(const QuantWeights& qw, const ActQuant& x, const ActQuant& y, float lo, float hi) {
    QEpilogue e;
    e.wsum = qw.wsum.data();
    e.bias = qw.bias.empty() ? nullptr : qw.bias.data();
    e.scale = qw.scale.data();
    e.x_zero_point = x.zero_point + x.shift();
    e.lo = lo;
    e.hi = hi;
    e.requantize = y.present;
    e.y_scale = y.scale;
    e.y_zero_point = y.zero_point;
    e.q_lo = y.lo;
    e.q_hi = y.hi;
    return e;
}

}  // namespace pyengine
