#!/usr/bin/env bash
# Sets up a fresh machine: a venv in .venv with what pyengine needs to build and run and what
# the main job's demo uses (scripts/main.sh), then builds the native core in place.
#   --dev         also the test and development tools (pytest, hypothesis, moto, ruff, mypy,
#                 matplotlib for bench plots, the MQTT and fleet packages the tests use);
#                 scripts/test.sh passes it.
#   --frameworks  also TensorFlow, MXNet, ONNX and the tflite reader (scripts/install_frameworks.sh).
# The lists mirror pyproject's extras: runtime = dependencies + yaml + examples; --dev = test + dev.
# Idempotent: re-running only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

frameworks=0
dev=0
for arg in "$@"; do
  case "$arg" in
    --frameworks) frameworks=1 ;;
    --dev) dev=1 ;;
    *) echo "usage: scripts/setup.sh [--dev] [--frameworks]" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# numpy < 2: MXNet 1.9.1 needs it, and one environment holds every framework.
"$VPY" -m pip install -q --upgrade "pip>=23"
"$VPY" -m pip install -q "numpy>=1.23,<2" "setuptools<81" wheel "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
# Group files in YAML (the demo's group.yaml).
"$VPY" -m pip install -q "pyyaml>=6"
# The image-classification example (scripts/main.sh trains it): scikit-learn's digits, Pillow to
# read images, and Chainer to train (its sdist builds against this setuptools < 81).
"$VPY" -m pip install -q "scikit-learn>=1.3" "Pillow>=10"
"$VPY" -c "import chainer" 2>/dev/null ||
  "$VPY" -m pip install -q --no-build-isolation "chainer==7.8.1" "numpy>=1.23,<2"
if [ "$dev" = 1 ]; then
  # Tests: S3 (moto's server), MQTT, fleets (Ed25519 signatures), the console in a browser
  # (playwright drives the system's Chromium); lint and type checks; plots.
  "$VPY" -m pip install -q pytest hypothesis boto3 "moto[server]>=5" "paho-mqtt>=2,<3" \
    "cryptography>=42" "playwright>=1.40" ruff mypy matplotlib
  if [ "$(uname -m)" = "x86_64" ]; then
    "$VPY" -m pip install -q atheris || echo "setup: atheris unavailable; the fuzz test will say so" >&2
  fi
  # cuBLAS for the CUDA variant (scripts/build_cuda.sh), only where the CUDA compiler is present.
  if command -v nvcc >/dev/null || ls /usr/local/cuda*/bin/nvcc >/dev/null 2>&1; then
    "$VPY" -m pip install -q "nvidia-cublas==13.0.*" || echo "setup: nvidia-cublas unavailable; the CUDA build will say so" >&2
  fi
fi
if [ "$frameworks" = 1 ]; then
  scripts/install_frameworks.sh "$VPY"
fi

scripts/build.sh

# The in-place build is what the venv imports and what its `pyengine` command runs.
site=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$PWD" > "$site/pyengine-dev.pth"
cat > .venv/bin/pyengine <<PYENGINE
#!$PWD/.venv/bin/python
import sys
from pyengine.cli import main
sys.exit(main())
PYENGINE
chmod +x .venv/bin/pyengine

# The core runs functions as an unprivileged user (nobody) when it runs as root: that user must
# be able to execute the venv's interpreter and import pyengine from this tree, so make the
# directories above them traversable (o+x, no listing).
if [ "$(id -u)" = 0 ]; then
  for dir in "$(dirname "$(readlink -f .venv/bin/python)")" "$PWD"; do
    while [ "$dir" != / ]; do
      if [ -n "$(find "$dir" -maxdepth 0 ! -perm -o=x)" ]; then chmod o+x "$dir"; fi
      dir=$(dirname "$dir")
    done
  done
fi
