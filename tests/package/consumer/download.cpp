// A consumer of distopt::download (libcurl, libarchive, OpenSSL).
#include <distopt/data/download.hpp>

#include <cstdio>
#include <stdexcept>

int main() {
  // Options are checked before any file or network access; linking needs all three libraries.
  bool refused = false;
  try {
    (void)distopt::data::download_cifar100("unused", {.md5 = "not an md5", .progress = nullptr});
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  std::printf("%s (distopt::download)\n", refused ? "consumer ok" : "consumer FAILED");
  return refused ? 0 : 1;
}
