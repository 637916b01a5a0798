# Runs as `cmake -P`: install, configure the consumer against the install only, build, run.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "step failed (${code}): ${ARGN}\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

step(${CMAKE_COMMAND} --install ${DISTOPT_BINARY_DIR} --prefix ${prefix})
if(NOT EXISTS ${prefix}/include/distopt/distopt.hpp OR NOT EXISTS ${prefix}/share/cmake/distopt/distoptConfigVersion.cmake)
  message(FATAL_ERROR "install did not place the headers and package files under ${prefix}")
endif()

# No registry, no source tree: the consumer may only see the installed prefix.
step(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/build
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DEXPECTED_PREFIX=${prefix} -DEXPECT_DOWNLOAD=${EXPECT_DOWNLOAD}
  -DEXAMPLES_DIR=${EXAMPLES_DIR} -DTABLES_DIR=${TABLES_DIR})
step(${CMAKE_COMMAND} --build ${WORK_DIR}/build --parallel 2)
set(consumers consumer_core consumer_data consumer_train consumer_own_mlp consumer_sequential_cnn consumer_regression
  consumer_warnings_default consumer_warnings_native)
if(EXPECT_DOWNLOAD)
  list(APPEND consumers consumer_download)
endif()
foreach(consumer IN LISTS consumers)
  step(${WORK_DIR}/build/${consumer})
  message(STATUS "${consumer} said: ${step_output}")
  if(NOT step_output MATCHES "consumer ok")
    message(FATAL_ERROR "${consumer} did not report success: ${step_output}")
  endif()
endforeach()
