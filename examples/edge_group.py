"""Deploy the example group and invoke its function through a running core.

1. write the example model (the quick start's MLP) and package it as digits.tar.gz;
2. ``pyengine deploy examples/group/group.yaml --root WORK/root`` installs it;
3. ``pyengine core start --root WORK/root`` runs the function (confined, as nobody under root);
4. ``pyengine invoke classify --payload @event.json`` prints the prediction.

Run with ``python examples/edge_group.py [WORKDIR]`` (a temporary directory by default).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from quickstart import write_mlp  # noqa: E402

PYENGINE = [sys.executable, "-m", "pyengine"]


def run(*args: str) -> str:
    print("$ pyengine " + " ".join(args), flush=True)
    out = subprocess.run([*PYENGINE, *args], check=True, capture_output=True, text=True).stdout
    print(out, end="", flush=True)
    return out


def main(work: str) -> None:
    os.environ["PYENGINE_EXAMPLE"] = work
    os.makedirs(os.path.join(work, "packages"), exist_ok=True)
    model = write_mlp(os.path.join(work, "digits.pyem"))
    with tarfile.open(os.path.join(work, "packages", "digits.tar.gz"), "w:gz") as tar:
        tar.add(model, arcname="digits.pyem")
    root = os.path.join(work, "root")
    run("deploy", os.path.join(HERE, "group", "group.yaml"), "--root", root)

    log = open(os.path.join(work, "core.log"), "wb")  # noqa: SIM115 - open while the core runs
    core = subprocess.Popen([*PYENGINE, "core", "start", "--root", root, "--port", "0"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        address = os.path.join(root, "core.json")
        deadline = time.monotonic() + 60
        while True:
            if core.poll() is not None or time.monotonic() > deadline:
                with open(log.name) as fh:
                    raise RuntimeError(f"the core did not start:\n{fh.read()}")
            if os.path.exists(address):
                with open(address) as fh:
                    url = json.load(fh)["url"]
                try:
                    import urllib.request

                    with urllib.request.urlopen(f"{url}/health/ready", timeout=5):
                        break
                except OSError:
                    pass
            time.sleep(0.1)
        x = np.random.default_rng(1).standard_normal((4, 64)).round(4)
        event = os.path.join(work, "event.json")
        with open(event, "w") as fh:
            json.dump({"x": x.tolist()}, fh)
        answer = json.loads(run("invoke", "classify", "--root", root, "--payload", f"@{event}"))
        print("predicted classes:", answer["classes"], "(model version",
              answer["model_version"] + ")")
    finally:
        core.terminate()
        core.wait(timeout=30)
        log.close()
        with open(log.name) as fh:
            print("--- core log ---\n" + fh.read(), end="")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(os.path.abspath(sys.argv[1]))
    else:
        # Functions run as nobody when the core runs as root: the directory must be reachable.
        tmp = tempfile.mkdtemp(prefix="pyengine-example-")
        os.chmod(tmp, 0o755)
        try:
            main(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
