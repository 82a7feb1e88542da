#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and run the quick start
# (write a small model, load it, predict, print the engine's info), then deploy the example
# group (examples/group) from file:// sources into ./.demo, list what is installed, then run
# it on a core and invoke its function, printing the prediction.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python examples/quickstart.py
.venv/bin/python -m pyengine info

# Deploy the example group: its model package is written into .demo/packages, installed into
# .demo/models/digits (a link to a complete version) with state under .demo/root.
export PYENGINE_DEMO_DIR="$PWD/.demo"
.venv/bin/python examples/group/make_package.py "$PYENGINE_DEMO_DIR/packages/digits.tar.gz"
.venv/bin/pyengine deploy examples/group/group.yaml --root "$PYENGINE_DEMO_DIR/root"
.venv/bin/pyengine resources list --root "$PYENGINE_DEMO_DIR/root"

# Run the deployed group on a core (functions confined, as nobody when run as root) and invoke
# its function over the core's API, printing the prediction.
.venv/bin/python examples/invoke_demo.py "$PYENGINE_DEMO_DIR/root"
