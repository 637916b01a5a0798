# LibTorch reference for the benchmarks. Included by benchmarks/CMakeLists.txt right after
# find_package(benchmark), so that the function below exists before any benchmark is declared.
#
#   DISTOPT_BENCH_TORCH     option, ON by default when distopt is the top-level project: look for
#                           LibTorch (Debian: libtorch-dev, /usr/lib/x86_64-linux-gnu/cmake/Torch)
#   DISTOPT_HAVE_TORCH      TRUE when it was found and distopt_torch_reference is built
#   distopt_link_torch_reference(<target>)
#                           links <target> to distopt_torch_reference and defines
#                           DISTOPT_HAVE_TORCH=1 for it; does nothing when Torch is absent, so a
#                           benchmark guards its LibTorch cases with #if DISTOPT_HAVE_TORCH.
option(DISTOPT_BENCH_TORCH "Time LibTorch beside distopt in the benchmarks, if LibTorch is installed"
  ${PROJECT_IS_TOP_LEVEL})

set(DISTOPT_HAVE_TORCH FALSE)
if(DISTOPT_BENCH_TORCH)
  find_package(Torch QUIET)
  if(Torch_FOUND)
    set(DISTOPT_HAVE_TORCH TRUE)
    add_subdirectory(${CMAKE_CURRENT_LIST_DIR} ${CMAKE_CURRENT_BINARY_DIR}/torch_reference)
    message(STATUS "distopt: LibTorch reference benchmarks enabled (Torch in ${Torch_DIR})")
  else()
    message(STATUS "distopt: LibTorch not found, benchmarks without the LibTorch reference "
                   "(install libtorch-dev: scripts/setup-deps --tools)")
  endif()
endif()

function(distopt_link_torch_reference target)
  if(TARGET distopt_torch_reference)
    target_link_libraries(${target} PRIVATE distopt_torch_reference)
    target_compile_definitions(${target} PRIVATE DISTOPT_HAVE_TORCH=1)
  endif()
endfunction()
