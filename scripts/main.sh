#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and run the quick start
# (write a small model, load it, predict, print the engine's info).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python examples/quickstart.py
.venv/bin/python -m pyengine info
