# Install rules: headers, the exported targets (a set per component), and a relocatable package config.
include(CMakePackageConfigHelpers)

set(DISTOPT_CMAKE_DIR ${CMAKE_INSTALL_DATADIR}/cmake/distopt)

install(DIRECTORY include/distopt DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS distopt EXPORT distoptTargets)
install(EXPORT distoptTargets NAMESPACE distopt:: DESTINATION ${DISTOPT_CMAKE_DIR})
# distopt::data and distopt::train in export sets of their own: the config loads each only when the
# consumer finds its packages, so a consumer with Eigen alone still gets distopt::distopt.
install(TARGETS distopt_data EXPORT distoptDataTargets)
install(EXPORT distoptDataTargets NAMESPACE distopt:: DESTINATION ${DISTOPT_CMAKE_DIR})
install(TARGETS distopt_train EXPORT distoptTrainTargets)
install(EXPORT distoptTrainTargets NAMESPACE distopt:: DESTINATION ${DISTOPT_CMAKE_DIR})
# distopt::download likewise, loaded only when the consumer finds libcurl, libarchive and OpenSSL.
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
