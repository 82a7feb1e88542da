#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and run the quick start
# (write a small model, load it, predict, print the engine's info), then build, deploy and run
# the image-classification example (examples/image-classification) from file:// sources in
# ./.demo: a CNN trained on scikit-learn's digits classifies a held-out test digit sent as a PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh  # the runtime and the demo's packages only (no test or dev tools)
.venv/bin/python examples/quickstart.py
.venv/bin/python -m pyengine info

# The image-classification example (examples/image-classification): train a small CNN on
# scikit-learn's digits with Chainer, convert it to .pyem and write its package into
# .demo/packages (with the held-out test digits as PNGs), deploy the group into .demo/models with
# state under .demo/root, and list what is installed.
export PYENGINE_DEMO_DIR="$PWD/.demo"
.venv/bin/python examples/image-classification/build.py "$PYENGINE_DEMO_DIR/packages"
.venv/bin/pyengine deploy examples/image-classification/group.yaml --root "$PYENGINE_DEMO_DIR/root"
.venv/bin/pyengine resources list --root "$PYENGINE_DEMO_DIR/root"

# Run the deployed group on a core (functions confined, as nobody when run as root), invoke its
# function with a held-out test digit as a base64 PNG and by its path in the granted volume of
# test digits, print the prediction, then the accuracy of the deployed function on every test digit.
.venv/bin/python examples/image-classification/invoke.py "$PYENGINE_DEMO_DIR/root" \
  "$PYENGINE_DEMO_DIR/packages/test-digits"
