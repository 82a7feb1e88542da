"""``pyengine bench --suite standard``: a fixed set of models built in code (no download, no
framework), so that every device runs the same graphs and weights and reports can be merged."""

from __future__ import annotations

import os
from typing import Callable

from pyengine.bench import zoo
from pyengine.builder import GraphBuilder

#: Suite name -> [(model name, builder)]. The names are the rows of merged reports: keep them
#: stable, and add a new name rather than change what an existing one builds.
SUITES: dict[str, list[tuple[str, Callable[[], GraphBuilder]]]] = {
    "standard": [
        ("mlp_784x512x512x10", lambda: zoo.mlp_graph((784, 512, 512, 10))),
        ("small_cnn_28", lambda: zoo.cnn_graph(size=28, channels=16)),
        ("mobilenet_v2_224", lambda: zoo.mobilenet_v2_graph(
            size=224, width=32, blocks=zoo.MOBILENET_V2_FULL_BLOCKS, classes=1000)),
        ("resnet18_224", lambda: zoo.resnet_graph(size=224)),
    ],
}


def build(suite: str, folder: str) -> list[tuple[str, str]]:
    """Write the suite's models as .pyem files into ``folder``; returns (name, path) pairs.

    Raises
    ------
    ValueError
        An unknown suite (the message lists the known ones).
    """
    if suite not in SUITES:
        raise ValueError(f"--suite {suite!r}: expected one of {', '.join(sorted(SUITES))}")
    out = []
    for name, make in SUITES[suite]:
        out.append((name, make().save(os.path.join(folder, f"{name}.pyem"))))
    return out
