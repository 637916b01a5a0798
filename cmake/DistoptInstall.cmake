# Install rules: headers, the exported target distopt::distopt, and a relocatable package config.
include(CMakePackageConfigHelpers)

set(DISTOPT_CMAKE_DIR ${CMAKE_INSTALL_DATADIR}/cmake/distopt)

install(DIRECTORY include/distopt DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS distopt EXPORT distoptTargets)
install(EXPORT distoptTargets NAMESPACE distopt:: DESTINATION ${DISTOPT_CMAKE_DIR})
# distopt::download in an export set of its own: the config loads it only when the consumer finds
# libcurl and libarchive, so a consumer without them still gets distopt::distopt.
if(TARGET distopt_download)
  install(TARGETS distopt_download EXPORT distoptDownloadTargets)
  install(EXPORT distoptDownloadTargets NAMESPACE distopt:: DESTINATION ${DISTOPT_CMAKE_DIR})
endif()

# distopt::mpi likewise, loaded only when the consumer finds MPI.
if(TARGET distopt_mpi)
  install(TARGETS distopt_mpi EXPORT distoptMpiTargets)
  install(EXPORT distoptMpiTargets NAMESPACE distopt:: DESTINATION ${DISTOPT_CMAKE_DIR})
endif()

configure_package_config_file(cmake/distoptConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/distoptConfig.cmake
  INSTALL_DESTINATION ${DISTOPT_CMAKE_DIR})
# Header-only: the same files serve 32- and 64-bit consumers.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/distoptConfigVersion.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/distoptConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/distoptConfigVersion.cmake
  DESTINATION ${DISTOPT_CMAKE_DIR})
