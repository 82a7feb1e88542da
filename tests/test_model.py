"""The native Model from Python: loading, predict's checks, threads, info and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from models import cnn, mlp

import pyengine


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    return mlp(str(tmp_path_factory.mktemp("m") / "mlp.pyem"))


def numpy_mlp(path: str, x: np.ndarray) -> np.ndarray:
    """The MLP recomputed in numpy from the builder's seed."""
    rng = np.random.default_rng(0)
    h = x.astype(np.float64)
    sizes = (64, 256, 256, 10)
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.standard_normal((k, n)).astype(np.float32) / np.sqrt(k)
        b = rng.standard_normal(n).astype(np.float32) * 0.1
        h = h @ w + b
        if i < 2:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_load_and_predict(mlp_path):
    model = pyengine.load(mlp_path)
    assert model.backend == "native"
    assert model.inputs == [pyengine.TensorSpec("x", (-1, 64), "float32")]
    assert model.outputs == [pyengine.TensorSpec("probs:0", (-1, 10), "float32")]
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    y = model.predict(x)
    np.testing.assert_allclose(y, numpy_mlp(mlp_path, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict({"x": x}), y)
    assert model.predict(x[:0]).shape == (0, 10)


def test_load_directory_with_one_model(tmp_path):
    mlp(str(tmp_path / "pkg" / "inner.pyem")) if (tmp_path / "pkg").mkdir() is None else None
    assert pyengine.load(str(tmp_path)).backend == "native"


def test_predict_errors(mlp_path):
    model = pyengine.load(mlp_path)
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError, match=r"input 'x' has shape \[2, 63\], expected \[-1, 64\]"):
        model.predict(np.zeros((2, 63), np.float32))
    with pytest.raises(ValueError, match="input 'x' has dtype float64, expected float32"):
        model.predict(x.astype(np.float64))
    with pytest.raises(ValueError, match="big-endian"):
        model.predict(x.astype(">f4"))
    with pytest.raises(ValueError, match=r"missing input\(s\) \['x'\]"):
        model.predict({})
    with pytest.raises(ValueError, match=r"unknown input name\(s\) \['z'\]"):
        model.predict({"x": x, "z": x})
    with pytest.raises(ValueError, match="must be a numpy array, got list"):
        model.predict([[0.0] * 64])
    # Non-contiguous arrays are accepted (copied).
    wide = np.zeros((2, 128), np.float32)
    assert model.predict(wide[:, ::2]).shape == (2, 10)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at"):
        pyengine.load(str(tmp_path / "missing.pyem"))
    with pytest.raises(ValueError, match="backend='keras' is not one of"):
        pyengine.load(str(tmp_path), backend="keras")
    bad = tmp_path / "bad.pyem"
    bad.write_bytes(b"\x89PYEM\r\n\x1a" + b"\0" * 200)
    with pytest.raises(pyengine.ModelFormatError, match="not supported|not a valid"):
        pyengine.load(str(bad))


def test_concurrent_predict_is_correct(tmp_path):
    model = pyengine.load(cnn(str(tmp_path / "cnn.pyem")))
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((b, 1, 28, 28)).astype(np.float32) for b in (1, 2, 3, 4, 5, 6, 7, 8)]
    expected = [model.predict(x) for x in inputs]
    errors: list[str] = []

    def worker(k: int) -> None:
        for i in range(40):
            j = (i + k) % len(inputs)
            y = model.predict(inputs[j])
            if not np.array_equal(y, expected[j]):
                errors.append(f"thread {k} call {i}: result differs")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_layouts_agree(tmp_path):
    x = np.random.default_rng(4).standard_normal((3, 1, 28, 28)).astype(np.float32)
    nchw = pyengine.load(cnn(str(tmp_path / "a.pyem"), "NCHW")).predict(x)
    nhwc = pyengine.load(cnn(str(tmp_path / "b.pyem"), "NHWC")).predict(x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(nchw, nhwc, rtol=1e-5, atol=1e-5)


def test_info():
    info = pyengine.info()
    assert info["version"] == pyengine.__version__
    assert info["kernel_variant"] in info["kernels_available"]
    assert "native" in info["backends"]
    assert info["threads"] >= 1
    assert "Conv2D" in info["ops"]


def test_cli_info_and_run(mlp_path, tmp_path):
    out = subprocess.run([sys.executable, "-m", "pyengine", "info", "--json"], capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout)["version"] == pyengine.__version__
    x = np.ones((2, 64), np.float32)
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-m", "pyengine", "run", mlp_path, "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy")], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), pyengine.load(mlp_path).predict(x))
    bad = subprocess.run([sys.executable, "-m", "pyengine", "run", str(tmp_path / "nope.pyem"),
                          "--input", str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no model at" in bad.stderr


def test_interpreter_exit_with_daemon_threads_in_predict(tmp_path):
    """Daemon threads inside predict when the interpreter exits: they must not abort the
    process (taking the GIL back then ends the thread; that may not pass a noexcept frame)."""
    path = cnn(str(tmp_path / "cnn.pyem"))
    code = (
        "import threading, numpy as np, pyengine\n"
        f"m = pyengine.load({path!r})\n"
        "x = np.ones((8, 1, 28, 28), np.float32)\n"
        "def loop():\n"
        "    while True:\n"
        "        m.predict(x)\n"
        "for _ in range(4):\n"
        "    threading.Thread(target=loop, daemon=True).start()\n"
        "m.predict(x)\n"
        "print('exiting', flush=True)\n"
    )
    for _ in range(5):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip() == "exiting"
