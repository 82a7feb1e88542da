"""pyengine.quantize / `pyengine quantize`: a CNN trained on scikit-learn's digits, calibrated
three ways, stays within a point of float accuracy; bad calibration data is named."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import pyengine
from pyengine.quantization.pyem_read import read_pyem


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory):
    """A small conv net fitted on digits in a few numpy steps (least squares on random conv
    features: seconds, no framework), saved as float .pyem; returns (path, x_test, y_test, x_cal)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 1, 3, 3)) * 0.6).astype(np.float32)
    b1 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    g = pyengine.GraphBuilder()
    xin = g.input("x", [-1, 1, 8, 8])
    h = g.node("Conv2D", [xin, g.constant("c1/w", w1), g.constant("c1/b", b1)], name="c1", pads=[1, 1, 1, 1],
               activation="relu")
    h = g.node("MaxPool", [h], name="pool", kernel=[2, 2], strides=[2, 2])
    feat = g.node("Flatten", [h], name="flat")
    g.output(feat)
    tmp = tmp_path_factory.mktemp("digits")
    feats = pyengine.load(g.save(str(tmp / "feat.pyem"))).predict(x[:1200])
    onehot = np.eye(10, dtype=np.float32)[y[:1200]]
    a = np.hstack([feats, np.ones((len(feats), 1), np.float32)])
    sol = np.linalg.lstsq(a.T @ a + 1e-1 * np.eye(a.shape[1]), a.T @ onehot, rcond=None)[0]
    g2 = pyengine.GraphBuilder()
    xin = g2.input("x", [-1, 1, 8, 8])
    h = g2.node("Conv2D", [xin, g2.constant("c1/w", w1), g2.constant("c1/b", b1)], name="c1",
                pads=[1, 1, 1, 1], activation="relu")
    h = g2.node("MaxPool", [h], name="pool", kernel=[2, 2], strides=[2, 2])
    h = g2.node("Flatten", [h], name="flat")
    h = g2.node("Dense", [h, g2.constant("fc/w", sol[:-1].astype(np.float32)),
                          g2.constant("fc/b", sol[-1].astype(np.float32))], name="fc")
    g2.output(g2.node("Softmax", [h], name="probs"))
    path = g2.save(str(tmp / "digits.pyem"))
    return path, x[1200:], y[1200:], x[:300]


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_quantized_digits_cnn_keeps_accuracy(tmp_path, digits_cnn, method):
    path, xt, yt, cal = digits_cnn
    out = str(tmp_path / "q.pyem")
    report = pyengine.quantize(path, cal, out, method=method)
    fp = pyengine.load(path).predict(xt)
    q = pyengine.load(out).predict(xt)
    acc_f, acc_q = np.mean(fp.argmax(1) == yt), np.mean(q.argmax(1) == yt)
    assert acc_f > 0.85, acc_f
    assert acc_q >= acc_f - 0.01, (acc_f, acc_q)
    assert np.mean(fp.argmax(1) == q.argmax(1)) >= 0.98
    graph, tensors = read_pyem(out)
    assert [n["op"] for n in graph["nodes"]] == ["QLinearConv2D", "MaxPool", "Flatten", "QLinearDense", "Softmax"]
    assert tensors["c1/w@int8"].dtype == np.int8 and "c1/w" not in tensors
    assert len(graph["quantization"]["c1/w@int8"]["scale"]) == 16  # per channel
    assert [layer["name"] for layer in report.layers] == ["c1", "fc"]
    assert all(layer["sqnr_db"] > 15 for layer in report.layers), report.text()
    assert report.outputs[0]["top1_agreement"] >= 0.98
    assert report.int8_bytes < 0.5 * report.float_bytes


def test_exclude_keeps_a_layer_in_float_and_cli_reports(tmp_path, digits_cnn):
    path, _, _, cal = digits_cnn
    np.save(tmp_path / "cal.npy", cal)
    out = tmp_path / "q.pyem"
    r = subprocess.run([sys.executable, "-m", "pyengine", "quantize", path, "-o", str(out), "--calibrate",
                        str(tmp_path / "cal.npy"), "--exclude", "fc"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "c1" in r.stdout and "(excluded)" in r.stdout and "SQNR" in r.stdout
    graph, tensors = read_pyem(out)
    assert [n["op"] for n in graph["nodes"] if n["name"] == "fc"] == ["Dense"]
    assert tensors["fc/w"].dtype == np.float32


def test_calibration_directory(tmp_path, digits_cnn):
    path, _, _, cal = digits_cnn
    (tmp_path / "cal").mkdir()
    for i in range(5):
        np.save(tmp_path / "cal" / f"{i}.npy", cal[i])  # single samples [1, 8, 8]
    report = pyengine.quantize(path, tmp_path / "cal", tmp_path / "q.pyem")
    assert report.samples == 5


@pytest.mark.parametrize("data,needle", [
    (np.zeros((4, 8, 8, 1), np.float32), "has shape [4, 8, 8, 1]; the model's input takes [-1, 1, 8, 8]"),
    (np.zeros((4, 1, 8, 8), np.int64), "has dtype int64; expected float32"),
    (np.zeros((0, 1, 8, 8), np.float32), "is empty"),
])
def test_bad_calibration_data_names_expected_and_got(tmp_path, digits_cnn, data, needle):
    with pytest.raises(ValueError) as e:
        pyengine.quantize(digits_cnn[0], data, tmp_path / "q.pyem")
    assert needle in str(e.value)


def test_bad_options_are_named(tmp_path, digits_cnn):
    with pytest.raises(ValueError, match="'nope'.*not nodes"):
        pyengine.quantize(digits_cnn[0], digits_cnn[3], tmp_path / "q.pyem", exclude=["nope"])
    with pytest.raises(ValueError, match="method 'kl'"):
        pyengine.quantize(digits_cnn[0], digits_cnn[3], tmp_path / "q.pyem", method="kl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .npy files"):
        pyengine.quantize(digits_cnn[0], tmp_path / "empty", tmp_path / "q.pyem")


def test_cli_json_has_the_documented_shape(tmp_path, digits_cnn):
    from test_cli import check_shape, documented_shape

    np.save(tmp_path / "cal.npy", digits_cnn[3][:20])
    r = subprocess.run([sys.executable, "-m", "pyengine", "quantize", digits_cnn[0], "-o", str(tmp_path / "q.pyem"),
                        "--calibrate", str(tmp_path / "cal.npy"), "--method", "percentile", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    check_shape(json.loads(r.stdout), documented_shape("quantize"))
    r = subprocess.run([sys.executable, "-m", "pyengine", "quantize", digits_cnn[0], "-o", str(tmp_path / "q.pyem"),
                        "--calibrate", str(tmp_path / "nope.npy")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "nope.npy" in r.stderr
