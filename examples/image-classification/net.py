"""The example's network: a small CNN for 8x8 grey digits (NCHW, 1 channel), in Chainer.

Calling the chain returns class probabilities (softmax), so the converted model answers with
probabilities directly; ``logits`` is what training minimises the cross-entropy of.
"""

from __future__ import annotations

from typing import Any

import chainer
import chainer.functions as F
import chainer.links as L


class DigitsCNN(chainer.Chain):
    """conv 3x3 (16) - relu - max pool 2 - conv 3x3 (32) - relu - max pool 2 - fc 64 - fc 10."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        with self.init_scope():
            self.conv1 = L.Convolution2D(1, 16, ksize=3, pad=1)
            self.conv2 = L.Convolution2D(16, 32, ksize=3, pad=1)
            self.fc1 = L.Linear(32 * 2 * 2, 64)
            self.fc2 = L.Linear(64, classes)

    def logits(self, x: Any) -> Any:
        h = F.max_pooling_2d(F.relu(self.conv1(x)), 2)
        h = F.max_pooling_2d(F.relu(self.conv2(h)), 2)
        return self.fc2(F.relu(self.fc1(h)))

    def __call__(self, x: Any) -> Any:
        return F.softmax(self.logits(x))
