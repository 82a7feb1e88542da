"""Build the image-classification example: train a small CNN on scikit-learn's digits with
Chainer, convert it to a native ``.pyem`` model and write the group's model package.

Usage: python examples/image-classification/build.py OUT_DIR

Writes into OUT_DIR:

- ``digits-cnn.tar.gz``: the package the group deploys (``digits.pyem``, ``labels.txt`` and
  ``model.json`` with the test accuracy); only rewritten when its content changes, so deploying
  again reports the model unchanged;
- ``test-digits/``: every held-out test digit as a 32x32 PNG (dark ink on white, as a camera or
  a scanner would see it) named ``<index>-<label>.png``.

The digits (1797 images of 8x8 pixels, 0-16) are split 75/25, stratified, with a fixed seed;
the network never sees the test quarter. Training takes a few seconds on one CPU core.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

import pyengine

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "digits-cnn.tar.gz"
LABELS = [str(i) for i in range(10)]
#: The side of the test PNGs: 4x the digits' 8 pixels, so the function's resize is exercised.
PNG_SIDE = 32


@dataclass(frozen=True)
class Digits:
    """The split: images as float32 NCHW in [0, 1], labels as int32."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(seed: int = 0) -> Digits:
    """scikit-learn's digits split 75/25 (stratified, ``seed``), scaled from 0-16 to 0-1."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return Digits(x_tr, y_tr, x_te, y_te)


def train(digits: Digits, epochs: int = 15, batch: int = 32, seed: int = 0) -> Any:
    """Train :class:`net.DigitsCNN` with Adam on the training split; returns the chain."""
    import chainer
    import chainer.functions as F

    sys.path.insert(0, HERE)
    from net import DigitsCNN

    np.random.seed(seed)  # Chainer's initializers draw from numpy's global generator
    chain = DigitsCNN(len(LABELS))
    opt = chainer.optimizers.Adam(alpha=2e-3)
    opt.setup(chain)
    rng = np.random.default_rng(seed)
    n = len(digits.x_train)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            chain.cleargrads()
            loss = F.softmax_cross_entropy(chain.logits(digits.x_train[idx]), digits.y_train[idx])
            loss.backward()
            opt.update()
    return chain


def save_chainer_package(chain: Any, folder: str) -> str:
    """``model.npz`` + ``net.py`` + the ``pyengine.json`` manifest, as pyengine reads them."""
    import chainer

    os.makedirs(folder, exist_ok=True)
    chainer.serializers.save_npz(os.path.join(folder, "model.npz"), chain)
    shutil.copy(os.path.join(HERE, "net.py"), os.path.join(folder, "net.py"))
    manifest = {
        "framework": "chainer",
        "module": "net.py",
        "class": "DigitsCNN",
        "weights": "model.npz",
        "inputs": [{"name": "x", "shape": [-1, 1, 8, 8]}],
    }
    with open(os.path.join(folder, "pyengine.json"), "w") as f:
        json.dump(manifest, f)
    return folder


def accuracy(model: pyengine.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` (probabilities out) on ``x``."""
    return float((np.asarray(model.predict(x)).argmax(axis=1) == y).mean())


def digit_png(image: np.ndarray, side: int = PNG_SIDE) -> bytes:
    """One digit (8x8, 0-1, ink high) as a ``side``-pixel PNG, dark ink on white."""
    from PIL import Image

    grey = np.round(255 * (1.0 - np.clip(image.reshape(8, 8), 0, 1))).astype(np.uint8)
    img = Image.fromarray(grey, mode="L").resize((side, side), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_package(out: str, files: dict[str, bytes]) -> bool:
    """A reproducible .tar.gz of ``files`` at ``out``; False when identical bytes are there."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            tf.addfile(ti, io.BytesIO(data))
    data = gzip.compress(buf.getvalue(), mtime=0)
    if os.path.exists(out):
        with open(out, "rb") as f:
            if hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest():
                return False
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "wb") as f:
        f.write(data)
    os.replace(out + ".tmp", out)
    return True


@dataclass(frozen=True)
class Built:
    """What :func:`build` made: the package, its test accuracy, and the test PNGs' folder."""

    package: str
    changed: bool
    accuracy: float
    framework_accuracy: float
    n_test: int
    test_digits: str


def build(out_dir: str, epochs: int = 15) -> Built:
    """Train, convert, measure on the test split and write the package and test PNGs."""
    digits = load_digits()
    chain = train(digits, epochs=epochs)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_chainer_package(chain, os.path.join(tmp, "chainer"))
        framework_acc = accuracy(pyengine.load(folder, backend="chainer"), digits.x_test,
                                 digits.y_test)
        pyem = pyengine.convert(folder, os.path.join(tmp, "digits.pyem"))
        native = pyengine.load(pyem)
        acc = accuracy(native, digits.x_test, digits.y_test)
        with open(pyem, "rb") as f:
            weights = f.read()
    meta = {
        "input": {"name": "x", "layout": "NCHW", "shape": [-1, 1, 8, 8],
                  "scale": "0 (background) to 1 (ink)"},
        "labels": "labels.txt",
        "test_accuracy": round(acc, 4),
        "test_images": len(digits.y_test),
        "trained_with": "chainer",
    }
    files = {
        "digits.pyem": weights,
        "labels.txt": ("\n".join(LABELS) + "\n").encode(),
        "model.json": (json.dumps(meta, indent=2) + "\n").encode(),
    }
    package = os.path.join(out_dir, PACKAGE)
    changed = write_package(package, files)
    pngs = os.path.join(out_dir, "test-digits")
    os.makedirs(pngs, exist_ok=True)
    for i, (image, label) in enumerate(zip(digits.x_test, digits.y_test)):
        with open(os.path.join(pngs, f"{i:03d}-{label}.png"), "wb") as f:
            f.write(digit_png(image))
    return Built(package, changed, acc, framework_acc, len(digits.y_test), pngs)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/image-classification/build.py OUT_DIR")
    built = build(sys.argv[1])
    print(f"{'wrote' if built.changed else 'unchanged'} {built.package}")
    print(f"test accuracy: {built.accuracy:.4f} on {built.n_test} held-out digits "
          f"(native .pyem; Chainer itself: {built.framework_accuracy:.4f})")
