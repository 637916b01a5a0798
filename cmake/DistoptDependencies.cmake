# The packages the library's headers need. distoptConfig.cmake repeats each as find_dependency.
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(xtensor REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(ZLIB REQUIRED)  # data/idx.hpp: gzipped IDX files; core/archive.hpp: CRC-32 (Debian: zlib1g-dev)
find_package(nlohmann_json 3 REQUIRED)  # train/metrics.hpp: JSON Lines (Debian: nlohmann-json3-dev)
# Optional: only distopt::download (data/download.hpp) needs these; without them it is not defined.
find_package(CURL)
find_package(LibArchive)
find_package(OpenSSL COMPONENTS Crypto)  # the md5 of the download (Debian: libssl-dev)
# Optional: only distopt::mpi (local/mpi.hpp) needs it.
find_package(MPI COMPONENTS CXX)
