#!/usr/bin/env bash
# What cross-building pyengine for ARM and running it under emulation needs on a Debian/Ubuntu
# x86-64 host. Idempotent and serialized (a lock in the cache), so tests can call it every run.
#
#   scripts/arm_setup.sh tools            cross compilers, qemu-user, debootstrap (apt-get, once)
#   scripts/arm_setup.sh sysroot ARCH...  a Debian bookworm root per ARCH (arm64 | armhf) with
#                                         Python 3.11, its headers and, for the emulated tests,
#                                         numpy (arm64: numpy's manylinux aarch64 wheel from PyPI;
#                                         armhf: Debian's python3-numpy, as PyPI has no armv7 wheel)
#
# The roots are made with `debootstrap --foreign` (download and unpack only, nothing runs as the
# target) and live in $PYENGINE_ARM_CACHE (default ~/.cache/pyengine-arm):
#   sysroot-ARCH/            the root: qemu-ARCH -L sysroot-ARCH sysroot-ARCH/usr/bin/python3.11
#   python-ARCH/include/     Python headers with the ARCH pyconfig.h, for cross-compiling _core
#   site-ARCH/               extra packages for the emulated Python (numpy on arm64)
# Prints "arm_setup: unavailable: <reason>" and exits 3 when the tools cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${PYENGINE_ARM_CACHE:-$HOME/.cache/pyengine-arm}
mirror=${PYENGINE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
VPY=${VPY:-.venv/bin/python}
[ -x "$VPY" ] || VPY=python3

unavailable() { echo "arm_setup: unavailable: $*" >&2; exit 3; }

have_tools() {
  command -v aarch64-linux-gnu-g++ >/dev/null && command -v arm-linux-gnueabihf-g++ >/dev/null &&
    command -v qemu-aarch64-static >/dev/null && command -v qemu-arm-static >/dev/null &&
    command -v debootstrap >/dev/null
}

tools() {
  have_tools && return 0
  local pkgs="g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user-static debootstrap"
  command -v apt-get >/dev/null || unavailable "no apt-get to install $pkgs (install them by hand)"
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || unavailable "not root and no password-less sudo to install $pkgs"
    sudo=(sudo -n)
  fi
  echo "arm_setup: installing $pkgs" >&2
  "${sudo[@]}" apt-get update -q >&2 || unavailable "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 $pkgs >&2 || unavailable "apt-get install $pkgs failed"
  have_tools || unavailable "$pkgs installed but the commands are still missing"
}

# Unpacks a .deb into the root, keeping the root's merged-/usr symlinks (lib -> usr/lib).
unpack() { dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2"; }

sysroot() {
  local arch=$1 triple pkgs
  case "$arch" in
    arm64) triple=aarch64-linux-gnu; pkgs=python3.11,libpython3.11-dev ;;
    armhf) triple=arm-linux-gnueabihf; pkgs=python3.11,libpython3.11-dev,python3-numpy ;;
    *) echo "arm_setup: unknown architecture '$arch' (expected arm64 or armhf)" >&2; exit 2 ;;
  esac
  local root=$cache/sysroot-$arch stamp="$suite $pkgs v2"
  if [ ! -f "$root/.pyengine-ready" ] || [ "$(cat "$root/.pyengine-ready")" != "$stamp" ]; then
    [ "$(id -u)" = 0 ] || unavailable "debootstrap needs root to make the $arch root in $root" \
      "(run 'scripts/arm_setup.sh sysroot $arch' once as root, PYENGINE_ARM_CACHE naming a shared directory)"
    echo "arm_setup: making the $arch root in $root (debootstrap, about 50 MB)" >&2
    rm -rf "$root" "$cache/python-$arch"
    debootstrap --foreign --variant=minbase --arch="$arch" --include="$pkgs" "$suite" "$root" \
      "$mirror" > "$cache/debootstrap-$arch.log" 2>&1 ||
      unavailable "debootstrap of $arch from $mirror failed (see $cache/debootstrap-$arch.log)"
    # --foreign unpacks only the essential set; unpack the rest (Python and its libraries) too.
    local p deb
    for p in $(cat "$root/debootstrap/base"); do
      for deb in "$root"/var/cache/apt/archives/"${p}"_*.deb; do
        [ -f "$deb" ] && unpack "$deb" "$root"
      done
    done
    rm -rf "$root"/var/cache/apt/archives/*.deb
    # Maintainer scripts never ran: make the update-alternatives links numpy needs (libblas.so.3).
    local lib
    for lib in "$root"/usr/lib/"$triple"/{blas,lapack}/lib*.so.3; do
      [ -f "$lib" ] && ln -sf "${lib#"$root"/usr/lib/"$triple"/}" "$root/usr/lib/$triple/$(basename "$lib")"
    done
    [ -x "$root/usr/bin/python3.11" ] || unavailable "the $arch root has no python3.11"
    echo "$stamp" > "$root/.pyengine-ready"
  fi
  # Headers for cross-compiling: Debian's pyconfig.h picks the architecture with #include
  # <TRIPLE/python3.11/pyconfig.h>; put that one in place so only this directory is needed.
  local inc=$cache/python-$arch/include/python3.11
  if [ ! -f "$inc/pyconfig.h" ]; then
    rm -rf "$cache/python-$arch"
    mkdir -p "$(dirname "$inc")"
    cp -r "$root/usr/include/python3.11" "$inc"
    cp "$root/usr/include/$triple/python3.11/pyconfig.h" "$inc/pyconfig.h"
  fi
  if [ "$arch" = arm64 ] && [ ! -d "$cache/site-arm64/numpy" ]; then
    echo "arm_setup: installing numpy's aarch64 wheel into $cache/site-arm64" >&2
    "$VPY" -m pip install -q --target "$cache/site-arm64" --platform manylinux2014_aarch64 \
      --only-binary=:all: --python-version 3.11 --implementation cp "numpy>=1.23,<2" >&2 ||
      unavailable "pip could not fetch numpy's manylinux2014_aarch64 wheel"
  fi
}

[ $# -ge 1 ] || { echo "usage: scripts/arm_setup.sh tools | sysroot ARCH..." >&2; exit 2; }
cmd=$1
shift
mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8
case "$cmd" in
  tools) tools ;;
  sysroot)
    tools
    [ $# -ge 1 ] || { echo "usage: scripts/arm_setup.sh sysroot arm64|armhf..." >&2; exit 2; }
    for a in "$@"; do sysroot "$a"; done
    ;;
  *) echo "usage: scripts/arm_setup.sh tools | sysroot ARCH..." >&2; exit 2 ;;
esac
