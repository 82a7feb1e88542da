"""The native engine: .pyem files mapped from disk and run by the C++ core."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from pyengine import _core
from pyengine.devices import CPU, Device
from pyengine.errors import ModelFormatError
from pyengine.model import Inputs, Outputs, SpecListModel, TensorSpec
from pyengine.profiler import Profile, build_profile


class NativeModel(SpecListModel):
    """A .pyem model run by the C++ core. Thread-safe: call ``predict`` from many threads."""

    backend = "native"

    def __init__(self, path: str, device: Device = CPU) -> None:
        self._core = _core.Model(path)
        # On a GPU the weights are copied to the device once, here; every call then runs there.
        self._device = None
        if device.kind == "cuda":
            self._device = _core.DeviceModel(self._core, device.index)
        self.device = str(device)
        self._inputs = [TensorSpec(n, tuple(s), d) for n, s, d in self._core.inputs]
        self._outputs = [TensorSpec(n, tuple(s), d) for n, s, d in self._core.outputs]
        self.path = path
        # One input and one output on the CPU: predict(array) goes straight to the C++ lean path.
        self._run1 = (self._core.run1 if self._device is None and len(self._inputs) == 1
                      and len(self._outputs) == 1 else None)

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights mapped from the file (shared, not copied)."""
        return int(self._core.weight_bytes)

    @property
    def device_bytes(self) -> int:
        """Bytes of GPU memory held (weights plus pooled workspaces); 0 on the CPU."""
        return int(self._device.device_bytes) if self._device is not None else 0

    def predict(self, x: Inputs) -> Outputs:
        """Run the model; see :meth:`pyengine.Model.predict`. Thread-safe."""
        if self._run1 is not None and type(x) is np.ndarray:
            return self._run1(x)
        return super().predict(x)

    def profile(
        self,
        x: Inputs,
        runs: int = 10,
        warmup: int = 1,
        trace_path: Optional[str | os.PathLike[str]] = None,
    ) -> Profile:
        """Time every op of the model over ``runs`` calls on ``x``.

        Parameters
        ----------
        x
            The input, as :meth:`predict` takes it.
        runs
            Calls to time (each node's time is reported as the mean and median over them).
        warmup
            Untimed calls first (the first call plans memory and packs weights).
        trace_path
            Also write the runs as a Chrome trace JSON here (see
            :meth:`pyengine.profiler.Profile.write_chrome_trace`).

        Returns
        -------
        A :class:`pyengine.profiler.Profile`: per node its op type, shapes, layout, kernel, times
        and share of the total; ``print`` it for a table.

        Raises
        ------
        ValueError
            ``runs`` < 1 or ``warmup`` < 0, an input as :meth:`predict` rejects it, or a model
            loaded on a GPU (the profiler times the CPU executor).
        """
        if self._device is not None:
            raise ValueError(f"profile() times the CPU executor; this model runs on {self.device}. "
                             "Load it with device='cpu' to profile it")
        if runs < 1:
            raise ValueError(f"runs must be >= 1, got {runs}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        arrays = self._order_inputs(x)
        for _ in range(warmup):
            self._core.run(arrays)
        report = build_profile(self._core.profile(arrays, runs))
        if trace_path is not None:
            report.write_chrome_trace(trace_path)
        return report

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self._device is not None:
            return list(self._device.run(arrays))
        return list(self._core.run(arrays))


def find_pyem(path: str) -> str:
    """The .pyem file at ``path``, or the single one inside directory ``path``."""
    if os.path.isfile(path):
        return path
    found = sorted(
        os.path.join(root, f) for root, _, files in os.walk(path) for f in files if f.endswith(".pyem")
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelFormatError(f"'{path}' holds no .pyem model")
    raise ModelFormatError(f"'{path}' holds several .pyem models ({', '.join(found)}); name one")


def load(path: str, device: Device = CPU) -> NativeModel:
    """Load a .pyem file (or the one inside a directory) to run on ``device``."""
    return NativeModel(find_pyem(path), device)
