#!/usr/bin/env bash
# Cross-builds pyengine wheels for ARM Linux on an x86-64 Debian/Ubuntu host, for CPython 3.11.
#
#   scripts/build_wheels_arm.sh [--tests] [--out DIR] [TARGET...]
#
# TARGET: aarch64 (linux_aarch64), armv7l (linux_armv7l, Raspberry Pi 32-bit), jetson
# (linux_aarch64 built with toolchains/jetson.toolchain.cmake: ARMv8.2-A and PYENGINE_CUDA=ON, so
# it needs the CUDA toolkit's aarch64 target files once the CUDA kernels are in the tree).
# Default: aarch64 armv7l. Wheels go to DIR (default dist/), one build tree per target in
# build/arm/TARGET, so a rebuild only compiles what changed.
# --tests also builds the C++ tests in that tree (with -Werror), set up to run under qemu-user
# (ctest in build/arm/TARGET).
#
# scikit-build-core does the build with the target's toolchain file; the target's Python headers
# come from a Debian root (scripts/arm_setup.sh), the extension suffix from SETUPTOOLS_EXT_SUFFIX
# and the platform tag from _PYTHON_HOST_PLATFORM. The building Python must be 3.11 (the tag
# and ABI of the wheel are that interpreter's).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD

VPY=${VPY:-.venv/bin/python}
[ -x "$VPY" ] || VPY=python3
VPY=$(cd "$(dirname "$VPY")" && pwd)/$(basename "$VPY")
cache=${PYENGINE_ARM_CACHE:-$HOME/.cache/pyengine-arm}
export PYENGINE_ARM_CACHE=$cache VPY

tests=OFF
out=dist
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) tests=ON ;;
    --out) out=$2; shift ;;
    aarch64|armv7l|jetson) targets+=("$1") ;;
    *) echo "build_wheels_arm.sh: unknown argument '$1' (expected --tests, --out DIR, aarch64, armv7l or jetson)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7l)

pyver=$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$pyver" != 3.11 ]; then
  echo "build_wheels_arm.sh: $VPY is Python $pyver; the ARM wheels are for CPython 3.11, so build them with a 3.11 interpreter (VPY=...)" >&2
  exit 2
fi
"$VPY" -c 'import scikit_build_core, pybind11' 2>/dev/null || {
  echo "build_wheels_arm.sh: $VPY lacks scikit-build-core or pybind11 (run scripts/setup.sh)" >&2; exit 2; }
pybind11_dir=$("$VPY" -c 'import pybind11; print(pybind11.get_cmake_dir())')
export PATH="$(dirname "$VPY"):$PATH"  # cmake and ninja from the venv
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}

debarchs=()
for t in "${targets[@]}"; do
  case "$t" in aarch64|jetson) debarchs+=(arm64) ;; armv7l) debarchs+=(armhf) ;; esac
done
scripts/arm_setup.sh sysroot $(printf '%s\n' "${debarchs[@]}" | sort -u)

mkdir -p "$out"
for t in "${targets[@]}"; do
  case "$t" in
    aarch64) debarch=arm64 triple=aarch64-linux-gnu tc=aarch64-linux-gnu plat=linux-aarch64 qemu=qemu-aarch64-static ;;
    jetson)  debarch=arm64 triple=aarch64-linux-gnu tc=jetson plat=linux-aarch64 qemu=qemu-aarch64-static ;;
    armv7l)  debarch=armhf triple=arm-linux-gnueabihf tc=arm-linux-gnueabihf plat=linux-armv7l qemu=qemu-arm-static ;;
  esac
  soabi=cpython-311-$triple
  echo "build_wheels_arm.sh: $t -> $out (build/arm/$t)" >&2
  # Each target's wheel lands in its own folder first: aarch64 and jetson share a file name.
  tmp_out=build/arm/$t-wheel
  rm -rf "$tmp_out"
  _PYTHON_HOST_PLATFORM=$plat SETUPTOOLS_EXT_SUFFIX=.$soabi.so \
  "$VPY" -m pip wheel . --no-deps --no-build-isolation -q -w "$tmp_out" \
    -C build-dir="build/arm/$t" \
    -C cmake.toolchain-file="$root_dir/toolchains/$tc.toolchain.cmake" \
    -C cmake.python-hints=false \
    -C cmake.define.Python_EXECUTABLE="$VPY" \
    -C cmake.define.Python_INCLUDE_DIR="$cache/python-$debarch/include/python3.11" \
    -C cmake.define.Python_SOABI="$soabi" \
    -C cmake.define.pybind11_DIR="$pybind11_dir" \
    -C cmake.define.PYENGINE_TESTS="$tests" \
    -C cmake.define.PYENGINE_WERROR="${PYENGINE_WERROR:-$tests}" \
    -C cmake.define.CMAKE_CROSSCOMPILING_EMULATOR="$qemu;-L;$cache/sysroot-$debarch"
  whl=$(ls "$tmp_out"/*.whl)
  case "$whl" in
    *-cp311-cp311-${plat/-/_}.whl) ;;
    *) echo "build_wheels_arm.sh: $whl does not carry the tag cp311-cp311-${plat/-/_}" >&2; exit 1 ;;
  esac
  if [ "$t" = jetson ]; then
    mkdir -p "$out/jetson"
    mv -f "$whl" "$out/jetson/"
    echo "$out/jetson/$(basename "$whl")"
  else
    mv -f "$whl" "$out/"
    echo "$out/$(basename "$whl")"
  fi
done
