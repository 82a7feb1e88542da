"""ONNX: models built with onnx.helper, run by onnxruntime through pyengine.load and converted to
the native engine; unsupported ops; damaged files; the CLI converter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from framework_models import (
    IMAGE,
    MLP_FEATURES,
    assert_close,
    check_backend_and_native,
    data,
    onnx_cnn,
    onnx_mlp,
    onnx_save,
)

import pyengine

pytestmark = pytest.mark.frameworks
onnx = pytest.importorskip(
    "onnx", reason="the onnx extra (pip install 'pyengine[onnx]') is not installed"
)
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("onnx")
    return {
        "mlp": onnx_save(onnx_mlp(data((64, MLP_FEATURES))), str(d / "mlp.onnx")),
        "cnn": onnx_save(onnx_cnn(data((64, 3, IMAGE, IMAGE))), str(d / "cnn.onnx")),
    }


def _session_reference(path: str):  # type: ignore[no-untyped-def]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("kind, shape", [("mlp", (MLP_FEATURES,)), ("cnn", (3, IMAGE, IMAGE))])
def test_onnx_backend_and_native_match(models: dict[str, str], tmp_path, kind: str, shape) -> None:  # type: ignore[no-untyped-def]
    path = models[kind]
    check_backend_and_native(
        path, "onnx", _session_reference(path), str(tmp_path / f"{kind}.pyem"), shape
    )


def test_cnn_batch_norm_and_activations_fold_into_conv(models: dict[str, str]) -> None:
    from pyengine.convert import to_builder
    from pyengine.locate import locate

    ops = [n["op"] for n in to_builder(locate(models["cnn"])).graph["nodes"]]
    assert "BatchNorm" not in ops and "Clip" not in ops and "Relu" not in ops
    assert ops.count("Conv2D") == 2


def _unsupported_model(path: str) -> str:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Exp", ["x"], ["e"], name="exp_node"),
        helper.make_node("Relu", ["e"], ["r"], name="relu_node"),
        helper.make_node("Log", ["r"], ["y"], name="log_node"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_unsupported_ops_listed_and_auto_falls_back_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _unsupported_model(str(tmp_path / "exp.onnx"))
    with pytest.raises(pyengine.UnsupportedOpsError) as info:
        pyengine.convert(path, str(tmp_path / "exp.pyem"))
    msg = str(info.value)
    assert "exp_node (Exp)" in msg and "log_node (Log)" in msg and path in msg
    assert info.value.ops == [("exp_node", "Exp"), ("log_node", "Log")]
    with pytest.raises(pyengine.UnsupportedOpsError):
        pyengine.load(path, backend="native")
    with pytest.warns(pyengine.FrameworkFallbackWarning, match="runs this model on onnx") as caught:
        model = pyengine.load(path)
    assert len(caught) == 1
    assert model.backend == "onnx"
    x = np.abs(data((2, 4))) + 0.5
    np.testing.assert_allclose(model.predict(x), np.log(np.exp(x)), rtol=1e-5)


def test_cli_convert(models: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    dst = tmp_path / "cli.pyem"
    done = subprocess.run(
        [sys.executable, "-m", "pyengine", "convert", models["mlp"], "-o", str(dst)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and str(dst) in done.stdout
    x = data((4, MLP_FEATURES))
    assert_close(pyengine.load(str(dst)).predict(x), _session_reference(models["mlp"])(x))
    bad = _unsupported_model(str(tmp_path / "exp.onnx"))
    done = subprocess.run(
        [sys.executable, "-m", "pyengine", "convert", bad, "-o", str(tmp_path / "x.pyem")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "exp_node (Exp)" in done.stderr and "log_node (Log)" in done.stderr


def test_corrupt_onnx_is_a_clear_error(models: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    blob = Path(models["cnn"]).read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(blob[: len(blob) // 2])
    for backend in ("onnx", "auto"):
        with pytest.raises(pyengine.ModelFormatError, match="bad.onnx' is not a valid ONNX model"):
            pyengine.load(str(bad), backend=backend)


def test_run_time_batch_reshape_converts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PyTorch's x.view(x.size(0), -1): Shape, Gather, Unsqueeze, Concat feeding a Reshape."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((4 * 6 * 6, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Shape", ["c"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0, name="batch"),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0, name="target"),
        helper.make_node("Reshape", ["c", "target"], ["flat"], name="view"),
        helper.make_node("MatMul", ["flat", "fc"], ["y"], name="fc"),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(fc, "fc"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
    ]
    graph = helper.make_graph(
        nodes,
        "view",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    path = str(tmp_path / "view.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    model = pyengine.load(path, backend="native")
    for batch in (1, 4):
        x = data((batch, 3, 8, 8), seed=batch)
        assert_close(model.predict(x), _session_reference(path)(x))


def test_options_must_apply_to_the_model(models: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="option\\(s\\) chain do not apply to onnx models"):
        pyengine.load(models["mlp"], chain=object())
    model = pyengine.load(models["mlp"], backend="onnx", threads=1)
    assert model.predict(data((1, MLP_FEATURES))).shape == (1, 5)
