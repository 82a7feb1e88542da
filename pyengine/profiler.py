"""Per-op profiles of native models: :meth:`pyengine.backends.native.NativeModel.profile` returns a
:class:`Profile`, which prints as a table and writes a Chrome trace.

>>> report = model.profile(x, runs=20)                          # doctest: +SKIP
>>> print(report.table(top=10))                                 # doctest: +SKIP
>>> report.write_chrome_trace("resnet50.json")                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

Shape = tuple[int, ...]


@dataclass(frozen=True)
class OpProfile:
    """One node of a profiled model, timed over every run.

    Attributes
    ----------
    name, op
        The node's name and op type.
    input_shapes, output_shapes
        The shapes it read and wrote.
    layout
        The activations' layout ("NCHW", "NHWC", a channel-blocked "NCHW16c"), or "" for ops
        that have none.
    kernel
        The kernel path that ran ("avx512 im2col gemm", "view", "reorder").
    times_ms
        Its time in each run, in milliseconds.
    share
        Its mean time over the sum of every node's mean time (shares sum to 1).
    """

    name: str
    op: str
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    layout: str
    kernel: str
    times_ms: tuple[float, ...]
    share: float

    @property
    def time_ms(self) -> float:
        """Mean milliseconds over the runs."""
        return statistics.fmean(self.times_ms)

    @property
    def p50_ms(self) -> float:
        """Median milliseconds over the runs."""
        return statistics.median(self.times_ms)


@dataclass(frozen=True)
class Profile:
    """Every node of a model, timed over ``runs`` calls on the same inputs.

    Attributes
    ----------
    ops
        One record per node, in execution order.
    runs
        How many calls were timed.
    calls_ms
        Each call's wall time (nodes plus the executor's own work), in milliseconds.
    """

    ops: tuple[OpProfile, ...]
    runs: int
    calls_ms: tuple[float, ...]
    _trace: dict[str, Any]

    @property
    def total_ms(self) -> float:
        """Sum of the nodes' mean times, in milliseconds."""
        return sum(r.time_ms for r in self.ops)

    @property
    def call_ms(self) -> float:
        """Median wall time of one call, in milliseconds."""
        return statistics.median(self.calls_ms)

    def by_op_type(self) -> list[tuple[str, float, float, int]]:
        """(op type, mean ms, share, node count) per op type, slowest first."""
        acc: dict[str, list[float]] = {}
        for r in self.ops:
            t = acc.setdefault(r.op, [0.0, 0.0, 0])
            t[0] += r.time_ms
            t[1] += r.share
            t[2] += 1
        return sorted(((k, v[0], v[1], int(v[2])) for k, v in acc.items()), key=lambda x: -x[1])

    def table(self, top: Optional[int] = None, sort: bool = True) -> str:
        """The nodes as a text table (slowest first when ``sort``; the ``top`` first when given),
        then the time per op type."""
        rows = sorted(self.ops, key=lambda r: -r.time_ms) if sort else list(self.ops)
        shown = rows[:top] if top else rows
        head = ("node", "op", "inputs", "outputs", "layout", "kernel", "mean ms", "p50 ms", "share")
        body = [
            (
                r.name,
                r.op,
                " ".join(_shape(s) for s in r.input_shapes),
                " ".join(_shape(s) for s in r.output_shapes),
                r.layout or "-",
                r.kernel,
                f"{r.time_ms:.3f}",
                f"{r.p50_ms:.3f}",
                f"{100 * r.share:.1f}%",
            )
            for r in shown
        ]
        lines = [
            f"{len(self.ops)} nodes, {self.runs} runs: {self.total_ms:.3f} ms in nodes (mean), "
            f"{self.call_ms:.3f} ms per call (p50)"
            + (f"; the {len(shown)} slowest nodes:" if len(shown) < len(rows) else ":"),
            *_columns(head, body, right=(6, 7, 8)),
            "",
            "by op type:",
            *_columns(
                ("op", "nodes", "mean ms", "share"),
                [(op, str(n), f"{ms:.3f}", f"{100 * sh:.1f}%") for op, ms, sh, n in self.by_op_type()],
                right=(1, 2, 3),
            ),
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def chrome_trace(self) -> dict[str, Any]:
        """The runs as a Chrome trace ({"traceEvents": [...]}, open it in chrome://tracing or
        Perfetto): one complete event per call ("model_run") and per node, as onnxruntime's
        profiler writes them, with the op type, shapes, layout and kernel in ``args``."""
        return self._trace

    def write_chrome_trace(self, path: str | os.PathLike[str]) -> str:
        """Write :meth:`chrome_trace` as JSON to ``path``; returns the path."""
        path = os.fspath(path)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self._trace, fh)
        return path


def _shape(s: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in s) + "]"


def _columns(head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def build_profile(raw: dict[str, Any]) -> Profile:
    """A :class:`Profile` from the C++ core's ``Model.profile`` result."""
    nodes = raw["nodes"]
    starts, ends = raw["start_ns"], raw["end_ns"]
    calls = raw["calls_ns"]
    runs = len(starts)
    per_node = [
        tuple((ends[r][i] - starts[r][i]) / 1e6 for r in range(runs)) for i in range(len(nodes))
    ]
    means = [statistics.fmean(t) if t else 0.0 for t in per_node]
    total = sum(means) or 1.0
    ops = tuple(
        OpProfile(
            name=n["name"],
            op=n["op"],
            input_shapes=tuple(tuple(s) for s in n["input_shapes"]),
            output_shapes=tuple(tuple(s) for s in n["output_shapes"]),
            layout=n["layout"],
            kernel=n["kernel"],
            times_ms=per_node[i],
            share=means[i] / total,
        )
        for i, n in enumerate(nodes)
    )
    origin = calls[0][0] if calls else 0
    events: list[dict[str, Any]] = []
    for r, (c0, c1) in enumerate(calls):
        events.append({"name": "model_run", "cat": "Session", "ph": "X", "pid": 0, "tid": 0,
                       "ts": (c0 - origin) / 1e3, "dur": (c1 - c0) / 1e3, "args": {"run": r}})
        for i, n in enumerate(nodes):
            events.append({
                "name": n["name"], "cat": "Node", "ph": "X", "pid": 0, "tid": 0,
                "ts": (starts[r][i] - origin) / 1e3, "dur": (ends[r][i] - starts[r][i]) / 1e3,
                "args": {"op_name": n["op"], "input_type_shape": n["input_shapes"],
                         "output_type_shape": n["output_shapes"], "layout": n["layout"],
                         "kernel": n["kernel"], "run": r},
            })
    trace = {"traceEvents": events, "displayTimeUnit": "ms"}
    return Profile(ops=ops, runs=runs, calls_ms=tuple((c1 - c0) / 1e6 for c0, c1 in calls),
                   _trace=trace)
