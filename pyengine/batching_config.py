"""The options of a batched model (:class:`BatchingConfig`), the ``batching`` block of a group file.

Pure Python with no native code, so the deploy layer validates group files with it even where
``pyengine._core`` is not built; :mod:`pyengine.batching` runs the batcher it configures.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class BatchingConfig:
    """How a batched model gathers requests; the ``batching`` block of a group file maps onto it.

    Parameters
    ----------
    max_batch_size
        Rows per batch at most. A request with more rows is refused (ValueError).
    max_delay_us
        The longest the oldest queued request waits for others to join its batch, in microseconds.
        0 runs whatever is queued at once (a lone caller then runs on its own thread).
    preferred_batch_sizes
        Batch sizes the model runs best at; a batch of one of them goes as soon as the queue can
        fill it, without waiting for ``max_delay_us``.
    max_queue_size
        Requests that may wait at once; beyond it a call fails at once with QueueFullError.
        None: unbounded.
    timeout_s
        The longest a request may wait in the queue before a batch takes it; it then fails with
        TimeoutError. None: no limit. A request already in a batch always runs to the end.
    workers
        Batches that may run at once (worker threads).
    """

    max_batch_size: int = 32
    max_delay_us: int = 1000
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: Optional[int] = 1024
    timeout_s: Optional[float] = None
    workers: int = 1

    def __post_init__(self) -> None:
        _check_int("max_batch_size", self.max_batch_size, 1)
        _check_int("max_delay_us", self.max_delay_us, 0)
        _check_int("workers", self.workers, 1, 256)
        if self.max_queue_size is not None:
            _check_int("max_queue_size", self.max_queue_size, 1)
        if self.timeout_s is not None and (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, (int, float))
            or not math.isfinite(self.timeout_s)
            or self.timeout_s <= 0
        ):
            raise ValueError(
                f"timeout_s must be a number of seconds > 0 or None, got {self.timeout_s!r}"
            )
        sizes = self.preferred_batch_sizes
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (list, tuple)):
            raise ValueError(f"preferred_batch_sizes must be a list of integers, got {sizes!r}")
        for s in sizes:
            _check_int("each preferred batch size", s, 1, self.max_batch_size)
        object.__setattr__(self, "preferred_batch_sizes", tuple(sorted(set(sizes))))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "batching") -> BatchingConfig:
        """Build from a mapping (a group file's ``batching`` block); missing keys take defaults.

        Raises
        ------
        ValueError
            Not a mapping, an unknown key, or a value of the wrong type or range; the message
            starts with ``where`` and names the key.
        """
        if not isinstance(data, Mapping):
            raise ValueError(
                f"{where} must be a mapping of batching options, got {type(data).__name__}"
            )
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {unknown}; the keys are {known}")
        try:
            return cls(**{str(k): v for k, v in data.items()})
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @property
    def timeout_us(self) -> int:
        """The timeout in microseconds; 0 for none."""
        return 0 if self.timeout_s is None else max(1, round(self.timeout_s * 1e6))


def _check_int(name: str, value: Any, low: int, high: Optional[int] = None) -> None:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= low
    if ok and high is not None:
        ok = int(value) <= high
    if not ok:
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
