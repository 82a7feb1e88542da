"""Run the deployed image-classification group on a core and classify held-out test digits.

``scripts/main.sh`` builds the package (build.py) and deploys group.yaml into ROOT first; this
then runs

    pyengine core start --root ROOT                              (in the background)
    pyengine invoke classify-image --root ROOT --payload @event.json

for one test digit (a 32x32 PNG, base64 in the event), prints the answer, classifies the same
digit by its path in the granted ``captures`` volume, then sends every test PNG through the
core's API and prints the accuracy of the deployed function next to
the test accuracy recorded when the model was built. It exits non-zero when the shown digit is
misclassified.

Usage: python examples/image-classification/invoke.py ROOT TEST_DIGITS_DIR
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile

from pyengine.core.api import CoreClient
from pyengine.deploy import current

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from invoke_demo import PYENGINE, wait_ready  # noqa: E402

FUNCTION = "classify-image"


def event_for(png_path: str) -> dict:
    """The function's event for one image file."""
    with open(png_path, "rb") as f:
        return {"image": base64.b64encode(f.read()).decode("ascii")}


def true_label(png_path: str) -> str:
    """The label in a test PNG's name (``<index>-<label>.png``)."""
    return os.path.basename(png_path).rsplit(".", 1)[0].split("-", 1)[1]


def main(root: str, digits_dir: str) -> None:
    pngs = sorted(os.path.join(digits_dir, n) for n in os.listdir(digits_dir) if n.endswith(".png"))
    if not pngs:
        raise SystemExit(f"no test PNGs in {digits_dir}; run build.py first")
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "core.log")
        with open(log_path, "wb") as log:
            print(f"$ pyengine core start --root {root} &", flush=True)
            core = subprocess.Popen([*PYENGINE, "core", "start", "--root", root],
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_ready(root, core, log_path)
                shown = pngs[0]
                event = os.path.join(tmp, "event.json")
                with open(event, "w") as fh:
                    json.dump(event_for(shown), fh)
                cmd = ["invoke", FUNCTION, "--root", root, "--payload", f"@{event}"]
                print(f"$ pyengine {' '.join(cmd)}    # event: base64 of {shown}", flush=True)
                done = subprocess.run([*PYENGINE, *cmd], capture_output=True, text=True)
                print(done.stdout + done.stderr, end="")
                if done.returncode != 0:
                    raise SystemExit(f"pyengine invoke failed with status {done.returncode}")
                answer = json.loads(done.stdout)
                expected = true_label(shown)
                print(f"prediction: {answer['label']} with probability {answer['probability']:.4f}"
                      f" (true label {expected}; top {[t['label'] for t in answer['top']]})")
                if answer["label"] != expected:
                    raise SystemExit(f"the function classified {shown} as {answer['label']}, "
                                     f"not {expected}")
                client = CoreClient.for_root(root, timeout=30)
                # The same digit by its path in the captures volume (granted read-only).
                status, by_path = client.invoke(FUNCTION, {"path": os.path.basename(shown)})
                if status != 200 or by_path["result"]["label"] != expected:
                    raise SystemExit(f"classifying {shown} by its path in the volume failed "
                                     f"({status}): {by_path}")
                print(f"by path in the captures volume ({os.path.basename(shown)}): "
                      f"{by_path['result']['label']} with probability "
                      f"{by_path['result']['probability']:.4f}")
                right = 0
                for png in pngs:
                    status, got = client.invoke(FUNCTION, event_for(png))
                    if status != 200:
                        raise SystemExit(f"invoking {FUNCTION} on {png} failed ({status}): {got}")
                    right += got["result"]["label"] == true_label(png)
                deployed = current(root, cleanup=False)
                assert deployed is not None  # the core started on it
                with open(os.path.join(deployed.resource_path("digits"), "model.json")) as fh:
                    recorded = json.load(fh)["test_accuracy"]
                print(f"test accuracy: {right / len(pngs):.4f} through the deployed function on "
                      f"{len(pngs)} held-out digits as PNGs (recorded at build: {recorded:.4f})")
            finally:
                core.terminate()
                core.wait(timeout=30)
                with open(log_path) as fh:
                    print("--- core log (last 20 lines) ---\n" + "".join(fh.readlines()[-20:]),
                          end="")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python examples/image-classification/invoke.py ROOT TEST_DIGITS_DIR")
    main(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]))
