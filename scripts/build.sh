#!/usr/bin/env bash
# Builds the native core, the C++ tests and pyengine/_core*.so in place (build/dev).
# Serialized with a lock so that several builds in one tree never run at once.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=${VPY:-.venv/bin/python}
[ -x "$VPY" ] || VPY=python3
pybind11_dir=$("$VPY" -c "import pybind11; print(pybind11.get_cmake_dir())")
cmake_bin=$(dirname "$VPY")/cmake
[ -x "$cmake_bin" ] || cmake_bin=cmake
gen=()
command -v ninja >/dev/null || [ -x "$(dirname "$VPY")/ninja" ] && gen=(-G Ninja)
export PATH="$(cd "$(dirname "$VPY")" && pwd):$PATH"
mkdir -p build
exec 9>build/.lock
flock 9
if [ ! -f build/dev/CMakeCache.txt ]; then
  "$cmake_bin" -S . -B build/dev "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DPYENGINE_PYTHON=ON -DPYENGINE_TESTS=ON -DPYENGINE_INPLACE=ON -DPYENGINE_WERROR=ON \
    -DPython_EXECUTABLE="$(cd "$(dirname "$VPY")" && pwd)/$(basename "$VPY")" \
    -Dpybind11_DIR="$pybind11_dir" "$@"
fi
"$cmake_bin" --build build/dev -j "$(nproc)"
