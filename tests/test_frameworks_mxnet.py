"""MXNet: Gluon networks built and briefly trained here, exported as symbol + params checkpoints,
run by MXNet through pyengine.load and converted to the native engine (NCHW)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from framework_models import (
    IMAGE,
    MLP_CLASSES,
    MLP_FEATURES,
    assert_close,
    check_backend_and_native,
    data,
    import_mxnet,
    mxnet_cnn,
    mxnet_lrn_cnn,
    mxnet_mlp,
    mxnet_train_export,
)

import pyengine

pytestmark = pytest.mark.frameworks
if importlib.util.find_spec("mxnet") is None:
    pytest.skip(
        "the mxnet extra (pip install 'pyengine[mxnet]') is not installed", allow_module_level=True
    )
mx = import_mxnet()


@pytest.fixture(scope="module")
def gluon_models(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("mxnet")
    mlp, cnn = mxnet_mlp(), mxnet_cnn()
    mxnet_train_export(mlp, data((32, MLP_FEATURES)), str(d / "mlp" / "mlp"))
    mxnet_train_export(cnn, data((32, 3, IMAGE, IMAGE)), str(d / "cnn" / "cnn"))
    return {"mlp": (mlp, str(d / "mlp")), "cnn": (cnn, str(d / "cnn"))}


@pytest.mark.parametrize("kind, shape", [("mlp", (MLP_FEATURES,)), ("cnn", (3, IMAGE, IMAGE))])
def test_mxnet_backend_and_native_match(gluon_models, tmp_path, kind: str, shape) -> None:  # type: ignore[no-untyped-def]
    net, folder = gluon_models[kind]

    def reference(x: np.ndarray) -> np.ndarray:
        return net(mx.nd.array(x)).asnumpy()

    check_backend_and_native(folder, "mxnet", reference, str(tmp_path / f"{kind}.pyem"), shape)


def test_bindings_cached_per_shape(gluon_models) -> None:  # type: ignore[no-untyped-def]
    model = pyengine.load(gluon_models["mlp"][1], backend="mxnet")
    for batch in (1, 4, 1, 4, 2):
        assert model.predict(data((batch, MLP_FEATURES))).shape == (batch, 5)
    assert sorted(k[0][0] for k in model._executors) == [1, 2, 4]


def test_highest_epoch_unless_given(gluon_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "epochs"
    shutil.copytree(gluon_models["mlp"][1], folder)
    # epoch 3 holds different weights: every parameter scaled
    arrays = mx.nd.load(str(folder / "mlp-0000.params"))
    mx.nd.save(str(folder / "mlp-0003.params"), {k: v * 0.5 for k, v in arrays.items()})
    x = data((2, MLP_FEATURES))
    newest = pyengine.load(str(folder), backend="mxnet")
    first = pyengine.load(str(folder), backend="mxnet", epoch=0)
    assert newest.path.endswith("mlp-symbol.json")
    assert not np.allclose(newest.predict(x), first.predict(x))
    np.testing.assert_allclose(
        first.predict(x), gluon_models["mlp"][0](mx.nd.array(x)).asnumpy(), rtol=1e-5, atol=1e-6
    )
    assert_close(pyengine.load(str(folder)).predict(x), newest.predict(x))
    with pytest.raises(
        pyengine.ModelFormatError, match="no weights for epoch 7; found epochs \\[0, 3\\]"
    ):
        pyengine.load(str(folder), backend="mxnet", epoch=7)


def test_newer_mxnet_version_warns_or_fails_strict(gluon_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "newer"
    shutil.copytree(gluon_models["mlp"][1], folder)
    sym = folder / "mlp-symbol.json"
    doc = json.loads(sym.read_text())
    doc["attrs"]["mxnet_version"] = ["int", 20001]
    sym.write_text(json.dumps(doc))
    with pytest.warns(
        pyengine.FrameworkVersionWarning,
        match="saved by MXNet 2.0.1, newer than the installed MXNet 1.9.1",
    ):
        model = pyengine.load(str(folder), backend="mxnet")
    assert model.predict(data((1, MLP_FEATURES))).shape == (1, 5)
    with pytest.raises(pyengine.ModelFormatError, match="MXNet 2.0.1.*strict=True"):
        pyengine.load(str(folder), backend="mxnet", strict=True)


def test_unsupported_activation_falls_back_to_mxnet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data_sym = mx.sym.var("data")
    h = mx.sym.FullyConnected(data_sym, num_hidden=4, name="fc")
    y = mx.sym.Activation(h, act_type="softrelu", name="softplus")
    prefix = str(tmp_path / "soft")
    y.save(prefix + "-symbol.json")
    rng = np.random.default_rng(0)
    mx.nd.save(
        prefix + "-0000.params",
        {
            "arg:fc_weight": mx.nd.array(rng.standard_normal((4, 3))),
            "arg:fc_bias": mx.nd.array(np.zeros(4)),
        },
    )
    with pytest.raises(pyengine.UnsupportedOpsError, match=r"softplus \(Activation\)"):
        pyengine.load(str(tmp_path), backend="native")
    with pytest.warns(pyengine.FrameworkFallbackWarning, match="runs this model on mxnet"):
        model = pyengine.load(str(tmp_path))
    assert model.backend == "mxnet"
    x = data((2, 3))
    w = mx.nd.load(prefix + "-0000.params")["arg:fc_weight"].asnumpy()
    np.testing.assert_allclose(model.predict(x), np.log1p(np.exp(x @ w.T)), rtol=1e-5)


def test_corrupt_params_is_a_clear_error(gluon_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "bad"
    shutil.copytree(gluon_models["cnn"][1], folder)
    params = folder / "cnn-0000.params"
    blob = params.read_bytes()
    params.write_bytes(blob[: len(blob) // 2])
    for backend in ("mxnet", "auto"):
        with pytest.raises(pyengine.ModelFormatError) as info:
            pyengine.load(str(folder), backend=backend)
        assert str(params) in str(info.value) and "is not a readable MXNet .params file" in str(
            info.value
        )
    os.remove(params)
    with pytest.raises(pyengine.ModelFormatError, match="MXNet symbol without weights"):
        pyengine.load(str(folder))


def _native_ops(path: str, **options) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(op, fused activation) of each node of the converted graph."""
    from pyengine.convert import to_builder
    from pyengine.locate import locate

    nodes = to_builder(locate(path), **options).graph["nodes"]
    return [(n["op"], n.get("attrs", {}).get("activation", "")) for n in nodes]


def test_lrn_hard_sigmoid_swish(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mx = import_mxnet()
    net = mxnet_lrn_cnn()
    folder = tmp_path / "lrn"
    mxnet_train_export(net, data((16, 3, IMAGE, IMAGE)), str(folder / "lrn"))

    def reference(x: np.ndarray) -> np.ndarray:
        return net(mx.nd.array(x)).asnumpy()

    # Its Dense reads the flattened image: converting needs the image size.
    shapes = {"data": [-1, 3, IMAGE, IMAGE]}
    check_backend_and_native(str(folder), "mxnet", reference, str(tmp_path / "lrn.pyem"), (3, IMAGE, IMAGE),
                             input_shapes=shapes)
    ops = _native_ops(str(folder), input_shapes=shapes)
    assert ("LRN", "") in ops and ("Conv2D", "hard_sigmoid") in ops and ("Conv2D", "silu") in ops


def test_flatten_cnn_without_input_shapes_is_refused_at_convert(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Gluon CNN (conv, pool, Flatten, Dense) records no input shape: its Dense fits only the
    trained image size, so converting without input_shapes says so (it used to build a graph
    that failed at load: "Dense input's last dimension is ... but the weight ... needs ...")."""
    nn = mx.gluon.nn
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1, activation="relu"), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(5))
    folder = tmp_path / "flat"
    mxnet_train_export(net, data((16, 3, IMAGE, IMAGE)), str(folder / "flat"))
    with pytest.raises(pyengine.InputShapeUnknownError) as err:
        pyengine.convert(str(folder), str(tmp_path / "no.pyem"))
    msg = str(err.value)
    assert "input(s) 'data' [-1, 3, -1, -1]" in msg and "Dense input's last dimension is" in msg
    assert "input_shapes={'data': [-1, 3, SIZE, SIZE]}" in msg
    assert not (tmp_path / "no.pyem").exists()
    with pytest.warns(pyengine.FrameworkFallbackWarning, match="runs this model on mxnet"):
        assert pyengine.load(str(folder)).backend == "mxnet"
    native = pyengine.load(str(folder), input_shapes={"data": [-1, 3, IMAGE, IMAGE]})
    assert native.backend == "native"
    x = data((2, 3, IMAGE, IMAGE))
    assert_close(native.predict(x), net(mx.nd.array(x)).asnumpy())


def test_global_pool_cnn_without_input_shapes_runs_at_any_size(gluon_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same free sizes where the graph pools globally: it converts as it is, and each
    predict call's image size is resolved then."""
    net, folder = gluon_models["cnn"]
    native = pyengine.load(pyengine.convert(folder, str(tmp_path / "gap.pyem")))
    assert native.inputs[0].shape == (-1, 3, -1, -1)
    for size in (IMAGE, IMAGE + 6):
        x = data((2, 3, size, size))
        assert_close(native.predict(x), net(mx.nd.array(x)).asnumpy())


@pytest.mark.parametrize("legacy_key, version", [("attr", 1100), ("param", None)])
def test_pre_1_0_symbol_files_convert_natively(gluon_models, tmp_path, legacy_key: str,
                                               version) -> None:  # type: ignore[no-untyped-def]
    """MXNet 0.9-0.12 (v0.11: SageMaker's) saved node attributes under 'attr', MXNet before 0.9
    under 'param'; the file is rewritten so, and both MXNet (which upgrades it on load) and the
    native converter must give what the network itself gives."""
    net, original = gluon_models["cnn"]
    folder = tmp_path / legacy_key
    shutil.copytree(original, folder)
    sym = folder / "cnn-symbol.json"
    doc = json.loads(sym.read_text())
    moved = 0
    for node in doc["nodes"]:
        if "attrs" in node:
            node[legacy_key] = node.pop("attrs")
            moved += 1
    assert moved >= 8  # convolutions, pools, batch norms, activations, dense...
    if version is None:
        doc.pop("attrs", None)  # files before 0.9 carry no version
    else:
        doc["attrs"]["mxnet_version"] = ["int", version]
    sym.write_text(json.dumps(doc))

    def reference(x: np.ndarray) -> np.ndarray:
        return net(mx.nd.array(x)).asnumpy()

    check_backend_and_native(str(folder), "mxnet", reference, str(tmp_path / "old.pyem"),
                             (3, IMAGE, IMAGE))


def test_pre_0_9_batchnorm_without_moving_statistics(gluon_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """MXNet before 0.9 saved a BatchNorm without its moving mean and variance as inputs (they
    were named <node>_moving_mean/_moving_var in the parameters); MXNet adds them back on load."""
    net, original = gluon_models["cnn"]
    folder = tmp_path / "v08"
    shutil.copytree(original, folder)
    sym = folder / "cnn-symbol.json"
    doc = json.loads(sym.read_text())
    nodes = doc["nodes"]
    arrays = mx.nd.load(str(folder / "cnn-0000.params"))
    drop: set[int] = set()
    for n in nodes:
        if n["op"] == "BatchNorm":
            for entry, stat in zip(n["inputs"][3:5], ("moving_mean", "moving_var")):
                drop.add(entry[0])
                arrays[f"aux:{n['name']}_{stat}"] = arrays.pop(f"aux:{nodes[entry[0]]['name']}")
    assert len(drop) == 4  # two batch norms
    index: dict[int, int] = {}
    kept = []
    for i, n in enumerate(nodes):
        if i not in drop:
            index[i] = len(kept)
            kept.append(n)
    for n in kept:
        n["inputs"] = [[index[e[0]], *e[1:]] for e in n["inputs"] if e[0] not in drop]
        if "attrs" in n:
            n["param"] = n.pop("attrs")
    doc.update(nodes=kept, arg_nodes=[index[i] for i in doc["arg_nodes"] if i not in drop],
               heads=[[index[h[0]], *h[1:]] for h in doc["heads"]])
    doc.pop("node_row_ptr", None)
    doc.pop("attrs", None)
    sym.write_text(json.dumps(doc))
    mx.nd.save(str(folder / "cnn-0000.params"), arrays)

    def reference(x: np.ndarray) -> np.ndarray:
        return net(mx.nd.array(x)).asnumpy()

    check_backend_and_native(str(folder), "mxnet", reference, str(tmp_path / "v08.pyem"),
                             (3, IMAGE, IMAGE))


def test_embedding_with_float_and_int32_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Gluon Embedding model: exported, its ids are float32 (MXNet's default; the converter
    casts them); with the symbol's data declared int32 (``__dtype__``), both the MXNet backend
    and the native model take int32 ids."""
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Embedding(30, 8), mx.gluon.nn.Dense(16, activation="relu", flatten=True),
            mx.gluon.nn.Dense(MLP_CLASSES))
    ids = np.random.default_rng(0).integers(0, 30, (8, 6))
    folder = tmp_path / "emb"
    symbol = mxnet_train_export(net, ids.astype(np.float32), str(folder / "emb"))
    x = ids[:3]
    expected = net(mx.nd.array(x)).asnumpy()
    shapes = {"input_shapes": {"data": [-1, 6]}}
    native = pyengine.load(symbol, backend="native", **shapes)
    assert native.inputs[0].dtype == "float32"
    assert_close(native.predict(x.astype(np.float32)), expected)
    doc = json.loads(Path(symbol).read_text())
    for n in doc["nodes"]:
        if n["name"] == "data":
            n.setdefault("attrs", {})["__dtype__"] = "4"
    Path(symbol).write_text(json.dumps(doc))
    for backend in ("native", "mxnet"):
        model = pyengine.load(symbol, backend=backend, **shapes)
        assert model.inputs[0].dtype == "int32"
        assert_close(model.predict(x.astype(np.int32)), expected)
