"""Per-function invocation metrics in the Prometheus text format."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import Any

#: Upper bounds (seconds) of the duration histogram's buckets.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


#: Counters and gauges beside the invocation metrics: name -> (type, help).
EXTRA = {
    "pyengine_messages_received_total": (
        "counter", "MQTT messages routed to a function, by function and source."),
    "pyengine_messages_dropped_total": (
        "counter", "Messages that did not reach a function's handler, by function and reason "
        "(too_large, queue_full, queue_full_bytes, stopped, worker_died, timeout, busy, "
        "function_failed, unrouted, ...)."),
    "pyengine_messages_published_total": (
        "counter", "Messages functions published, by function and target (devices, cloud, or "
        "a function)."),
    "pyengine_messages_unrouted_total": (
        "counter", "Messages a function published that no subscription routes."),
    "pyengine_message_queue_depth": ("gauge", "Messages waiting for each function."),
    "pyengine_message_queue_bytes": (
        "gauge", "Bytes of payloads and topics waiting for each function."),
    "pyengine_mqtt_connect_failures_total": (
        "counter", "Failed connection attempts to a broker, by reason (tls, auth, refused, "
        "network)."),
    "pyengine_mqtt_connected": (
        "gauge", "1 while the core is connected to the broker and subscribed."),
    "pyengine_mqtt_connects_total": ("counter", "Successful connections to the broker."),
    "pyengine_capture_samples_total": ("counter", "Samples captured (spooled and fsynced)."),
    "pyengine_capture_evicted_total": (
        "counter", "Spooled samples of a function evicted, its oldest first, to stay within "
        "its quota."),
    "pyengine_capture_refused_total": (
        "counter", "Samples refused, by function and reason (too_large, spool_full)."),
    "pyengine_capture_uploaded_total": ("counter", "Samples uploaded to S3."),
    "pyengine_capture_upload_errors_total": ("counter", "Failed batch uploads (retried)."),
    "pyengine_capture_spool_samples": ("gauge", "Samples waiting in the spool."),
    "pyengine_capture_spool_bytes": (
        "gauge", "Bytes on disk (allocated blocks) of the samples waiting in the spool."),
    "pyengine_capture_spool_function_samples": ("gauge", "Samples waiting, by function."),
    "pyengine_capture_spool_function_bytes": (
        "gauge", "Bytes on disk of the samples waiting, by function."),
}


#: Upper bounds (rows) of the batch size histogram's buckets.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Batcher counters: stats key -> the outcome label of ``pyengine_batch_requests_total``.
BATCH_OUTCOMES = {"completed": "completed", "failed": "failed", "queue_full": "queue_full",
                  "timed_out": "timed_out", "closed": "closed", "cancelled": "cancelled"}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters: invocations, errors by type, and a duration histogram per function."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, int] = defaultdict(int)
        self._errors: dict[tuple[str, str], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._sum: dict[str, float] = defaultdict(float)
        self._extra: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        """Add ``n`` to the counter ``name`` (one of :data:`EXTRA`) with ``labels``."""
        with self._lock:
            self._extra[(name, tuple(sorted(labels.items())))] += n

    def value(self, name: str, **labels: str) -> float:
        """The counter ``name`` with exactly ``labels`` (0 when never counted)."""
        with self._lock:
            return self._extra.get((name, tuple(sorted(labels.items()))), 0)

    def record(self, function: str, seconds: float, error: str | None = None) -> None:
        """Count one call of ``function`` taking ``seconds``; ``error``: its failure type."""
        with self._lock:
            self._calls[function] += 1
            if error:
                self._errors[(function, error)] += 1
            i = bisect.bisect_left(BUCKETS, seconds)
            if i < len(BUCKETS):
                self._buckets[function][i] += 1
            else:
                self._buckets[function]  # noqa: B018 - create the row: +Inf only
            self._sum[function] += seconds

    def histograms(self) -> dict[str, tuple[int, list[int]]]:
        """Each function's calls and its duration counts per :data:`BUCKETS` bucket (not
        cumulative; calls past the last bound are in neither)."""
        with self._lock:
            return {fn: (self._calls.get(fn, 0), list(self._buckets.get(fn, [0] * len(BUCKETS))))
                    for fn in set(self._calls) | set(self._buckets)}

    def errors(self) -> dict[str, int]:
        """Each function's failed calls, all error types together."""
        out: dict[str, int] = defaultdict(int)
        with self._lock:
            for (fn, _), n in self._errors.items():
                out[fn] += n
        return dict(out)

    def calls(self, function: str) -> int:
        """Calls of ``function`` so far."""
        with self._lock:
            return self._calls.get(function, 0)

    def render(self, workers: dict[str, int],
               gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] | None = None) -> str:
        """The Prometheus exposition text; ``workers`` gives each function's live worker count,
        ``gauges`` the current value of gauges of :data:`EXTRA` by (name, labels)."""
        lines = [
            "# HELP pyengine_invocations_total Function invocations.",
            "# TYPE pyengine_invocations_total counter",
        ]
        with self._lock:
            calls = dict(self._calls)
            errors = dict(self._errors)
            buckets = {k: list(v) for k, v in self._buckets.items()}
            sums = dict(self._sum)
            extra = dict(self._extra)
        extra.update(gauges or {})
        for fn in sorted(set(calls) | set(workers)):
            lines.append(f'pyengine_invocations_total{{function="{_label(fn)}"}} '
                         f'{calls.get(fn, 0)}')
        lines += ["# HELP pyengine_invocation_errors_total Failed invocations by error type.",
                  "# TYPE pyengine_invocation_errors_total counter"]
        for (fn, kind), n in sorted(errors.items()):
            lines.append(f'pyengine_invocation_errors_total{{function="{_label(fn)}",'
                         f'type="{_label(kind)}"}} {n}')
        lines += ["# HELP pyengine_invocation_duration_seconds Invocation round trip in the core.",
                  "# TYPE pyengine_invocation_duration_seconds histogram"]
        for fn in sorted(buckets):
            acc = 0
            for bound, n in zip(BUCKETS, buckets[fn]):
                acc += n
                lines.append(f'pyengine_invocation_duration_seconds_bucket{{function="{_label(fn)}",'
                             f'le="{bound}"}} {acc}')
            lines.append(f'pyengine_invocation_duration_seconds_bucket{{function="{_label(fn)}",'
                         f'le="+Inf"}} {calls.get(fn, 0)}')
            lines.append(f'pyengine_invocation_duration_seconds_sum{{function="{_label(fn)}"}} '
                         f'{sums.get(fn, 0.0):.6f}')
            lines.append(f'pyengine_invocation_duration_seconds_count{{function="{_label(fn)}"}} '
                         f'{calls.get(fn, 0)}')
        lines += ["# HELP pyengine_workers Live worker processes.", "# TYPE pyengine_workers gauge"]
        for fn, n in sorted(workers.items()):
            lines.append(f'pyengine_workers{{function="{_label(fn)}"}} {n}')
        for name, (kind, text) in EXTRA.items():
            rows = sorted((labels, v) for (n, labels), v in extra.items() if n == name)
            if not rows:
                continue
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for labels, v in rows:
                lab = ",".join(f'{k}="{_label(val)}"' for k, val in labels)
                num = str(int(v)) if float(v).is_integer() else repr(float(v))
                lines.append(f"{name}{{{lab}}} {num}" if lab else f"{name} {num}")
        return "\n".join(lines) + "\n"


def render_batching(stats: dict[tuple[str, str], dict[str, Any]]) -> str:
    """The batchers' metrics: ``stats`` maps (function, resource id) to the merged
    :meth:`pyengine.BatchedModel.stats` of the function's live workers."""
    if not stats:
        return ""
    rows = sorted(stats.items())

    def lab(fn: str, rid: str, **more: str) -> str:
        extra = "".join(f',{k}="{_label(v)}"' for k, v in more.items())
        return f'{{function="{_label(fn)}",resource="{_label(rid)}"{extra}}}'

    lines = ["# HELP pyengine_batch_requests_total Requests to a batched model, by outcome.",
             "# TYPE pyengine_batch_requests_total counter"]
    for (fn, rid), st in rows:
        for key, outcome in BATCH_OUTCOMES.items():
            lines.append(f"pyengine_batch_requests_total{lab(fn, rid, outcome=outcome)} "
                         f"{int(st.get(key, 0))}")
    lines += ["# HELP pyengine_batches_total Batches run (model runs).",
              "# TYPE pyengine_batches_total counter"]
    for (fn, rid), st in rows:
        lines.append(f"pyengine_batches_total{lab(fn, rid)} {int(st.get('batches', 0))}")
    lines += ["# HELP pyengine_batch_size Rows per batch.",
              "# TYPE pyengine_batch_size histogram"]
    for (fn, rid), st in rows:
        hist = {int(k): int(v) for k, v in (st.get("batch_size_histogram") or {}).items()}
        for bound in BATCH_BUCKETS:
            n = sum(v for k, v in hist.items() if k <= bound)
            lines.append(f"pyengine_batch_size_bucket{lab(fn, rid, le=str(bound))} {n}")
        lines.append(f"pyengine_batch_size_bucket{lab(fn, rid, le='+Inf')} {sum(hist.values())}")
        lines.append(f"pyengine_batch_size_sum{lab(fn, rid)} {int(st.get('rows', 0))}")
        lines.append(f"pyengine_batch_size_count{lab(fn, rid)} {int(st.get('batches', 0))}")
    for name, key, text in (
            ("pyengine_batch_queue_seconds", "queue_time_us",
             "Time a request waited in the batcher's queue (recent requests)."),
            ("pyengine_batch_latency_seconds", "latency_us",
             "A request's time in the batcher, queue and model run (recent requests).")):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} summary"]
        for (fn, rid), st in rows:
            w = st.get(key) or {}
            count = int(w.get("count", 0))
            for q, field in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
                lines.append(f"{name}{lab(fn, rid, quantile=q)} {float(w.get(field, 0)) / 1e6:.6f}")
            lines.append(f"{name}_sum{lab(fn, rid)} {float(w.get('mean', 0)) * count / 1e6:.6f}")
            lines.append(f"{name}_count{lab(fn, rid)} {count}")
    return "\n".join(lines) + "\n"
