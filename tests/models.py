"""Small native models that tests and benches build with GraphBuilder.

The builders live in :mod:`pyengine.bench.zoo` (``pyengine bench --suite`` builds its models
with them in an installed wheel); this module re-exports them. Each ``<name>_graph`` returns
the GraphBuilder (benches export the same graph to ONNX from it); ``<name>`` writes it to a
.pyem file and returns the path. The weights come from ``mlp_params`` / ``cnn_params`` so that
other builders (the ONNX twins in ``onnx_models.py``) can make the same function in another
framework.
"""

from __future__ import annotations

from pyengine.bench.zoo import (  # noqa: F401 - re-exported for tests and benches
    MLP_SIZES,
    MOBILENET_V2_BLOCKS,
    cnn_graph,
    cnn_params,
    mlp_graph,
    mlp_params,
    mobilenet_v2_graph,
)


def mlp(path: str, sizes: tuple[int, ...] = MLP_SIZES, seed: int = 0) -> str:
    return mlp_graph(sizes, seed).save(path)


def cnn(path: str, layout: str = "NCHW", size: int = 28, channels: int = 16, seed: int = 0) -> str:
    return cnn_graph(layout, size, channels, seed).save(path)
