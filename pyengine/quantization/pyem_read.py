"""Reading a .pyem file's graph and tensors into Python (docs/format.md), for rewriting tools."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np

from pyengine.errors import ModelFormatError

_DTYPES = {1: np.float32, 2: np.int32, 3: np.int64, 4: np.uint8, 5: np.int8}


def read_pyem(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The graph document and every tensor (copies) of a .pyem file.

    The native loader validates the file in full; this reader checks what it relies on and
    raises ModelFormatError for anything else.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 128 or data[:8] != b"\x89PYEM\r\n\x1a":
        raise ModelFormatError(f"'{path}' is not a .pyem model (bad magic or shorter than the header)")
    graph_off, graph_len, table_off, table_len, count, data_off = struct.unpack_from("<6Q", data, 16)
    graph = json.loads(data[graph_off:graph_off + graph_len].decode("utf-8"))
    tensors: dict[str, np.ndarray] = {}
    pos = table_off
    for _ in range(count):
        name_len, code, ndim = struct.unpack_from("<IBB", data, pos)
        pos += 8
        dims = struct.unpack_from(f"<{ndim}q", data, pos)
        pos += 8 * ndim
        offset, length = struct.unpack_from("<QQ", data, pos)
        pos += 16
        name = data[pos:pos + name_len].decode("utf-8")
        pos = (pos + name_len + 7) & ~7
        if code not in _DTYPES:
            raise ModelFormatError(f"'{path}': tensor '{name}' has unknown dtype code {code}")
        start = data_off + offset
        dtype = np.dtype(_DTYPES[code]).newbyteorder("<")
        arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(dims, dtype=np.int64)), offset=start).reshape(dims)
        tensors[name] = arr.astype(arr.dtype.newbyteorder("="), copy=True)
    del table_len
    return graph, tensors
