// MD5 through OpenSSL's EVP digest interface, for checking downloaded archives against their
// published digest (the download component links OpenSSL::Crypto; Debian: libssl-dev).
//
// MD5 is broken as a defence against an attacker who chooses the file; it is used here because it
// is the digest the dataset's authors publish, and it catches a truncated or damaged download.
#pragma once

#include <array>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "distopt/core/error.hpp"
#include "distopt/core/io.hpp"

namespace distopt::data::detail {

/// Incremental MD5 (RFC 1321): feed the bytes in pieces of any size with `update`, then read the
/// digest with `digest` or `hex_digest`; the pieces may be cut anywhere. std::runtime_error if
/// OpenSSL cannot provide the digest (a FIPS-only configuration refuses MD5).
class Md5 {
 public:
  Md5() : context_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    require<std::runtime_error>(context_ != nullptr && EVP_DigestInit_ex(context_.get(), EVP_md5(), nullptr) == 1,
                                "md5: OpenSSL cannot start an MD5 digest");
  }
  Md5(const Md5& other) : context_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    require<std::runtime_error>(context_ != nullptr && EVP_MD_CTX_copy_ex(context_.get(), other.context_.get()) == 1,
                                "md5: OpenSSL cannot copy an MD5 digest");
  }
  Md5& operator=(const Md5&) = delete;

  /// Adds `bytes` to the message.
  void update(std::span<const std::uint8_t> bytes) {
    if (bytes.empty()) return;
    require<std::runtime_error>(EVP_DigestUpdate(context_.get(), bytes.data(), bytes.size()) == 1, "md5: OpenSSL failed");
  }
  /// Adds the bytes of `text`.
  void update(std::string_view text) { update(io::as_bytes(text)); }

  /// The 16-byte digest of everything added so far (the object can keep growing afterwards).
  [[nodiscard]] std::array<std::uint8_t, 16> digest() const {
    Md5 copy = *this;
    std::array<std::uint8_t, 16> out{};
    unsigned int size = 0;
    require<std::runtime_error>(EVP_DigestFinal_ex(copy.context_.get(), out.data(), &size) == 1 && size == out.size(),
                                "md5: OpenSSL failed");
    return out;
  }

  /// The digest as 32 lowercase hexadecimal digits, the form `md5sum` prints.
  [[nodiscard]] std::string hex_digest() const {
    std::string out;
    for (const std::uint8_t byte : digest()) out += io::hex(byte, 2);
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_;
};

/// MD5 of `bytes` as 32 lowercase hexadecimal digits.
[[nodiscard]] inline std::string md5_hex(std::span<const std::uint8_t> bytes) {
  Md5 md5;
  md5.update(bytes);
  return md5.hex_digest();
}

/// MD5 of the file at `path` as 32 lowercase hexadecimal digits, read 1 MiB at a time so any
/// size fits in memory. std::runtime_error naming the file and the OS error if it cannot be read.
[[nodiscard]] inline std::string md5_file(const std::filesystem::path& path) {
  const auto os_error = [&](std::string_view what, int err) {
    fail<std::runtime_error>("md5: ", what, " '", path.string(), "': ", std::generic_category().message(err));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) os_error("cannot open", errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  Md5 md5;
  std::vector<std::uint8_t> buffer(std::size_t{1} << 20);
  for (;;) {
    const ::ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) os_error("cannot read", errno);
    if (got == 0) break;
    md5.update(std::span<const std::uint8_t>(buffer.data(), static_cast<std::size_t>(got)));
  }
  return md5.hex_digest();
}

}  // namespace distopt::data::detail
