# SPDX-License-Identifier: Apache-2.0
# 32-bit ARMv7-A Linux, hard float (Raspberry Pi 2/3/4 on a 32-bit OS, BeagleBone, i.MX6, ...)
# with Debian's cross compiler: apt-get install g++-arm-linux-gnueabihf.
# The library is built for the armhf baseline (VFPv3-D16, no NEON) so that one build runs on
# every ARMv7-A board; only csrc/kernels/arm/*_neon.cpp get -mfpu=neon (CMakeLists.txt), and
# they are chosen at run time when getauxval(AT_HWCAP) reports NEON.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7)

set(CMAKE_C_COMPILER "arm-linux-gnueabihf-gcc")
set(CMAKE_CXX_COMPILER "arm-linux-gnueabihf-g++")

set(CMAKE_FIND_ROOT_PATH "/usr/arm-linux-gnueabihf")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(CMAKE_C_FLAGS "-march=armv7-a -mfloat-abi=hard -mfpu=vfpv3-d16")
set(CMAKE_CXX_FLAGS "-march=armv7-a -mfloat-abi=hard -mfpu=vfpv3-d16")

# cache flags
set(CMAKE_C_FLAGS "${CMAKE_C_FLAGS}" CACHE STRING "c flags")
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS}" CACHE STRING "c++ flags")
