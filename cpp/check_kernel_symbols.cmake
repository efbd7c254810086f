# darcyvae: build-time check of the rule in cpp/darcy_kernels.hpp: the AVX2
# kernel object must define no weak (vague-linkage) symbols. A weak std:: or
# Eigen template instantiated there would be merged by the linker with the
# baseline copy used everywhere else, and could hand AVX2 code to CPUs
# without AVX2. Run by CMakeLists.txt after the object is built:
#   cmake -DNM=<nm> -DOBJECTS=<object files> -P check_kernel_symbols.cmake
if(NOT NM OR NOT OBJECTS)
  message(STATUS "darcyvae: kernel symbol check skipped (no nm or no object)")
  return()
endif()
foreach(obj IN LISTS OBJECTS)
  execute_process(
    COMMAND "${NM}" -C "${obj}"
    OUTPUT_VARIABLE symbols
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(STATUS "darcyvae: kernel symbol check skipped (${NM} failed on ${obj})")
    return()
  endif()
  string(REPLACE "\n" ";" lines "${symbols}")
  set(weak "")
  foreach(line IN LISTS lines)
    # nm lines: [address] TYPE name; W/w/V/v weak, u unique global (also merged).
    if(line MATCHES "^[0-9a-fA-F ]* [WwVvu] (.*)$")
      list(APPEND weak "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  if(weak)
    list(JOIN weak "\n  " text)
    message(FATAL_ERROR "darcyvae: ${obj} defines weak symbols, which the linker may share "
                        "with the baseline build (see cpp/darcy_kernels.hpp):\n  ${text}")
  endif()
endforeach()
