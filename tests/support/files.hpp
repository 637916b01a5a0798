// File helpers the tests share: a private temporary directory and raw byte I/O.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "distopt/core/error.hpp"

namespace test_support {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

/// A directory of its own under the system temp directory, unique per test run (label, pid and
/// random bits), removed with everything in it at the end of the test case.
class TempDir {
 public:
  explicit TempDir(std::string_view label = "test") {
    std::random_device entropy;
    path_ = fs::temp_directory_path() / distopt::message("distopt-", label, "-", ::getpid(), "-", entropy(), "-", entropy());
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  [[nodiscard]] const fs::path& path() const { return path_; }
  [[nodiscard]] fs::path operator/(std::string_view name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline Bytes read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const fs::path& path, std::span<const std::uint8_t> bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

}  // namespace test_support
