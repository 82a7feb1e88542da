"""Finding the model in a file or directory, and a missing framework: framework-independent checks
of pyengine.load's backend selection."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from models import mlp

import pyengine


def test_directory_without_a_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "README.txt").write_text("not a model")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(pyengine.ModelFormatError) as info:
        pyengine.load(str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path) in msg and "holds no recognisable model" in msg
    assert (
        "*.pb" in msg
        and "-symbol.json" in msg
        and "model.npz" in msg
        and "*.onnx" in msg
        and "*.pyem" in msg
    )


def test_two_candidate_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mlp(str(tmp_path / "a.pyem"))
    (tmp_path / "b.onnx").write_bytes(b"onnx")
    with pytest.raises(pyengine.ModelFormatError) as info:
        pyengine.load(str(tmp_path))
    msg = str(info.value)
    assert "2 candidate models" in msg and "a.pyem (native)" in msg and "b.onnx (onnx)" in msg
    model = pyengine.load(str(tmp_path / "a.pyem"))  # naming the file picks one
    assert model.backend == "native"


def test_single_top_level_folder_is_descended(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "digits-v2").mkdir()
    mlp(str(tmp_path / "digits-v2" / "model.pyem"))
    model = pyengine.load(str(tmp_path))
    assert model.backend == "native"
    assert model.predict(np.zeros((2, 64), np.float32)).shape == (2, 10)


def test_unrecognised_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "model.bin"
    f.write_bytes(b"\0" * 8)
    with pytest.raises(
        pyengine.ModelFormatError, match="model.bin' is not a recognisable model file; expected"
    ):
        pyengine.load(str(f))


def test_missing_framework_names_the_extra(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "model.onnx").write_bytes(b"\0")
    # A real process where importing onnx fails, as on a device without the extra installed.
    code = (
        "import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None\n"
        "import pyengine\n"
        "try:\n"
        f"    pyengine.load({str(tmp_path)!r}, backend='onnx')\n"
        "except pyengine.BackendUnavailableError as exc:\n"
        "    print('ERR', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ERR" in done.stdout and "pip install 'pyengine[onnx]'" in done.stdout


def test_backend_must_match_the_model_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = mlp(str(tmp_path / "m.pyem"))
    with pytest.raises(pyengine.ModelFormatError, match="is a native model, not a onnx one"):
        pyengine.load(path, backend="onnx")
    with pytest.raises(ValueError, match="backend='caffe' is not one of"):
        pyengine.load(path, backend="caffe")


def test_npz_data_beside_a_model_is_not_a_candidate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mlp(str(tmp_path / "model.pyem"))
    np.savez(tmp_path / "samples.npz", x=np.zeros((2, 64), np.float32))
    assert pyengine.load(str(tmp_path)).backend == "native"
