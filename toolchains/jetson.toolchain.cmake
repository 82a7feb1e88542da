# SPDX-License-Identifier: Apache-2.0
# NVIDIA Jetson Xavier / Orin (JetPack 5 and 6): aarch64 with the CUDA kernels on, with Debian's
# cross compiler (apt-get install g++-aarch64-linux-gnu) as the host compiler of nvcc.
# CUDA needs the toolkit's aarch64 target files (JetPack's cuda-cross-aarch64 package puts them
# in /usr/local/cuda/targets/aarch64-linux); building on the Jetson itself needs no toolchain file.
# Jetson Nano and TX2 (ARMv8-A, JetPack 4) use aarch64-linux-gnu.toolchain.cmake instead.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER "aarch64-linux-gnu-gcc")
set(CMAKE_CXX_COMPILER "aarch64-linux-gnu-g++")
set(CMAKE_CUDA_HOST_COMPILER "aarch64-linux-gnu-g++")

set(CMAKE_FIND_ROOT_PATH "/usr/aarch64-linux-gnu" "/usr/local/cuda/targets/aarch64-linux")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Carmel (Xavier) and Cortex-A78AE (Orin) are ARMv8.2-A.
set(CMAKE_C_FLAGS "-march=armv8.2-a")
set(CMAKE_CXX_FLAGS "-march=armv8.2-a")

# Xavier is sm_72, Orin sm_87.
set(CMAKE_CUDA_ARCHITECTURES "72;87" CACHE STRING "cuda architectures")
set(PYENGINE_CUDA ON CACHE BOOL "pyengine: build CUDA kernels")

# cache flags
set(CMAKE_C_FLAGS "${CMAKE_C_FLAGS}" CACHE STRING "c flags")
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS}" CACHE STRING "c++ flags")
