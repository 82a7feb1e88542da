"""The machine description every bench table starts with: pyengine bench's header
(:func:`pyengine.bench.machine.header`: CPU, features, kernels, threads, governor, load,
emulation) as markdown lines."""

from __future__ import annotations

from pyengine.bench.machine import header, header_lines


def describe() -> str:
    """The header of ``pyengine bench`` as a markdown list (one "- " line each)."""
    return "".join(f"- {line}\n" for line in header_lines(header()))
