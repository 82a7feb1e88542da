# Sourced by the build scripts: the venv's Python ($VPY, $VPY_ABS), its cmake ($cmake_bin) and
# Ninja ($gen) when present, pybind11's CMake dir, and the build lock (fd 9) so that several
# builds in one tree never run at once. Expects to run from the repository root.
VPY=${VPY:-.venv/bin/python}
[ -x "$VPY" ] || VPY=python3
VPY_ABS="$(cd "$(dirname "$VPY")" && pwd)/$(basename "$VPY")"
pybind11_dir=$("$VPY" -c "import pybind11; print(pybind11.get_cmake_dir())")
cmake_bin=$(dirname "$VPY")/cmake
[ -x "$cmake_bin" ] || cmake_bin=cmake
gen=()
command -v ninja >/dev/null || [ -x "$(dirname "$VPY")/ninja" ] && gen=(-G Ninja)
export PATH="$(cd "$(dirname "$VPY")" && pwd):$PATH"
mkdir -p build
exec 9>build/.lock
flock 9
