"""Issue 25's model-family ops through the MXNet and Chainer importers: small networks built here
(segmentation-style conv -> deconv/upsample -> concat, transformer-style embedding -> layer
norm -> batched-matmul attention -> softmax, reductions, slices, splits, pads and elementwise
math), converted to the native engine and compared with the framework's own forward pass on
random inputs."""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any

import numpy as np
import pytest
from framework_models import assert_close, data

import pyengine

pytestmark = pytest.mark.frameworks

needs_mxnet = pytest.mark.skipif(
    importlib.util.find_spec("mxnet") is None,
    reason="the mxnet extra (pip install 'pyengine[mxnet]') is not installed",
)
needs_chainer = pytest.mark.skipif(
    importlib.util.find_spec("chainer") is None,
    reason="the chainer extra (pip install 'pyengine[chainer]') is not installed",
)
if importlib.util.find_spec("chainer") is not None:
    with warnings.catch_warnings():  # chainer's import warns (numpy.distutils), as importorskip
        warnings.simplefilter("ignore", DeprecationWarning)
        import chainer_family_nets  # (needs chainer)


def _outputs(got: Any) -> list[np.ndarray]:
    """A native model's outputs in order (predict gives a dict when there are several)."""
    return list(got.values()) if isinstance(got, dict) else [got]


def _compare(got: Any, expected: list[np.ndarray]) -> None:
    outs = _outputs(got)
    assert len(outs) == len(expected)
    for a, b in zip(outs, expected):
        assert a.shape == b.shape
        assert_close(a, b)


# ---------------------------------------------------------------- MXNet
def _mx() -> Any:
    from framework_models import import_mxnet

    return import_mxnet()


def _mx_export(net: Any, x: np.ndarray, folder: str, seed: int = 0) -> str:
    """Initialize ``net`` with random weights and biases (not zeros: every term is checked),
    hybridize, run once and export the checkpoint into ``folder``."""
    mx = _mx()
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.array(x))
    rng = np.random.default_rng(seed)
    for p in net.collect_params().values():
        shape = p.data().shape
        p.set_data(mx.nd.array(rng.uniform(-0.5, 0.5, shape).astype(np.float32)))
    net(mx.nd.array(x))
    os.makedirs(folder, exist_ok=True)
    net.export(os.path.join(folder, "net"), epoch=0)
    return folder


def _mx_reference(net: Any, x: np.ndarray) -> list[np.ndarray]:
    mx = _mx()
    y = net(mx.nd.array(x))
    return [o.asnumpy() for o in (y if isinstance(y, (tuple, list)) else [y])]


def _native(folder: str, dst: str, **options: Any) -> Any:
    pyengine.convert(folder, dst, **options)
    model = pyengine.load(dst, backend="native")
    assert model.backend == "native"
    return model


def _mx_segmentation() -> Any:
    mx = _mx()
    nn = mx.gluon.nn

    class Seg(mx.gluon.HybridBlock):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.conv = nn.Conv2D(4, 3, strides=2, padding=1, activation="relu")
                self.deconv = nn.Conv2DTranspose(3, 4, strides=2, padding=1)
                # output_padding (MXNet's adj), dilation and groups; no bias
                self.deconv2 = nn.Conv2DTranspose(2, 3, strides=2, padding=2, output_padding=1,
                                                  dilation=2, groups=2, use_bias=False,
                                                  in_channels=4)
                self.up_weight = self.params.get("up_weight", shape=(4, 1, 4, 4))

        def hybrid_forward(self, F, x, up_weight):  # type: ignore[no-untyped-def]
            h = self.conv(x)
            nearest = F.UpSampling(h, scale=2, sample_type="nearest")
            bilinear = F.UpSampling(h, up_weight, scale=2, sample_type="bilinear", num_filter=4)
            return F.concat(x, self.deconv(h), self.deconv2(h), nearest, bilinear, dim=1)

    return Seg()


def _mx_transformer() -> Any:
    mx = _mx()
    nn = mx.gluon.nn

    class Tiny(mx.gluon.HybridBlock):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.embed = nn.Embedding(20, 8)
                self.ln = nn.LayerNorm()
                self.q, self.k, self.v = (nn.Dense(8, flatten=False) for _ in range(3))
                self.ln2 = nn.LayerNorm(epsilon=1e-3)
                self.head = nn.Dense(5, flatten=False)

        def hybrid_forward(self, F, ids):  # type: ignore[no-untyped-def]
            h = self.ln(self.embed(ids))
            scores = F.batch_dot(self.q(h), self.k(h), transpose_b=True) / np.sqrt(8.0)
            h = self.ln2(h + F.batch_dot(F.softmax(scores, axis=-1), self.v(h)))
            gram = F.batch_dot(h, h, transpose_a=True)  # (batch, 8, 8)
            return F.log_softmax(self.head(h), axis=-1), F.softmax(gram, axis=1)

    return Tiny()


def _mx_shapes() -> Any:
    mx = _mx()

    class Shapes(mx.gluon.HybridBlock):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.conv = mx.gluon.nn.Conv2D(6, 3, padding=1)

        def hybrid_forward(self, F, x):  # type: ignore[no-untyped-def]
            h = self.conv(x)
            a, b, c = F.split(h, num_outputs=3, axis=1)
            third = F.split(h, num_outputs=6, axis=1, squeeze_axis=True)[2]
            m = F.mean(b, axis=1)
            return (
                F.sum(a, axis=(2, 3), keepdims=True),
                m,
                F.max(c, axis=-1),
                F.min(c, axis=(0, 1), exclude=True),
                F.sum(h),
                F.slice_axis(h, axis=2, begin=1, end=None),
                F.slice(h, begin=(None, 1, 0), end=(None, 5, -1)),
                F.expand_dims(m * third, axis=-3),
                F.pad(a, mode="reflect", pad_width=(0, 0, 0, 0, 1, 1, 2, 2)),
                F.pad(b, mode="edge", pad_width=(0, 0, 0, 0, 2, 0, 0, 1)),
                F.pad(c, mode="constant", constant_value=0.5, pad_width=(0, 0, 0, 0, 1, 2, 3, 0)),
                F.exp(a) + F.log(F.abs(b) + 1) + F.sqrt(F.abs(c)) + F.square(a)
                + F.rsqrt(F.abs(b) + 1) + F.erf(c),
                F.broadcast_greater(a, b) + F.broadcast_lesser_equal(b, c) * 2
                + F.broadcast_maximum(a, c) + (a > 0.1),
                F.log_softmax(h, axis=1),
                F.LeakyReLU(a, act_type="gelu") + F.LeakyReLU(b, act_type="elu", slope=0.3),
            )

    return Shapes()


@needs_mxnet
def test_mxnet_segmentation_deconv_upsample_concat(tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = _mx_segmentation()
    folder = _mx_export(net, data((2, 3, 8, 8)), str(tmp_path / "seg"))
    model = _native(folder, str(tmp_path / "seg.pyem"))  # the image size stays free
    ops = {n["op"] for n in _graph_nodes(folder)}
    assert {"ConvTranspose2D", "Resize"} <= ops
    for shape in ((2, 3, 8, 8), (1, 3, 12, 10)):
        x = data(shape, seed=shape[2])
        _compare(model.predict(x), _mx_reference(net, x))


@needs_mxnet
def test_mxnet_transformer_layer_norm_batch_dot_softmax(tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = _mx_transformer()
    ids = np.random.default_rng(0).integers(0, 20, (4, 6)).astype(np.float32)
    folder = _mx_export(net, ids, str(tmp_path / "tiny"))
    model = _native(folder, str(tmp_path / "tiny.pyem"), input_shapes={"data": [-1, 6]})
    ops = [n["op"] for n in _graph_nodes(folder, input_shapes={"data": [-1, 6]})]
    assert ops.count("LayerNorm") == 2 and ops.count("BatchMatMul") == 3
    assert "LogSoftmax" in ops
    for batch in (1, 3):
        x = np.random.default_rng(batch).integers(0, 20, (batch, 6)).astype(np.float32)
        _compare(model.predict(x), _mx_reference(net, x))


@needs_mxnet
def test_mxnet_reductions_slices_splits_pads_math(tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = _mx_shapes()
    folder = _mx_export(net, data((2, 3, 6, 7)), str(tmp_path / "shapes"))
    model = _native(folder, str(tmp_path / "shapes.pyem"))
    for shape in ((2, 3, 6, 7), (1, 3, 5, 9)):
        x = data(shape, seed=shape[3])
        _compare(model.predict(x), _mx_reference(net, x))


@needs_mxnet
def test_mxnet_refuses_deconvolution_target_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An attribute value the converter does not map is refused at convert time, naming the node
    and the value."""
    mx = _mx()
    x = mx.sym.var("data")
    y = mx.sym.Deconvolution(x, kernel=(4, 4), stride=(2, 2), num_filter=2, target_shape=(8, 8),
                             name="up")
    folder = tmp_path / "target"
    folder.mkdir()
    y.save(str(folder / "net-symbol.json"))
    w = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    mx.nd.save(str(folder / "net-0000.params"), {"arg:up_weight": mx.nd.array(w)})
    with pytest.raises(pyengine.UnsupportedOpsError,
                       match=r"up \(Deconvolution with target_shape \(8, 8\)\)"):
        pyengine.convert(str(folder), str(tmp_path / "no.pyem"),
                         input_shapes={"data": [-1, 3, 4, 4]})
    assert not (tmp_path / "no.pyem").exists()


def _graph_nodes(path: str, **options: Any) -> list[dict[str, Any]]:
    from pyengine.convert import to_builder
    from pyengine.locate import locate

    return list(to_builder(locate(path), **options).graph["nodes"])


# ---------------------------------------------------------------- Chainer
CHAINER_NETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chainer_family_nets.py")


@pytest.fixture
def chainer_nets(monkeypatch):  # type: ignore[no-untyped-def]
    """tests/chainer_family_nets.py; Chainer 7.8's resize_images reads numpy.float, an alias
    numpy removed in 1.24: restored for the test."""
    if "float" not in np.__dict__:
        monkeypatch.setattr(np, "float", float, raising=False)
    return chainer_family_nets


def _chainer_package(chain: Any, folder: str, cls: str, shape: list[int],
                     dtype: str = "float32", seed: int = 0) -> str:
    """Random weights and biases into ``chain``, saved as model.npz with its code and a
    pyengine.json manifest."""
    import json
    import shutil

    import chainer

    rng = np.random.default_rng(seed)
    for p in chain.params():
        p.array[...] = rng.uniform(-0.5, 0.5, p.array.shape).astype(p.array.dtype)
    os.makedirs(folder, exist_ok=True)
    chainer.serializers.save_npz(os.path.join(folder, "model.npz"), chain)
    shutil.copy(CHAINER_NETS, os.path.join(folder, "net.py"))
    manifest = {"framework": "chainer", "module": "net.py", "class": cls, "weights": "model.npz",
                "inputs": [{"name": "x", "shape": shape, "dtype": dtype}]}
    with open(os.path.join(folder, "pyengine.json"), "w") as f:
        json.dump(manifest, f)
    return folder


def _chainer_reference(chain: Any, x: np.ndarray) -> list[np.ndarray]:
    import chainer

    with chainer.using_config("train", False), chainer.no_backprop_mode():
        y = chain(x)
    return [o.array for o in (y if isinstance(y, (tuple, list)) else [y])]


@needs_chainer
def test_chainer_segmentation_deconv_unpool_resize_concat(chainer_nets, tmp_path) -> None:  # type: ignore[no-untyped-def]
    chain = chainer_nets.Seg()
    image = chainer_nets.IMAGE
    folder = _chainer_package(chain, str(tmp_path / "seg"), "Seg", [-1, 3, image, image])
    model = _native(folder, str(tmp_path / "seg.pyem"))
    ops = [n["op"] for n in _graph_nodes(folder)]
    assert ops.count("ConvTranspose2D") == 2 and ops.count("Resize") == 6
    for batch in (1, 4):
        x = data((batch, 3, image, image), seed=batch)
        _compare(model.predict(x), _chainer_reference(chain, x))


@needs_chainer
def test_chainer_transformer_layer_norm_matmul_softmax(chainer_nets, tmp_path) -> None:  # type: ignore[no-untyped-def]
    chain = chainer_nets.Tiny()
    folder = _chainer_package(chain, str(tmp_path / "tiny"), "Tiny", [-1, 6], dtype="int32")
    model = _native(folder, str(tmp_path / "tiny.pyem"))
    ops = [n["op"] for n in _graph_nodes(folder)]
    assert ops.count("LayerNorm") == 2 and ops.count("BatchMatMul") == 3
    for batch in (1, 3):
        ids = np.random.default_rng(batch).integers(0, 20, (batch, 6)).astype(np.int32)
        _compare(model.predict(ids), _chainer_reference(chain, ids))


@needs_chainer
def test_chainer_reductions_splits_slices_pads_math(chainer_nets, tmp_path) -> None:  # type: ignore[no-untyped-def]
    chain = chainer_nets.Shapes()
    folder = _chainer_package(chain, str(tmp_path / "shapes"), "Shapes", [-1, 3, 5, 4])
    model = _native(folder, str(tmp_path / "shapes.pyem"))
    for batch in (1, 3, 5):
        x = data((batch, 3, 5, 4), seed=batch)
        _compare(model.predict(x), _chainer_reference(chain, x))


@needs_chainer
def test_chainer_refuses_overlapping_unpooling(chainer_nets, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """unpooling_2d whose windows overlap (ksize 3, stride 2) is no nearest resize: refused at
    convert time naming the function and the values."""
    folder = _chainer_package(chainer_nets.BadUnpool(), str(tmp_path / "bad"), "BadUnpool",
                              [-1, 3, 4, 4])
    with pytest.raises(pyengine.UnsupportedOpsError,
                       match=r"unpooling2d \(Unpooling2D with ksize \(3, 3\), stride \(2, 2\)"):
        pyengine.convert(folder, str(tmp_path / "no.pyem"))
    assert not (tmp_path / "no.pyem").exists()
