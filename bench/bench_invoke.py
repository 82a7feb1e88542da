"""Invoke round trip: calling a function's handler directly vs through the core over HTTP and
through ``pyengine invoke``. Writes bench/results/invoke.md.

The function is the example-style classifier: a pinned function that loads a 64-256-256-10 MLP
by resource id and answers one row. The core runs as a real process over a real deployment.

Usage: python bench/bench_invoke.py [--calls 1000] [--cli-calls 30]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import numpy as np  # noqa: E402
from common import CLASSIFIER_HANDLER, latency_rows, pct, timed, write_markdown  # noqa: E402
from core_helpers import CoreProcess, deploy_group, function, model_resource  # noqa: E402
from machine import describe  # noqa: E402
from models import mlp  # noqa: E402

from pyengine.core.api import CoreClient  # noqa: E402

HANDLER = CLASSIFIER_HANDLER.format(rid="mlp", shape="1, -1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--cli-calls", type=int, default=30)
    args = ap.parse_args()

    base = tempfile.mkdtemp(prefix="pyengine-bench-invoke-")
    os.chmod(base, 0o755)
    try:
        root = os.path.join(base, "root")
        res = model_resource(base, "mlp", lambda d: mlp(os.path.join(d, "model.pyem")))
        fn = function(base, "classify", HANDLER, (("mlp", "ro"),), pinned=True)
        deploy_group(base, root, [res], [fn], name="bench")
        event = {"x": np.random.default_rng(0).standard_normal(64).round(4).tolist()}
        body = json.dumps(event).encode()

        # Direct: the same handler, imported in this process, as the worker would call it.
        os.environ["PYENGINE_RESOURCES"] = json.dumps({"mlp": res["model"]["destination"]})
        sys.path.insert(0, os.path.join(base, "functions", "classify"))
        handler = importlib.import_module("handler")
        from pyengine.core.function_api import Context, begin_call

        log = logging.getLogger("bench")

        def direct(_: int = 0) -> object:
            return handler.function_handler(
                event, Context("classify", "bench", time.monotonic() + 3, begin_call(), log))

        expected = direct()
        rows: list[tuple[str, list[float]]] = [
            ("handler called directly", timed(direct, args.calls))]
        del os.environ["PYENGINE_RESOURCES"]

        core = CoreProcess(root, args=("--port", "0")).wait_ready()
        try:
            assert core.client is not None

            def keepalive(client: CoreClient) -> Callable[[int], object]:
                conn = client.connection()
                headers = client.headers({"Content-Type": "application/json"})

                def call(_: int = 0) -> object:
                    conn.request("POST", "/functions/classify/invoke", body=body, headers=headers)
                    resp = conn.getresponse()
                    data = json.loads(resp.read())
                    assert resp.status == 200, data
                    return data["result"]
                return call

            over_socket = keepalive(core.client)
            assert over_socket() == expected
            rows.append(("HTTP over the Unix socket, one kept-alive connection",
                         timed(over_socket, args.calls)))
            over_tcp = keepalive(core.tcp_client())
            assert over_tcp() == expected
            rows.append(("HTTP over TCP with the bearer token, one kept-alive connection",
                         timed(over_tcp, args.calls)))

            def http_new(_: int = 0) -> object:
                assert core.client is not None
                return core.client.invoke("classify", raw=body)[1]["result"]

            rows.append(("HTTP over the Unix socket, new connection per call",
                         timed(http_new, args.calls // 2)))

            cli = [sys.executable, "-m", "pyengine", "invoke", "classify", "--root", root,
                   "--payload", body.decode()]

            def via_cli(_: int = 0) -> object:
                out = subprocess.run(cli, capture_output=True, text=True, check=True)
                return json.loads(out.stdout)

            assert via_cli() == expected
            rows.append(("`pyengine invoke` (CLI process per call)",
                         timed(via_cli, args.cli_calls, warmup=2)))
        finally:
            core.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    direct_p50 = pct(rows[0][1], 50)
    http_p50 = pct(rows[1][1], 50)
    lines = [
        "# Invoke round trip",
        "",
        describe(),
        "",
        "A pinned function answering one MLP row (64-256-256-10, native engine), confined with "
        "Landlock in a worker run as a user of its own; the core is a separate process, reached "
        "over its Unix socket (authorized by the peer's credentials) or its loopback TCP "
        "listener (bearer token compared per request). "
        f"Calls per row: {args.calls} direct and HTTP kept-alive, {args.calls // 2} new "
        f"connection, {args.cli_calls} CLI. Load average at the end: "
        f"{os.getloadavg()[0]:.1f} (the machine is shared; p99 carries that noise).",
        "",
        "| path | p50 (ms) | p99 (ms) | mean (ms) | overhead over direct, p50 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += latency_rows(rows, direct_p50)
    met = http_p50 - direct_p50 < 1.0
    lines += [
        "",
        f"Target (set here; the issue names none): the core adds under 1 ms at p50 over HTTP on "
        f"a kept-alive connection (the Unix socket) — {'met' if met else 'NOT met'} "
        f"({http_p50 - direct_p50:.3f} ms).",
        "The CLI row is dominated by starting a Python process that imports pyengine; it is "
        "for scripts and checks, not for a request path.",
    ]
    write_markdown("invoke", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
