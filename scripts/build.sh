#!/usr/bin/env bash
# Builds the native core, the C++ tests and pyengine/_core*.so in place (build/dev).
# Serialized with a lock so that several builds in one tree never run at once.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cmake_env.sh
if [ ! -f build/dev/CMakeCache.txt ]; then
  "$cmake_bin" -S . -B build/dev "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DPYENGINE_PYTHON=ON -DPYENGINE_TESTS=ON -DPYENGINE_INPLACE=ON -DPYENGINE_WERROR=ON \
    -DPython_EXECUTABLE="$VPY_ABS" \
    -Dpybind11_DIR="$pybind11_dir" "$@"
fi
"$cmake_bin" --build build/dev -j "$(nproc)"
