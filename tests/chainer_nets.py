"""Chainer networks for the framework tests. A model package ships this file as its code and
names it in its pyengine.json manifest (see docs/frameworks.md)."""

import chainer
import chainer.functions as F
import chainer.links as L


class MLP(chainer.Chain):
    def __init__(self, n_in=16, n_hidden=32, n_out=5):
        super().__init__()
        with self.init_scope():
            self.l1 = L.Linear(n_in, n_hidden)
            self.l2 = L.Linear(n_hidden, n_hidden)
            self.l3 = L.Linear(n_hidden, n_out)

    def forward(self, x):
        h = F.relu(self.l1(x))
        h = F.leaky_relu(self.l2(h), slope=0.1)
        return F.softmax(self.l3(h))


class CNN(chainer.Chain):
    def __init__(self, channels=3, n_out=5):
        super().__init__()
        with self.init_scope():
            self.conv1 = L.Convolution2D(channels, 8, ksize=3, pad=1)
            self.bn1 = L.BatchNormalization(8)
            self.conv2 = L.Convolution2D(8, 8, ksize=3, pad=1, groups=8, nobias=True)
            self.bn2 = L.BatchNormalization(8)
            self.fc = L.Linear(None, n_out)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.max_pooling_2d(h, 2, stride=2)
        h = F.clipped_relu(self.bn2(self.conv2(h)), 6.0)
        h = F.concat([h, F.sigmoid(h) * 0.5 + 0.1], axis=1)
        h = F.average_pooling_2d(h, 2, stride=2)
        return self.fc(F.tanh(h))


class LRNNet(chainer.Chain):
    """Local response normalization (odd and even n), hard_sigmoid and a learned swish."""

    def __init__(self, channels=3, n_out=5):
        super().__init__()
        with self.init_scope():
            self.conv1 = L.Convolution2D(channels, 8, ksize=3, pad=1)
            self.conv2 = L.Convolution2D(8, 8, ksize=1)
            self.swish = L.Swish((8,))
            self.fc = L.Linear(None, n_out)

    def forward(self, x):
        h = F.local_response_normalization(self.conv1(x), n=5, k=1.5, alpha=1e-2, beta=0.75)
        h = F.hard_sigmoid(self.conv2(h))
        h = self.swish(h)
        h = F.local_response_normalization(h, n=4, k=2, alpha=0.1, beta=0.5)
        return self.fc(h)


class EmbedNet(chainer.Chain):
    """Token ids -> EmbedID -> flattened -> Linear: an int32-input network."""

    def __init__(self, vocab=30, dim=8, length=6, n_out=5):
        super().__init__()
        with self.init_scope():
            self.embed = L.EmbedID(vocab, dim)
            self.out = L.Linear(dim * length, n_out)

    def forward(self, ids):
        h = F.tanh(self.embed(ids))
        return self.out(F.reshape(h, (h.shape[0], -1)))
