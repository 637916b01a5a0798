// MD5 (RFC 1321), streaming, for checking downloaded archives against their published digest.
//
// MD5 is broken as a defence against an attacker who chooses the file; it is used here because it
// is the digest the dataset's authors publish, and it catches a truncated or damaged download.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "distopt/core/error.hpp"

namespace distopt::data::detail {

/// Incremental MD5 (RFC 1321): feed the bytes in pieces of any size with `update`, then read the
/// digest with `digest` or `hex_digest`; the pieces may be cut anywhere.
class Md5 {
 public:
  /// Adds `bytes` to the message.
  void update(std::span<const std::uint8_t> bytes) noexcept {
    std::size_t used = static_cast<std::size_t>(length_ % 64);
    length_ += bytes.size();
    if (used != 0) {
      const std::size_t take = std::min(bytes.size(), 64 - used);
      std::memcpy(block_.data() + used, bytes.data(), take);
      bytes = bytes.subspan(take);
      used += take;
      if (used < 64) return;
      transform(block_.data());
    }
    for (; bytes.size() >= 64; bytes = bytes.subspan(64)) transform(bytes.data());
    if (!bytes.empty()) std::memcpy(block_.data(), bytes.data(), bytes.size());
  }

  /// Adds the bytes of `text`.
  void update(std::string_view text) noexcept {
    update(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  }

  /// The 16-byte digest of everything added so far (the object can keep growing afterwards).
  [[nodiscard]] std::array<std::uint8_t, 16> digest() const noexcept {
    Md5 copy = *this;
    // RFC 1321 3.1-3.2: a 1 bit, zeros up to 56 mod 64 bytes, then the bit length, little-endian.
    const std::uint64_t bits = length_ * 8;
    std::array<std::uint8_t, 72> pad{};
    pad[0] = 0x80;
    const std::size_t used = static_cast<std::size_t>(length_ % 64);
    const std::size_t zeros = used < 56 ? 56 - used : 120 - used;
    for (std::size_t i = 0; i < 8; ++i) pad[zeros + i] = static_cast<std::uint8_t>(bits >> (8 * i));
    copy.update(std::span<const std::uint8_t>(pad.data(), zeros + 8));
    std::array<std::uint8_t, 16> out{};
    for (std::size_t i = 0; i < 4; ++i)
      for (std::size_t k = 0; k < 4; ++k) out[4 * i + k] = static_cast<std::uint8_t>(copy.state_[i] >> (8 * k));
    return out;
  }

  /// The digest as 32 lowercase hexadecimal digits, the form `md5sum` prints.
  [[nodiscard]] std::string hex_digest() const {
    constexpr std::string_view alphabet = "0123456789abcdef";
    std::string out;
    for (const std::uint8_t byte : digest()) {
      out += alphabet[byte >> 4];
      out += alphabet[byte & 0xFu];
    }
    return out;
  }

 private:
  static constexpr std::uint32_t rotl(std::uint32_t x, unsigned s) noexcept { return (x << s) | (x >> (32 - s)); }

  // One 64-byte block: RFC 1321 section 3.4, its 64 steps as one loop over the table of constants
  // T[i] = floor(2^32 * |sin(i + 1)|) and the per-round shifts.
  void transform(const std::uint8_t* block) noexcept {
    static constexpr std::array<std::uint32_t, 64> t{
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
        0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
        0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
        0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
        0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
        0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
        0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
    static constexpr std::array<unsigned, 16> shift{7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21};
    std::array<std::uint32_t, 16> x{};
    for (std::size_t i = 0; i < 16; ++i)
      x[i] = std::uint32_t{block[4 * i]} | std::uint32_t{block[4 * i + 1]} << 8 |
             std::uint32_t{block[4 * i + 2]} << 16 | std::uint32_t{block[4 * i + 3]} << 24;
    std::uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    for (std::size_t i = 0; i < 64; ++i) {
      std::uint32_t f = 0;
      std::size_t g = 0;
      switch (i / 16) {
        case 0: f = (b & c) | (~b & d); g = i; break;
        case 1: f = (b & d) | (c & ~d); g = (5 * i + 1) % 16; break;
        case 2: f = b ^ c ^ d; g = (3 * i + 5) % 16; break;
        default: f = c ^ (b | ~d); g = (7 * i) % 16; break;
      }
      const std::uint32_t rotated = b + rotl(a + f + x[g] + t[i], shift[(i / 16) * 4 + i % 4]);
      a = d;
      d = c;
      c = b;
      b = rotated;
    }
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
  }

  std::array<std::uint32_t, 4> state_{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
  std::array<std::uint8_t, 64> block_{};
  std::uint64_t length_ = 0;  // bytes added so far
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
