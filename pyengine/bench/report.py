"""Reports of ``pyengine bench``: the terminal table, the JSON record (validated against
``schema.json``), ``--merge`` of several devices' records, and ``--plot``."""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from typing import Any, Optional, Sequence

from pyengine.bench.machine import header_lines


def schema() -> dict[str, Any]:
    """The JSON schema of a bench record (draft 2020-12)."""
    text = resources.files("pyengine.bench").joinpath("schema.json").read_text(encoding="utf-8")
    out: dict[str, Any] = json.loads(text)
    return out


_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}


def validate(doc: Any, sch: Optional[dict[str, Any]] = None) -> list[str]:
    """Check ``doc`` against the bench schema; returns one message per problem (empty: valid).

    Covers the keywords schema.json uses (type, const, enum, required, properties, items,
    minimum, allOf, anyOf, $ref to #/$defs), so that ``--merge`` checks its files without the
    ``jsonschema`` package.
    """
    root = sch or schema()
    problems: list[str] = []

    def ok_type(value: Any, t: str) -> bool:
        if t in ("integer", "number") and isinstance(value, bool):
            return False
        return isinstance(value, _TYPES[t])

    def check(value: Any, s: dict[str, Any], path: str, out: list[str]) -> None:
        if "$ref" in s:
            ref = s["$ref"]
            check(value, root["$defs"][ref.rsplit("/", 1)[1]], path, out)
        for sub in s.get("allOf", ()):
            check(value, sub, path, out)
        if "anyOf" in s:
            trials = []
            for sub in s["anyOf"]:
                errs: list[str] = []
                check(value, sub, path, errs)
                if not errs:
                    break
                trials.append(errs[0])
            else:
                out.append(f"{path}: matches none of the allowed forms ({'; '.join(trials)})")
        if "const" in s and value != s["const"]:
            out.append(f"{path}: is {value!r}, expected {s['const']!r}")
        if "enum" in s and value not in s["enum"]:
            out.append(f"{path}: is {value!r}, expected one of {s['enum']}")
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if not any(ok_type(value, t) for t in types):
                out.append(f"{path}: is {type(value).__name__} {value!r:.40}, expected "
                           f"{' or '.join(types)}")
                return
        if (isinstance(value, (int, float)) and not isinstance(value, bool) and "minimum" in s
                and value < s["minimum"]):
            out.append(f"{path}: is {value}, expected >= {s['minimum']}")
        if isinstance(value, dict):
            for key in s.get("required", ()):
                if key not in value:
                    out.append(f"{path}: missing field {key!r}")
            for key, sub in s.get("properties", {}).items():
                if key in value:
                    check(value[key], sub, f"{path}.{key}", out)
        if isinstance(value, list) and "items" in s:
            for i, item in enumerate(value):
                check(item, s["items"], f"{path}[{i}]", out)

    check(doc, root, "$", problems)
    return problems


def _plain(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record_json(record: dict[str, Any]) -> Any:
    """``record`` as the JSON document a file or ``pyengine bench --json`` gets, checked against
    the schema."""
    doc = _plain(record)
    problems = validate(doc)
    if problems:  # a bug here, not the user's: say exactly what
        raise AssertionError("bench record does not match schema.json: " + "; ".join(problems))
    return doc


def write_json(record: dict[str, Any], path: str) -> str:
    """Write ``record`` as JSON (after checking it against the schema); returns the path."""
    doc = record_json(record)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def load_json(path: str) -> dict[str, Any]:
    """Read a bench record and check it against the schema.

    Raises
    ------
    ValueError
        Not JSON, or not a bench record (the message names the file and the first problems).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON bench record ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    problems = validate(doc)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{path}: not a pyengine bench record: {'; '.join(problems[:3])}{more}")
    return doc


def columns(head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Aligned text columns with a rule under the head."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def _num(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:.0f}"
    if digits == 3 and abs(x) < 1:  # sub-millisecond calls: keep three significant digits
        return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.6f}"
    return f"{x:.{digits}f}"


def table(record: dict[str, Any], top: Optional[int] = 10) -> str:
    """The record as text: header lines, one row per cell, and the per-op tables of
    ``--profile`` (their ``top`` slowest ops)."""
    cells = [c for m in record["models"] for c in m["cells"]]
    compare = any(c["compare"] for c in cells)
    head = ["model", "isa", "threads", "batch", "first ms", "p50 ms", "p90 ms", "p99 ms",
            "rows/s", "load ms", "peak RSS MiB"]
    if compare:
        backend = next(c["compare"]["backend"] for c in cells if c["compare"])
        head += [f"{backend} p50 ms", "ratio"]
    rows = []
    for c in cells:
        rss = c["peak_rss_bytes"]
        row = [c["model"], c["isa"], str(c["threads"]), str(c["batch"]), _num(c["first_ms"]),
               _num(c["p50_ms"]), _num(c["p90_ms"]), _num(c["p99_ms"]),
               _num(c["throughput_rows_s"], 1), _num(c["load_ms"], 1),
               f"{rss / 2**20:.0f}" if rss else "-"]
        if compare:
            cmp = c["compare"] or {}
            row += [_num(cmp.get("p50_ms")), f"{cmp['ratio_p50']:.2f}x" if cmp.get("ratio_p50")
                    else "-"]
        rows.append(row)
    lines = [*header_lines(record["header"]), ""]
    lines += columns(head, rows, right=range(2, len(head)))
    runs = sorted({c["runs"] for c in cells})
    lines.append(f"\n{runs[0]}-{runs[-1]} timed calls per cell" if len(runs) > 1
                 else f"\n{runs[0] if runs else 0} timed calls per cell")
    if compare:
        lines.append("ratio: pyengine p50 / the framework's p50 on the same inputs, calls taking "
                     "turns (below 1: pyengine is faster)")
    for c in cells:
        prof = c.get("profile")
        if not prof:
            continue
        title = f"\nper-op profile: {c['model']} {c['isa']} threads={c['threads']} batch={c['batch']}"
        if "unavailable" in prof:
            lines += [title, prof["unavailable"]]
            continue
        ops = prof["ops"][:top] if top else prof["ops"]
        lines += [f"{title} ({prof['runs']} runs, {prof['call_ms']:.3f} ms per call; "
                  f"{len(ops)} slowest of {len(prof['ops'])} nodes)"]
        lines += columns(["node", "op", "kernel", "layout", "mean ms", "share"],
                         [[o["name"], o["op"], o["kernel"], o["layout"] or "-",
                           f"{o['mean_ms']:.3f}", f"{100 * o['share']:.1f}%"] for o in ops],
                         right=(4, 5))
        lines += ["by op type:"] + columns(
            ["op", "nodes", "mean ms", "share"],
            [[t["op"], str(t["nodes"]), f"{t['mean_ms']:.3f}", f"{100 * t['share']:.1f}%"]
             for t in prof["by_op_type"]], right=(1, 2, 3))
    return "\n".join(lines)


def label_of(record: dict[str, Any], path: str) -> str:
    """A device's name in merged reports: ``--label``, else the host and CPU."""
    if record.get("label"):
        return str(record["label"])
    h = record["header"]
    return f"{h.get('host') or os.path.basename(path)} ({h['cpu']['model'] or h['cpu']['arch']})"


def _key(c: dict[str, Any]) -> tuple[str, int, int]:
    return (c["model"], c["batch"], c["threads"])


Row = tuple[tuple[str, int, int], list[Optional[dict[str, Any]]]]


def merge(paths: Sequence[str]) -> tuple[list[str], list[Row], list[dict[str, Any]]]:
    """Read several records (one per device): their labels, and per (model, batch, threads) each
    record's fastest cell over the kernel variants (None where a record lacks it)."""
    records = [load_json(p) for p in paths]
    labels = [label_of(r, p) for r, p in zip(records, paths)]
    for i in range(len(records)):
        if labels.count(labels[i]) > 1:
            labels[i] = f"{labels[i]} [{os.path.basename(paths[i])}]"
    keys: dict[tuple[str, int, int], list[Optional[dict[str, Any]]]] = {}
    for i, r in enumerate(records):
        for m in r["models"]:
            for c in m["cells"]:
                row = keys.setdefault(_key(c), [None] * len(records))
                if row[i] is None or c["p50_ms"] < row[i]["p50_ms"]:  # type: ignore[index]
                    row[i] = c
    return labels, sorted(keys.items()), records


def merge_table(paths: Sequence[str]) -> str:
    """``--merge``: p50 latency and throughput per model, batch and threads, one column pair per
    device; each device's header in one line above."""
    labels, rows, records = merge(paths)
    lines = []
    for label, r in zip(labels, records):
        h = r["header"]
        emu = " EMULATED: correctness only" if h["emulation"]["emulated"] else ""
        lines.append(f"{label}: pyengine {h['pyengine']}, {h['cpu']['arch']} "
                     f"{h['cpu']['cores']} cores, kernels {h['kernel_variant']}, "
                     f"governor {h['governor'] or '-'}, load {h['load_average'] or '-'}{emu}")
    head = ["model", "batch", "threads"]
    for label in labels:
        head += [f"{label} p50 ms", "rows/s"]
    body = []
    for (model, batch, threads), cells in rows:
        row = [model, str(batch), str(threads)]
        for c in cells:
            row += [_num(c["p50_ms"]), _num(c["throughput_rows_s"], 1)] if c else ["-", "-"]
        body.append(row)
    lines += [""] + columns(head, body, right=range(1, len(head)))
    lines.append("\nEach device's fastest kernel variant per row; '-': not measured there.")
    return "\n".join(lines)


def plot(paths: Sequence[str], out: str) -> str:
    """``--plot``: p50 latency per (model, batch, threads), one bar per device; writes ``out``.

    Raises
    ------
    ImportError
        matplotlib is not installed (the message says how to get it).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib, which is not installed; "
                          "pip install matplotlib (the table needs nothing more)") from None
    labels, rows, _ = merge(paths)
    names = [f"{m}\nb{b} t{t}" for (m, b, t), _ in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) * max(1, len(labels)) / 2), 4.5))
    width = 0.8 / max(1, len(labels))
    for j, label in enumerate(labels):
        xs = [i + j * width for i in range(len(rows))]
        ys = [c["p50_ms"] if (c := cells[j]) else 0.0 for _, cells in rows]
        ax.bar(xs, ys, width, label=label)
    ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(rows))])
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylabel("p50 latency (ms)")
    ax.set_yscale("log")
    ax.set_title("pyengine bench: p50 latency per model, one bar per device")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
