#!/usr/bin/env bash
# Installs every framework backend into one environment: TensorFlow (CPU), MXNet, Chainer, ONNX
# and onnxruntime, the tflite flatbuffer reader, all on numpy 1.26 (MXNet 1.9.1 needs numpy < 2).
# Usage: scripts/install_frameworks.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=${1:-.venv/bin/python}
pin=("numpy>=1.26,<2")
# Chainer ships only an sdist whose setup.py imports pkg_resources: build it against the
# environment's setuptools (< 81 still has pkg_resources) instead of an isolated newer one.
"$VPY" -m pip install -q "setuptools<81" wheel "${pin[@]}"
"$VPY" -m pip install -q --no-build-isolation "chainer==7.8.1" "${pin[@]}"
"$VPY" -m pip install -q "tensorflow-cpu==2.21.*" "mxnet==1.9.1" "onnx>=1.14" "onnxruntime>=1.16" \
  "tflite>=2.18" "${pin[@]}"
"$VPY" - <<'PY'
import numpy
print("frameworks: numpy", numpy.__version__)
PY
