"""Run the deployed example group on a core and invoke its function, printing the prediction.

``scripts/main.sh`` deploys examples/group/group.yaml into ROOT first; this then runs

    pyengine core start --root ROOT                 (in the background; functions confined)
    pyengine invoke classify --root ROOT --payload @event.json

and stops the core. The core's API is its Unix socket ROOT/core.sock (mode 0660: the core's
user and group); ``pyengine invoke --root ROOT`` finds it in ROOT/core.json.
Usage: python examples/invoke_demo.py ROOT
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from pyengine.core.api import CoreClient

PYENGINE = [sys.executable, "-m", "pyengine"]


def wait_ready(root: str, core: subprocess.Popen, log_path: str, timeout: float = 60) -> None:
    """Return once the core in ``root`` answers 200 on /health/ready (over its socket)."""
    deadline = time.monotonic() + timeout
    while True:
        if core.poll() is not None or time.monotonic() > deadline:
            with open(log_path) as fh:
                raise RuntimeError(f"the core did not become ready:\n{fh.read()}")
        try:
            if CoreClient.for_root(root, timeout=5).get("/health/ready")[0] == 200:
                return
        except OSError:
            pass  # not started yet
        time.sleep(0.1)


def main(root: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "core.log")
        with open(log_path, "wb") as log:
            print(f"$ pyengine core start --root {root} &", flush=True)
            core = subprocess.Popen([*PYENGINE, "core", "start", "--root", root],
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_ready(root, core, log_path)
                event = os.path.join(tmp, "event.json")
                x = np.random.default_rng(1).standard_normal(64).round(4)
                with open(event, "w") as fh:
                    json.dump({"x": x.tolist()}, fh)
                cmd = ["invoke", "classify", "--root", root, "--payload", f"@{event}"]
                print("$ pyengine " + " ".join(cmd), flush=True)
                done = subprocess.run([*PYENGINE, *cmd], capture_output=True, text=True)
                print(done.stdout + done.stderr, end="")
                if done.returncode != 0:
                    raise SystemExit(f"pyengine invoke failed with status {done.returncode}")
                answer = json.loads(done.stdout)
                print(f"prediction: label {answer['label']} "
                      f"(p={answer['top'][0][1]:.3f}; top {[t[0] for t in answer['top']]})")
            finally:
                core.terminate()
                core.wait(timeout=30)
                with open(log_path) as fh:
                    print("--- core log ---\n" + fh.read(), end="")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/invoke_demo.py ROOT")
    main(os.path.abspath(sys.argv[1]))
