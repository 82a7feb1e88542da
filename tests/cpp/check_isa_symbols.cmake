# SPDX-License-Identifier: Apache-2.0
# Fails when an ISA-specific object file (*_avx2, *_avx512, *_neon) defines a weak symbol:
# weak symbols are inline/template code the linker may share with baseline code, which would
# then run AVX or NEON instructions on CPUs without them.
# Usage: cmake -DNM=<nm> -DOBJECTS=<a.o;b.o;...> -P check_isa_symbols.cmake
set(failed "")
set(checked 0)
foreach(obj IN LISTS OBJECTS)
  if(NOT obj MATCHES "_(avx2|avx512|neon)\\.cpp\\.o(bj)?$")
    continue()
  endif()
  math(EXPR checked "${checked} + 1")
  execute_process(COMMAND ${NM} -C ${obj} OUTPUT_VARIABLE out RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} failed on ${obj}")
  endif()
  string(REGEX MATCHALL "[^\n]* W [^\n]*" weak "${out}")
  if(weak)
    string(REPLACE ";" "\n  " weak "${weak}")
    string(APPEND failed "${obj}:\n  ${weak}\n")
  endif()
endforeach()
if(failed)
  message(FATAL_ERROR "ISA-specific objects define weak symbols (move that code to baseline files):\n${failed}")
endif()
message(STATUS "checked ${checked} ISA-specific object files: no weak symbols")
