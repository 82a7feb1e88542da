"""The ONNX backend test data shipped in the onnx package (pytorch-converted, pytorch-operator):
every case whose ops the converter supports runs natively and matches its expected outputs."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

import pyengine
from bench.conformance import matches, run_cases, tensor_cases

pytestmark = pytest.mark.frameworks
onnx = pytest.importorskip(
    "onnx", reason="the onnx extra (pip install 'pyengine[onnx]') is not installed"
)

SUITES = ("pytorch-converted", "pytorch-operator")
# Cases whose ops all convert today: 71 of 117. Fewer would mean an importer regressed.
MIN_SUPPORTED = 65


def _cases() -> list[str]:
    base = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    return [d for s in SUITES for d in sorted(glob.glob(os.path.join(base, s, "test_*")))]


def _tensors(folder: str, kind: str) -> list[np.ndarray]:
    from onnx import numpy_helper

    files = sorted(
        glob.glob(os.path.join(folder, f"{kind}_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3])
    )
    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in files]


def test_onnx_backend_suite_runs_natively(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cases = _cases()
    assert len(cases) > 100, "the onnx package ships its backend test data"
    ran, passed, failures, unsupported = 0, 0, [], {}
    for case in cases:
        name = os.path.basename(case)
        dst = str(tmp_path / f"{name}.pyem")
        try:
            pyengine.convert(os.path.join(case, "model.onnx"), dst)
        except pyengine.UnsupportedOpsError as exc:
            unsupported[name] = sorted({op for _, op in exc.ops})
            continue
        model = pyengine.load(dst)
        for data_set in sorted(glob.glob(os.path.join(case, "test_data_set_*"))):
            inputs, expected = _tensors(data_set, "input"), _tensors(data_set, "output")
            ran += 1
            out = model.predict(dict(zip([s.name for s in model.inputs], inputs)))
            outs = list(out.values()) if isinstance(out, dict) else [out]
            ok = len(outs) == len(expected) and all(
                matches(a, e, rtol=1e-3, atol=1e-5) for a, e in zip(outs, expected)
            )
            if ok:
                passed += 1
            else:
                failures.append(name)
    print(
        f"\nONNX backend suite: {len(cases)} cases, {ran} ran natively, {passed} passed, "
        f"{len(unsupported)} have unsupported ops"
    )
    assert not failures, f"native outputs differ from the expected ones in {failures}"
    assert passed == ran >= MIN_SUPPORTED, (ran, passed, unsupported)


# ONNX's node conformance cases (bench/conformance.py writes the full table): tensor cases that
# pass natively today (1202 of 1506 with onnx 1.23; the target is at least 60 %). Fewer means
# an op or the importer regressed.
MIN_NODE_PASSED = 1202


def test_onnx_node_conformance_cases_pass_or_refuse_cleanly() -> None:
    cases = tensor_cases()
    assert len(cases) > 1000, "onnx generates its node test cases"
    results = run_cases(cases)
    bad = [(r.name, r.result, r.detail) for r in results if r.result in ("wrong", "error")]
    assert not bad, f"wrong answers or errors: {bad}"
    passed = sum(r.result == "passed" for r in results)
    print(f"\nONNX node cases: {passed} of {len(results)} pass natively")
    assert passed >= MIN_NODE_PASSED, passed
    # The fixed cases: an infinite Clip bound, negative Flatten axes, a Constant-only graph.
    by_name = {r.name: r.result for r in results}
    for name in ("test_clip_default_inbounds", "test_flatten_negative_axis1", "test_constant"):
        assert by_name[name] == "passed", (name, by_name[name])
    # Typed values (int64, int32, uint8 and bool inputs, outputs and values between ops).
    for name in ("test_equal", "test_where_example", "test_gather_negative_indices",
                 "test_argmin_negative_axis_keepdims_random_select_last_index", "test_not_2d",
                 "test_and_bcast3v1d", "test_xor4d", "test_mod_mixed_sign_int64",
                 "test_pow_types_float32_int64", "test_gather_elements_negative_indices",
                 "test_tril_neg", "test_isinf", "test_isnan", "test_less_equal_bcast",
                 "test_add_uint8"):
        assert by_name[name] == "passed", (name, by_name[name])
