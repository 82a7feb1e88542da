"""Runs inside an emulated ARM Python for tests/test_arm.py (no pytest there).

Usage: python arm_predict.py WORKDIR. WORKDIR/cases.json lists {"name", "model", "input"}; for
every kernel variant this build and CPU offer, each model predicts on its input and the
outputs go to WORKDIR/out-<variant>-<name>.npy. What the engine reports goes to
WORKDIR/arm_info.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys

import numpy as np

import pyengine
from pyengine import _core


def main(work: str) -> None:
    with open(os.path.join(work, "cases.json")) as f:
        cases = json.load(f)
    info = pyengine.info()
    info["machine"] = platform.machine()
    info["pyengine_file"] = pyengine.__file__
    info["numpy"] = np.__version__
    with open(os.path.join(work, "arm_info.json"), "w") as f:
        json.dump(info, f)
    models = {c["name"]: pyengine.load(c["model"]) for c in cases}
    for variant in info["kernels_available"]:
        _core.set_isa(variant)
        for c in cases:
            y = models[c["name"]].predict(np.load(c["input"]))
            np.save(os.path.join(work, f"out-{variant}-{c['name']}.npy"), y)


if __name__ == "__main__":
    main(sys.argv[1])
