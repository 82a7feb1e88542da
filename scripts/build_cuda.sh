#!/usr/bin/env bash
# Builds the CUDA variant (PYENGINE_CUDA=ON) in build/cuda: pyengine._core and
# libpyengine_cuda.so side by side in build/cuda/, warnings as errors. Compiles on a machine
# without a GPU; needs nvcc (PATH, CUDACXX or /usr/local/cuda*/bin) and cuBLAS (the CUDA toolkit's
# or the nvidia-cublas wheel in the venv). Exits 3 when there is no nvcc.
# Serialized with the same lock as scripts/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
nvcc=${CUDACXX:-$(command -v nvcc || true)}
if [ -z "$nvcc" ]; then
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    [ -x "$d/nvcc" ] && nvcc="$d/nvcc" && break
  done
fi
if [ -z "$nvcc" ]; then
  echo "build_cuda: no nvcc found (PATH, CUDACXX, /usr/local/cuda*/bin); the CUDA variant is not built" >&2
  exit 3
fi
. scripts/cmake_env.sh
cublas_root=$("$VPY" -c "import nvidia.cu13, os; print(list(nvidia.cu13.__path__)[0])" 2>/dev/null || true)
if [ ! -f build/cuda/CMakeCache.txt ]; then
  "$cmake_bin" -S . -B build/cuda "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DPYENGINE_CUDA=ON -DPYENGINE_PYTHON=ON -DPYENGINE_WERROR=ON \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DPYENGINE_CUBLAS_ROOT="$cublas_root" \
    -DPython_EXECUTABLE="$VPY_ABS" \
    -Dpybind11_DIR="$pybind11_dir" "$@"
fi
"$cmake_bin" --build build/cuda -j "$(nproc)"
