"""Chainer: chains built and briefly trained here, saved as model.npz with their code and a
pyengine.json manifest (or given as chain=), run by Chainer through pyengine.load and converted to
the native engine by tracing a forward pass (NCHW)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from framework_models import (
    IMAGE,
    MLP_FEATURES,
    assert_close,
    chainer_train_save,
    check_backend_and_native,
    data,
)

import pyengine

pytestmark = pytest.mark.frameworks
chainer = pytest.importorskip(
    "chainer", reason="the chainer extra (pip install 'pyengine[chainer]') is not installed"
)
import chainer_nets  # noqa: E402  (needs chainer)


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("chainer")
    mlp, cnn = chainer_nets.MLP(), chainer_nets.CNN()
    return {
        "mlp": (mlp, chainer_train_save(mlp, data((32, MLP_FEATURES)), str(d / "mlp"), "MLP")),
        "cnn": (cnn, chainer_train_save(cnn, data((32, 3, IMAGE, IMAGE)), str(d / "cnn"), "CNN")),
    }


def _reference(chain):  # type: ignore[no-untyped-def]
    def run(x: np.ndarray) -> np.ndarray:
        with chainer.using_config("train", False), chainer.no_backprop_mode():
            return chain(x).array

    return run


@pytest.mark.parametrize("kind, shape", [("mlp", (MLP_FEATURES,)), ("cnn", (3, IMAGE, IMAGE))])
def test_chainer_backend_and_native_match(chains, tmp_path, kind: str, shape) -> None:  # type: ignore[no-untyped-def]
    chain, folder = chains[kind]
    check_backend_and_native(
        folder, "chainer", _reference(chain), str(tmp_path / f"{kind}.pyem"), shape
    )


def test_chain_instance_instead_of_manifest(chains, tmp_path) -> None:  # type: ignore[no-untyped-def]
    chain, folder = chains["cnn"]
    npz = tmp_path / "model.npz"
    shutil.copy(os.path.join(folder, "model.npz"), npz)
    fresh = chainer_nets.CNN()  # untrained: the weights come from model.npz
    x = data((2, 3, IMAGE, IMAGE))
    model = pyengine.load(str(tmp_path), backend="chainer", chain=fresh)
    np.testing.assert_allclose(model.predict(x), _reference(chain)(x), rtol=1e-5, atol=1e-6)
    native = pyengine.load(
        str(tmp_path), chain=chainer_nets.CNN(), input_shapes={"x": [-1, 3, IMAGE, IMAGE]}
    )
    assert native.backend == "native"
    assert_close(native.predict(x), _reference(chain)(x))


def test_package_without_code_is_a_clear_error(chains, tmp_path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(os.path.join(chains["mlp"][1], "model.npz"), tmp_path / "model.npz")
    for backend in ("chainer", "auto"):
        with pytest.raises(pyengine.ModelFormatError) as info:
            pyengine.load(str(tmp_path), backend=backend)
        msg = str(info.value)
        assert (
            str(tmp_path / "model.npz") in msg
            and "chain=" in msg
            and "pyengine.json manifest" in msg
        )


def test_corrupt_npz_is_a_clear_error(chains, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "bad"
    shutil.copytree(chains["mlp"][1], folder)
    npz = folder / "model.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    for backend in ("chainer", "auto"):
        with pytest.raises(pyengine.ModelFormatError) as info:
            pyengine.load(str(folder), backend=backend)
        assert str(npz) in str(info.value) and "is not a readable Chainer .npz" in str(info.value)


def test_manifest_naming_a_missing_module(chains, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "nomodule"
    shutil.copytree(chains["mlp"][1], folder)
    os.remove(folder / "net.py")
    with pytest.raises(pyengine.ModelFormatError, match="names module 'net.py'.*does not exist"):
        pyengine.load(str(folder), backend="chainer")


def test_manifest_without_input_shapes_runs_on_chainer_under_auto(chains, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    chain, source = chains["mlp"]
    folder = tmp_path / "noshape"
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "pyengine.json").read_text())
    del manifest["inputs"]
    (folder / "pyengine.json").write_text(json.dumps(manifest))
    with pytest.raises(pyengine.InputShapeUnknownError, match="input_shapes="):
        pyengine.load(str(folder), backend="native")
    with pytest.warns(pyengine.FrameworkFallbackWarning, match="runs this model on chainer"):
        model = pyengine.load(str(folder))
    assert model.backend == "chainer"
    x = data((2, MLP_FEATURES))
    np.testing.assert_allclose(model.predict(x), _reference(chain)(x), rtol=1e-5, atol=1e-6)
    native = pyengine.load(str(folder), input_shapes={"x": [-1, MLP_FEATURES]})
    assert native.backend == "native"
    assert_close(native.predict(x), _reference(chain)(x))


def _native_ops(path: str, **options) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(op, fused activation) of each node of the converted graph."""
    from pyengine.convert import to_builder
    from pyengine.locate import locate

    nodes = to_builder(locate(path), **options).graph["nodes"]
    return [(n["op"], n.get("attrs", {}).get("activation", "")) for n in nodes]


def test_lrn_hard_sigmoid_swish(tmp_path) -> None:  # type: ignore[no-untyped-def]
    chain = chainer_nets.LRNNet()
    folder = chainer_train_save(chain, data((16, 3, IMAGE, IMAGE)), str(tmp_path / "lrn"), "LRNNet")
    assert not np.all(chain.swish.beta.array == 1)  # trained: the general x * sigmoid(beta * x)
    check_backend_and_native(folder, "chainer", _reference(chain), str(tmp_path / "lrn.pyem"), (3, IMAGE, IMAGE))
    ops = _native_ops(folder)
    assert ops.count(("LRN", "")) == 2 and ("Conv2D", "hard_sigmoid") in ops


def test_free_image_size_is_refused_at_convert(chains, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Chainer converts by tracing a sample input: every size but the batch must be given."""
    chain, folder = chains["cnn"]
    with pytest.raises(pyengine.InputShapeUnknownError, match=r"input 'x''s shape .*input_shapes="):
        pyengine.convert(folder, str(tmp_path / "no.pyem"), input_shapes={"x": [-1, 3, -1, -1]})
    assert not (tmp_path / "no.pyem").exists()


def test_int32_ids_through_embed_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A manifest input with "dtype": "int32" feeds EmbedID: native and Chainer take int32 ids;
    a dtype the engine lacks is refused naming the manifest field."""
    import json

    ids = np.random.default_rng(0).integers(0, 30, (8, 6)).astype(np.int32)
    net = chainer_nets.EmbedNet()
    folder = chainer_train_save(net, ids, str(tmp_path / "emb"), "EmbedNet")
    manifest_path = os.path.join(folder, "pyengine.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["inputs"][0]["dtype"] = "int32"
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    with chainer.using_config("train", False):
        expected = net(ids[:3]).array
    for backend in ("native", "chainer"):
        model = pyengine.load(folder, backend=backend)
        assert model.inputs[0].dtype == "int32"
        assert_close(np.asarray(model.predict(ids[:3])), expected)
    manifest["inputs"][0]["dtype"] = "complex64"
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(pyengine.ModelFormatError, match=r"inputs\[0\]\.dtype is 'complex64'"):
        pyengine.convert(folder, str(tmp_path / "bad.pyem"))
