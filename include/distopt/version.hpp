// The library's version: the one place it is written (CMakeLists.txt reads it from here).
#pragma once

#define DISTOPT_VERSION_MAJOR 0
#define DISTOPT_VERSION_MINOR 1
#define DISTOPT_VERSION_PATCH 0

namespace distopt {

/// Semantic version of the headers in use.
struct Version {
  int major, minor, patch;
};
inline constexpr Version version{DISTOPT_VERSION_MAJOR, DISTOPT_VERSION_MINOR, DISTOPT_VERSION_PATCH};

}  // namespace distopt
