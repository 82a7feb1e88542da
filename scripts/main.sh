#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, run the quick start (write a small model,
# load it, predict, print the engine's info), then deploy the example group and invoke its
# function through a running core, printing the prediction.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python examples/quickstart.py
.venv/bin/python -m pyengine info
.venv/bin/python examples/edge_group.py
