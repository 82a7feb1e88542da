"""Dynamic batching: many callers' requests gathered into one model run.

``model.batched(...)`` returns a :class:`BatchedModel`. Its ``predict`` is safe from many threads
and ``predict_async`` serves asyncio. The batcher lives in the C++ core: for native models its
worker threads call the engine directly with no GIL held; other backends run through one Python
call of the model per batch. Each caller gets its own rows back as views of the batch output.
"""

from __future__ import annotations

import asyncio
import atexit
import weakref
from typing import Any, Optional, Protocol

import numpy as np

from pyengine import _core
from pyengine.batching_config import BatchingConfig
from pyengine.specs import Inputs, Outputs, TensorSpec

__all__ = ["BatchedModel", "BatchingConfig"]


class Batchable(Protocol):
    """What a batcher needs of a model (a :class:`pyengine.Model` has it all): the batcher sits
    below the model, which builds one in :meth:`pyengine.Model.batched`."""

    @property
    def backend(self) -> str: ...

    @property
    def inputs(self) -> list[TensorSpec]: ...

    @property
    def outputs(self) -> list[TensorSpec]: ...

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]: ...

    def _order_inputs(self, x: Inputs) -> list[np.ndarray]: ...


class _LoopWaker:
    """Answers one event loop's pending futures when the C++ side signals its notifier's fd."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.notifier = _core.BatchNotifier()
        self.pending: dict[int, tuple[asyncio.Future[list[np.ndarray]], list[np.ndarray]]] = {}
        self.closed = False
        loop.add_reader(self.notifier.fd, self._ready)

    def _ready(self) -> None:
        for req in self.notifier.drain():
            entry = self.pending.pop(req.id, None)  # drops the input arrays the C++ side used
            if entry is None or entry[0].done():
                continue
            fut = entry[0]
            try:
                outs = req.result()
            except BaseException as exc:  # noqa: BLE001 - every error belongs to its caller
                fut.set_exception(exc)
            else:
                fut.set_result(outs)
        if self.closed and not self.pending:
            self.loop.remove_reader(self.notifier.fd)

    def close(self) -> None:
        self.closed = True
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._ready)


_live: weakref.WeakSet[BatchedModel] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    # Worker threads must not outlive the interpreter. Callers still waiting are daemon threads
    # (the others were joined before atexit): they stay parked, since a thread that wakes up and
    # takes the GIL while the interpreter finalizes is killed mid-C++ (a crash).
    for b in list(_live):
        b._batcher.abandon()


class BatchedModel:
    """A model whose calls from many threads or tasks are gathered into batches.

    Use it as a context manager, or call :meth:`close`, to stop it; requests queued by then still
    run (``close(drain=False)`` fails them with BatcherClosedError instead). Made by
    :meth:`pyengine.Model.batched`.
    """

    def __init__(self, model: Batchable, config: BatchingConfig) -> None:
        if not isinstance(config, BatchingConfig):
            raise TypeError(f"config must be a BatchingConfig, got {type(config).__name__}")
        self.model = model
        self.config = config
        core = getattr(model, "_core", None)
        self.native = isinstance(core, _core.Model)
        # Framework models: the batch callback is the model's own _run (not a method of self, so no
        # reference cycle runs through C++).
        target = core if self.native else model._run
        self._batcher = _core.Batcher(
            target,
            max_batch_size=config.max_batch_size,
            preferred_batch_sizes=list(config.preferred_batch_sizes),
            max_queue_delay_us=config.max_delay_us,
            max_queue_size=config.max_queue_size or 0,
            timeout_us=config.timeout_us,
            workers=config.workers,
            # Framework models: each request's shape is checked in C++ against the declared inputs.
            input_shapes=[] if self.native else [(s.name, list(s.shape)) for s in model.inputs],
        )
        self._inputs = model.inputs
        self._output_names = [s.name for s in model.outputs]
        self._single_input = len(self._inputs) == 1
        # One input and one output, natively: predict(array) goes straight to the C++ lean path.
        self._run1 = (self._batcher.run1 if self.native and self._single_input
                      and len(self._output_names) == 1 else None)
        self._wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = (
            weakref.WeakKeyDictionary()
        )
        _live.add(self)

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs; dimension 0 is the rows a request carries."""
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs."""
        return self.model.outputs

    @property
    def backend(self) -> str:
        """The wrapped model's backend."""
        return self.model.backend

    def _arrays(self, x: Inputs) -> list[np.ndarray]:
        # Names and types here; shapes in C++ (against the native graph or the declared inputs).
        if self._single_input and type(x) is np.ndarray:
            return [x]
        return self.model._order_inputs(x)

    def _outputs(self, outs: list[np.ndarray]) -> Outputs:
        if len(outs) == 1:
            return outs[0]
        return dict(zip(self._output_names, outs))

    @staticmethod
    def _timeout_us(timeout_s: Optional[float]) -> int:
        if timeout_s is None:
            return -1
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, (int, float))
            or not timeout_s > 0
        ):
            raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        return max(1, round(timeout_s * 1e6))

    def predict(self, x: Inputs, timeout_s: Optional[float] = None) -> Outputs:
        """Run ``x`` (one or more rows) in a batch with other callers' requests; thread-safe.

        Parameters
        ----------
        x
            An array of shape ``[rows, ...]`` when the model has one input, else a dict by name.
        timeout_s
            Overrides the config's queue timeout for this call.

        Returns
        -------
        This request's rows of each output (an array, or a dict for several outputs): views of
        the batch's output memory.

        Raises
        ------
        ValueError
            Wrong names, dtype or shape for this model, or more rows than ``max_batch_size``.
        QueueFullError
            ``max_queue_size`` requests are waiting already.
        TimeoutError
            The request waited in the queue longer than its timeout.
        BatcherClosedError
            The batcher was closed.
        """
        # Inlined helpers: this is the hot path of every caller.
        if self._run1 is not None and timeout_s is None and type(x) is np.ndarray:
            return self._run1(x)
        fast = self._single_input and type(x) is np.ndarray
        arrays = [x] if fast else self.model._order_inputs(x)
        outs = self._batcher.run(arrays, -1 if timeout_s is None else self._timeout_us(timeout_s))
        return outs[0] if len(outs) == 1 else dict(zip(self._output_names, outs))

    async def predict_async(self, x: Inputs, timeout_s: Optional[float] = None) -> Outputs:
        """:meth:`predict` for asyncio: awaits the answer without blocking the event loop.

        Cancelling the awaiting task takes the request out of the queue if no batch has it yet.
        """
        arrays = [np.ascontiguousarray(a) for a in self._arrays(x)]
        loop = asyncio.get_running_loop()
        waker = self._wakers.get(loop)
        if waker is None or waker.closed:
            waker = self._wakers[loop] = _LoopWaker(loop)
        timeout_us = self._timeout_us(timeout_s)
        req = self._batcher.submit(arrays, waker.notifier, timeout_us)
        fut: asyncio.Future[list[np.ndarray]] = loop.create_future()
        waker.pending[req.id] = (fut, arrays)  # the arrays live until the request is answered
        effective = timeout_us if timeout_us > 0 else self.config.timeout_us
        # The C++ workers expire queued requests too, but not while every worker is busy.
        timer = (
            loop.call_later(effective / 1e6, self._batcher.cancel, req, True)
            if effective > 0
            else None
        )
        try:
            outs = await fut
        except asyncio.CancelledError:
            self._batcher.cancel(
                req, False
            )  # a request a batch already took runs; its answer is dropped
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return self._outputs(outs)

    def stats(self) -> dict[str, Any]:
        """Counters since creation (or :meth:`reset_stats`) and recent-request percentiles.

        Keys: requests, completed, failed, queue_full, timed_out, closed, cancelled, batches, rows,
        isolation_runs (single-request reruns that find whose request failed a batch),
        mean_batch_size, batch_size_histogram ({rows: batches}), and queue_time_us and latency_us
        ({count, mean, p50, p90, p99, max} over the last 8192 requests).
        """
        return dict(self._batcher.stats())

    def reset_stats(self) -> None:
        """Zero the counters and drop the samples."""
        self._batcher.reset_stats()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return bool(self._batcher.closed)

    def close(self, drain: bool = True) -> None:
        """Stop taking requests and wait for the workers.

        Parameters
        ----------
        drain
            True runs the requests already queued; False fails them with BatcherClosedError.
            Either way every request gets exactly one answer.
        """
        self._batcher.close(drain)
        for waker in list(self._wakers.values()):
            waker.close()

    def __enter__(self) -> BatchedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            batcher.close(True)

    def __repr__(self) -> str:
        c = self.config
        state = "closed" if self.closed else "open"
        return (
            f"<BatchedModel {state} backend={self.backend} max_batch_size={c.max_batch_size} "
            f"max_delay_us={c.max_delay_us} workers={c.workers}>"
        )
