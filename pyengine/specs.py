"""The types of the model API: a tensor's spec and what ``predict`` takes and returns.

At the bottom of the model layer, so that both :mod:`pyengine.model` and
:mod:`pyengine.batching` (which the model's ``batched`` builds) take them from below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

Array = np.ndarray
#: What ``predict`` takes: one array (a model with one input) or arrays by input name.
Inputs = Union[Array, Mapping[str, Array]]
#: What ``predict`` returns: one array (a model with one output) or arrays by output name.
Outputs = Union[Array, dict]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (-1 marks a free dimension) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str
