"""Chainer chains of issue 25's model families, for tests/test_frameworks_family_ops.py (shipped
beside a model.npz as the network code its pyengine.json manifest names)."""

from __future__ import annotations

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

IMAGE = 8


class Seg(chainer.Chain):  # type: ignore[misc]
    """Segmentation-style: conv (stride 2) -> deconvolutions, unpooling and resizes -> concat."""

    def __init__(self) -> None:
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 4, 3, stride=2, pad=1)
            self.deconv = L.Deconvolution2D(4, 3, 4, stride=2, pad=1)
            # dilation, groups, no bias, and an outsize one past the natural 7
            self.deconv2 = L.Deconvolution2D(4, 2, 3, stride=2, pad=2, dilate=2, groups=2,
                                             nobias=True, outsize=(IMAGE, IMAGE))

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = F.relu(self.conv(x))
        size = (IMAGE, IMAGE)
        merged = F.concat([x, self.deconv(h), self.deconv2(h), F.unpooling_2d(h, 2, cover_all=False),
                           F.resize_images(h, size, mode="nearest"), F.resize_images(h, size),
                           F.resize_images(h, size, align_corners=False)], axis=1)
        return merged, F.unpooling_2d(h, 2), F.resize_images(h, (IMAGE - 1, IMAGE + 3),
                                                            mode="nearest")


class Tiny(chainer.Chain):  # type: ignore[misc]
    """Transformer-style: embedding -> layer norm -> matmul attention -> softmax."""

    def __init__(self, vocab: int = 20, width: int = 8) -> None:
        super().__init__()
        self.width = width
        with self.init_scope():
            self.embed = L.EmbedID(vocab, width)
            self.ln = L.LayerNormalization(width)
            self.q = L.Linear(width, width)
            self.k = L.Linear(width, width)
            self.v = L.Linear(width, width)
            self.ln2 = L.LayerNormalization(width, eps=1e-3)
            self.head = L.Linear(width, 5)

    def forward(self, ids):  # type: ignore[no-untyped-def]
        steps, w = ids.shape[1], self.width
        flat = self.ln(F.reshape(self.embed(ids), (-1, w)))

        def project(link):  # type: ignore[no-untyped-def]
            return F.reshape(link(flat), (-1, steps, w))

        scores = F.matmul(project(self.q), project(self.k), transb=True) / np.sqrt(w)
        att = F.matmul(F.softmax(scores, axis=2), project(self.v))
        h = self.ln2(F.reshape(att, (-1, w)) + flat)
        h3 = F.reshape(h, (-1, steps, w))
        gram = F.batch_matmul(h3, h3, transa=True)  # (batch, width, width)
        return F.log_softmax(self.head(h), axis=1), F.softmax(gram, axis=1)


class Shapes(chainer.Chain):  # type: ignore[misc]
    """Reductions, splits, basic slices, pads and elementwise math on a conv's output."""

    def __init__(self) -> None:
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 6, 3, pad=1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.conv(x)
        a, b, c = F.split_axis(h, 3, axis=1)
        top, bottom = F.split_axis(h, [2], axis=2)
        m = F.mean(b, axis=1)
        return (
            F.sum(a, axis=(2, 3), keepdims=True), m, F.max(c, axis=-1), F.min(h, axis=(1, 2)),
            F.sum(h), h[:, 1:5, ::2, None, -1], h[..., 1:], top * 2, bottom,
            F.expand_dims(m, 1), F.squeeze(h[:, :1], 1),
            F.pad(a, ((0, 0), (0, 0), (1, 2), (2, 1)), "constant", constant_values=0.5),
            F.pad(b, ((0, 0), (0, 0), (1, 1), (2, 2)), "reflect"),
            F.pad(c, ((0, 0), (0, 0), (2, 0), (0, 1)), "edge"),
            F.log_softmax(h, axis=1), F.softmax(h, axis=2),
            F.exp(a) + F.log(abs(b) + 1) + F.sqrt(abs(c)) + F.square(a) + F.rsqrt(abs(b) + 1)
            + a ** 3 + F.erf(c),
        )


class BadUnpool(chainer.Chain):  # type: ignore[misc]
    """unpooling_2d with a window larger than its stride: overlapping windows add up."""

    def __init__(self) -> None:
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 2, 3, pad=1)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return F.unpooling_2d(self.conv(x), 3, stride=2, cover_all=False)
