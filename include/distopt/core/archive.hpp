// Named arrays saved as a NumPy .npz file: the unit of optimizer state, checkpoints and caches.
//
// An .npz file is a ZIP archive of .npy members, one per array. Writing that format rather than
// one of our own means a NumPy user reads our files with `np.load("state.npz")["exp_avg"]`, and
// arrays NumPy wrote (np.savez) load here. Only what NumPy needs is implemented: stored
// (uncompressed) members, little-endian numbers, C order.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <zlib.h>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/io.hpp"

namespace distopt {

// Arrays are copied to and from disk as raw bytes; a big-endian host would need byte swapping.
static_assert(std::endian::native == std::endian::little,
              "distopt::Archive writes little-endian .npy data and assumes a little-endian host");

namespace detail::npz {

template <class T>
struct Dtype;  // undefined: T cannot be stored in an Archive
template <>
struct Dtype<float> {
  static constexpr std::string_view descr = "<f4";
};
template <>
struct Dtype<double> {
  static constexpr std::string_view descr = "<f8";
};
template <>
struct Dtype<std::int32_t> {
  static constexpr std::string_view descr = "<i4";
};
template <>
struct Dtype<std::int64_t> {
  static constexpr std::string_view descr = "<i8";
};
template <>
struct Dtype<std::uint8_t> {
  static constexpr std::string_view descr = "|u1";
};
template <>
struct Dtype<std::uint32_t> {
  static constexpr std::string_view descr = "<u4";
};
template <>
struct Dtype<std::uint64_t> {
  static constexpr std::string_view descr = "<u8";
};

/// Every dtype an Archive holds, spelled as NumPy's `dtype.str`; the last digit is the item size.
inline constexpr std::array<std::string_view, 7> supported_dtypes{"<f4", "<f8", "<i4", "<i8",
                                                                  "|u1", "<u4", "<u8"};

[[nodiscard]] constexpr std::size_t item_size(std::string_view descr) noexcept {
  return static_cast<std::size_t>(descr.back() - '0');
}

/// NumPy before 2.0 refuses arrays of more dimensions (NPY_MAXDIMS).
inline constexpr std::size_t max_rank = 32;

/// The elements of an array of `shape` (non-negative extents), or nothing when the array would
/// not fit in memory: more than 2^61 elements, so that its bytes fit a 64-bit size at any item
/// size. One rule for saving and loading, so what one accepts the other does (zero extents first:
/// an array with one is empty whatever its other extents).
[[nodiscard]] inline std::optional<std::uint64_t> element_count(std::span<const std::ptrdiff_t> shape) {
  for (const std::ptrdiff_t extent : shape)
    if (extent == 0) return 0;
  std::uint64_t count = 1;
  for (const std::ptrdiff_t extent : shape) {
    const auto e = static_cast<std::uint64_t>(extent);
    if (count > (std::uint64_t{1} << 61) / e) return std::nullopt;
    count *= e;
  }
  return count;
}

/// CRC-32 of ZIP (IEEE 802.3) of `bytes`, continuing from `crc` (the CRC of the bytes before
/// them; 0 to start), by zlib. (zlib reads a null buffer as "start again": an empty span, whose
/// data may be null, leaves the CRC as it is.)
[[nodiscard]] inline std::uint32_t crc32(std::span<const std::uint8_t> bytes, std::uint32_t crc = 0) noexcept {
  if (bytes.empty()) return crc;
  return static_cast<std::uint32_t>(::crc32_z(crc, bytes.data(), bytes.size()));
}

using io::as_bytes;
using io::hex;
using io::printable;
using io::valid_utf8;

template <std::unsigned_integral U>
void put_le(std::vector<std::uint8_t>& out, U value) {
  for (std::size_t i = 0; i < sizeof(U); ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}

// The caller has checked that [at, at + sizeof(U)) lies inside `bytes`.
template <std::unsigned_integral U>
[[nodiscard]] U get_le(std::span<const std::uint8_t> bytes, std::size_t at) noexcept {
  U value = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) value = static_cast<U>(value | static_cast<U>(U{bytes[at + i]} << (8 * i)));
  return value;
}

/// Why `name` cannot name an array, or an empty string when it can.
[[nodiscard]] inline std::string name_problem(std::string_view name) {
  // '/' would make unzip create directories; NUL ends the name for C tools; malformed UTF-8 makes
  // Python's zipfile fail on the whole archive; the ZIP name field holds 65535 bytes, ".npy" included.
  if (name.empty()) return "is empty";
  if (name.find('/') != std::string_view::npos) return "contains '/'";
  if (name.find('\0') != std::string_view::npos) return "contains a NUL byte";
  if (!valid_utf8(name)) return "is not valid UTF-8";
  if (name.size() > 0xFFFF - 4) return message("is ", name.size(), " bytes long; at most 65531 fit");
  return {};
}

/// The .npy header (version 1.0, or 2.0 when the dict outgrows 64 KiB) for a C-order array:
/// magic, version, length, then the dict padded with spaces and a final '\n' to a multiple of 64
/// bytes, as NumPy writes it, so the array data that follows starts 64-byte aligned.
[[nodiscard]] inline std::string npy_header(std::string_view descr, const std::vector<std::ptrdiff_t>& shape) {
  std::string dict = "{'descr': '";
  dict += descr;
  dict += "', 'fortran_order': False, 'shape': (";
  for (std::size_t axis = 0; axis < shape.size(); ++axis) {
    if (axis > 0) dict += ", ";
    dict += std::to_string(shape[axis]);
  }
  if (shape.size() == 1) dict += ',';  // Python's one-element tuple: (5,)
  dict += "), }";
  const auto round_up = [](std::size_t n) { return (n + 63) / 64 * 64; };
  std::size_t prefix = 10;  // magic (6), version (2), header length (2)
  std::size_t total = round_up(prefix + dict.size() + 1);
  if (total - prefix > 0xFFFF) {
    prefix = 12;  // version 2.0: a 4-byte header length
    total = round_up(prefix + dict.size() + 1);
  }
  std::vector<std::uint8_t> head{0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<std::uint8_t>(prefix == 10 ? 1 : 2), 0};
  if (prefix == 10) put_le(head, static_cast<std::uint16_t>(total - prefix));
  else put_le(head, static_cast<std::uint32_t>(total - prefix));
  std::string out(head.begin(), head.end());
  out += dict;
  out.append(total - out.size() - 1, ' ');
  out += '\n';
  return out;
}

/// One array found in an .npz file, its data still inside the file's bytes.
struct ParsedMember {
  std::string name;        ///< without ".npy"
  std::string_view dtype;  ///< one of supported_dtypes
  std::vector<std::ptrdiff_t> shape;
  std::span<const std::uint8_t> data;
  std::uint64_t offset = 0;  ///< of the member's local header in the file
};

/// Reads the members of an .npz file held in memory. Every error is a std::runtime_error that
/// names the source, the member and the byte offset where the problem was found.
class Reader {
 public:
  Reader(std::span<const std::uint8_t> bytes, std::string_view source)
      : bytes_(bytes), source_(source.empty() ? std::string_view("npz data") : source) {}

  [[nodiscard]] std::vector<ParsedMember> members() const {
    const std::uint64_t end_record = find_end_record();
    std::uint64_t entries = get_le<std::uint16_t>(bytes_, end_record + 10);
    std::uint64_t directory_size = get_le<std::uint32_t>(bytes_, end_record + 12);
    std::uint64_t directory = get_le<std::uint32_t>(bytes_, end_record + 16);
    std::uint64_t directory_limit = end_record;  // the directory must end before this
    if (get_le<std::uint16_t>(bytes_, end_record + 4) != 0 || get_le<std::uint16_t>(bytes_, end_record + 6) != 0)
      error("end-of-central-directory record at byte ", end_record,
            " describes a multi-disk archive, which is not supported");

    // ZIP64 end records (written by Python when a count, size or offset overflows): a locator
    // right before the end record, pointing at the ZIP64 record. Trusted only when both are there.
    if (end_record >= 20 && get_le<std::uint32_t>(bytes_, end_record - 20) == zip64_locator_signature) {
      const std::uint64_t record = get_le<std::uint64_t>(bytes_, end_record - 20 + 8);
      if (record <= end_record - 20 && end_record - 20 - record >= 56 &&
          get_le<std::uint32_t>(bytes_, record) == zip64_end_signature) {
        entries = get_le<std::uint64_t>(bytes_, record + 32);
        directory_size = get_le<std::uint64_t>(bytes_, record + 40);
        directory = get_le<std::uint64_t>(bytes_, record + 48);
        directory_limit = record;
      }
    }
    if (directory > directory_limit || directory_size > directory_limit - directory)
      error("central directory (", directory_size, " bytes at byte ", directory,
            ") runs past the end records at byte ", directory_limit);
    if (entries > directory_size / 46)
      error("central directory at byte ", directory, " claims ", entries, " entries in ", directory_size, " bytes");

    std::vector<ParsedMember> out;
    out.reserve(static_cast<std::size_t>(entries));
    std::uint64_t at = directory;
    const std::uint64_t directory_end = directory + directory_size;
    for (std::uint64_t index = 0; index < entries; ++index) {
      if (directory_end - at < 46)
        error("central directory entry ", index, " at byte ", at, " runs past the directory's end at byte ",
              directory_end);
      if (get_le<std::uint32_t>(bytes_, at) != central_signature)
        error("bad signature for central directory entry ", index, " at byte ", at);
      const std::uint64_t name_length = get_le<std::uint16_t>(bytes_, at + 28);
      const std::uint64_t extra_length = get_le<std::uint16_t>(bytes_, at + 30);
      const std::uint64_t comment_length = get_le<std::uint16_t>(bytes_, at + 32);
      const std::uint64_t entry_size = 46 + name_length + extra_length + comment_length;
      if (directory_end - at < entry_size)
        error("central directory entry ", index, " at byte ", at, " (", entry_size,
              " bytes) runs past the directory's end at byte ", directory_end);
      out.push_back(member(at, index, directory));
      at += entry_size;
    }
    // Members may not share bytes: a chain of members each holding the next one's header and data
    // would make a file of N bytes hold arrays of order N^2 bytes (what zipfile calls a zip bomb).
    std::vector<const ParsedMember*> by_offset;
    for (const ParsedMember& m : out) by_offset.push_back(&m);
    std::sort(by_offset.begin(), by_offset.end(), [](const ParsedMember* a, const ParsedMember* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      const ParsedMember& before = *by_offset[i - 1];
      const auto end = static_cast<std::uint64_t>(before.data.data() - bytes_.data()) + before.data.size();
      if (end > by_offset[i]->offset)
        error("member '", printable(before.name), ".npy' (bytes ", before.offset, " to ", end, ") overlaps member '",
              printable(by_offset[i]->name), ".npy' at byte ", by_offset[i]->offset);
    }
    return out;
  }

 private:
  static constexpr std::uint32_t local_signature = 0x04034b50;
  static constexpr std::uint32_t central_signature = 0x02014b50;
  static constexpr std::uint32_t end_signature = 0x06054b50;
  static constexpr std::uint32_t zip64_end_signature = 0x06064b50;
  static constexpr std::uint32_t zip64_locator_signature = 0x07064b50;

  template <class... Parts>
  [[noreturn]] void error(const Parts&... parts) const {
    fail<std::runtime_error>(source_, ": ", parts...);
  }

  [[nodiscard]] std::uint64_t size() const noexcept { return bytes_.size(); }

  [[nodiscard]] std::string text(std::uint64_t at, std::uint64_t length) const {
    return {reinterpret_cast<const char*>(bytes_.data() + at), static_cast<std::size_t>(length)};
  }

  // The end-of-central-directory record is the last 22 bytes plus a comment of up to 64 KiB;
  // a candidate counts only if its comment length reaches exactly the end of the file.
  [[nodiscard]] std::uint64_t find_end_record() const {
    if (size() >= 22) {
      const std::uint64_t last = size() - 22;
      const std::uint64_t first = last > 0xFFFF ? last - 0xFFFF : 0;
      for (std::uint64_t at = last + 1; at-- > first;) {
        if (get_le<std::uint32_t>(bytes_, at) == end_signature &&
            get_le<std::uint16_t>(bytes_, at + 20) == last - at)
          return at;
      }
    }
    explain_missing_end();
  }

  // Without an end record the file is either not a ZIP archive or cut short. Walking the local
  // headers from the start tells which, and where: a truncated checkpoint reads as
  // "truncated at byte N (member 'w.npy' needs M bytes of data from byte K)".
  [[noreturn]] void explain_missing_end() const {
    if (size() < 4 || get_le<std::uint32_t>(bytes_, 0) != local_signature)
      error("not a zip archive (no end-of-central-directory record in its ", size(), " bytes)");
    std::uint64_t at = 0;
    std::string previous;
    while (size() - at >= 4 && get_le<std::uint32_t>(bytes_, at) == local_signature) {
      if (size() - at < 30) error("truncated at byte ", size(), " (inside the local header at byte ", at, ")");
      const std::uint64_t name_length = get_le<std::uint16_t>(bytes_, at + 26);
      const std::uint64_t extra_length = get_le<std::uint16_t>(bytes_, at + 28);
      const std::uint64_t data = at + 30 + name_length + extra_length;
      if (size() < data) error("truncated at byte ", size(), " (inside the local header at byte ", at, ")");
      previous = text(at + 30, name_length);
      if (get_le<std::uint16_t>(bytes_, at + 6) & 0x8u)
        error("truncated at byte ", size(), ", or damaged: no end-of-central-directory record, and member '",
              printable(previous), "' at byte ", at, " keeps its size in a data descriptor");
      std::uint64_t stored = get_le<std::uint32_t>(bytes_, at + 18);
      if (stored == 0xFFFFFFFF) {
        std::uint64_t ignored = 0;
        zip64_values(at + 30 + name_length, extra_length, previous, &ignored, &stored, nullptr);
      }
      if (size() - data < stored)
        error("truncated at byte ", size(), " (member '", printable(previous), "' needs ", stored,
              " bytes of data from byte ", data, ")");
      at = data + stored;
    }
    if (size() - at < 4)
      error("truncated at byte ", size(), " (after member '", printable(previous),
            "'; the central directory that should follow is missing)");
    const std::uint64_t directory = at;
    while (size() - at >= 4 && get_le<std::uint32_t>(bytes_, at) == central_signature) {
      const auto length = [&](std::uint64_t field) { return std::uint64_t{get_le<std::uint16_t>(bytes_, at + field)}; };
      if (size() - at < 46 || size() - at < 46 + length(28) + length(30) + length(32))
        error("truncated at byte ", size(), " (inside the central directory, which starts at byte ", directory, ")");
      at += 46 + length(28) + length(30) + length(32);
    }
    if (size() - at < 4)
      error("truncated at byte ", size(), " (after the central directory at byte ", directory,
            "; the end-of-central-directory record is missing)");
    const std::uint32_t signature = get_le<std::uint32_t>(bytes_, at);
    if (signature == end_signature || signature == zip64_end_signature || signature == zip64_locator_signature)
      error("truncated at byte ", size(), " (inside the end-of-central-directory records at byte ", at, ")");
    error("not a zip archive, or a damaged one: no end-of-central-directory record, and no zip header at byte ", at);
  }

  // A ZIP64 extra field (tag 1) holds, in this order, those of (size, stored size, local header
  // offset) whose 32-bit field reads 0xFFFFFFFF; the caller passes a pointer for each of them.
  void zip64_values(std::uint64_t extra, std::uint64_t length, std::string_view name, std::uint64_t* full_size,
                    std::uint64_t* stored_size, std::uint64_t* offset) const {
    std::uint64_t at = extra;
    while (extra + length - at >= 4) {
      const std::uint16_t tag = get_le<std::uint16_t>(bytes_, at);
      const std::uint64_t field = get_le<std::uint16_t>(bytes_, at + 2);
      if (extra + length - at - 4 < field)
        error("member '", printable(name), "': extra field at byte ", at, " runs past its end");
      if (tag == 1) {
        std::uint64_t next = at + 4;
        for (std::uint64_t* value : {full_size, stored_size, offset}) {
          if (!value) continue;
          if (at + 4 + field - next < 8)
            error("member '", printable(name), "': ZIP64 extra field at byte ", at, " is too short");
          *value = get_le<std::uint64_t>(bytes_, next);
          next += 8;
        }
        return;
      }
      at += 4 + field;
    }
    error("member '", printable(name), "' has 32-bit sizes or offset set to 0xFFFFFFFF but no ZIP64 extra field (byte ",
          extra, ")");
  }

  // Central directory entry at byte `at` (bounds checked by the caller); the member's data must
  // lie before the directory.
  [[nodiscard]] ParsedMember member(std::uint64_t at, std::uint64_t index, std::uint64_t directory) const {
    const std::uint16_t flags = get_le<std::uint16_t>(bytes_, at + 8);
    const std::uint16_t method = get_le<std::uint16_t>(bytes_, at + 10);
    const std::uint32_t crc = get_le<std::uint32_t>(bytes_, at + 16);
    std::uint64_t stored_size = get_le<std::uint32_t>(bytes_, at + 20);
    std::uint64_t full_size = get_le<std::uint32_t>(bytes_, at + 24);
    const std::uint64_t name_length = get_le<std::uint16_t>(bytes_, at + 28);
    const std::uint64_t extra_length = get_le<std::uint16_t>(bytes_, at + 30);
    std::uint64_t local = get_le<std::uint32_t>(bytes_, at + 42);
    const std::string name = text(at + 46, name_length);
    if (full_size == 0xFFFFFFFF || stored_size == 0xFFFFFFFF || local == 0xFFFFFFFF)
      zip64_values(at + 46 + name_length, extra_length, name, full_size == 0xFFFFFFFF ? &full_size : nullptr,
                   stored_size == 0xFFFFFFFF ? &stored_size : nullptr, local == 0xFFFFFFFF ? &local : nullptr);

    const std::string quoted = message("member '", printable(name), "'");
    if (flags & 0x1u) error(quoted, " at byte ", local, " is encrypted, which is not supported");
    if (method != 0)
      error(quoted, " at byte ", local, " is compressed (method ", method,
            "); only stored members are supported (np.savez, not np.savez_compressed)");
    if (stored_size != full_size)
      error(quoted, " at byte ", local, " is stored but its sizes differ (", stored_size, " and ", full_size, ")");
    if (local > directory || directory - local < 30)
      error(quoted, ": local header at byte ", local, " lies outside the data before the central directory (byte ",
            directory, ")");
    if (get_le<std::uint32_t>(bytes_, local) != local_signature)
      error(quoted, ": bad local header signature at byte ", local, " (central directory entry ", index, ")");
    const std::uint64_t local_name_length = get_le<std::uint16_t>(bytes_, local + 26);
    const std::uint64_t local_extra_length = get_le<std::uint16_t>(bytes_, local + 28);
    if (directory - local - 30 < local_name_length + local_extra_length)
      error(quoted, ": local header at byte ", local, " runs into the central directory at byte ", directory);
    if (text(local + 30, local_name_length) != name)
      error(quoted, ": the local header at byte ", local, " names it '", printable(text(local + 30, local_name_length)),
            "'");
    // Extra fields of the local header (ZIP64 sizes from np.savez, alignment padding) are skipped:
    // the central directory is the authority on sizes.
    const std::uint64_t data = local + 30 + local_name_length + local_extra_length;
    if (directory - data < full_size)
      error(quoted, " needs ", full_size, " bytes of data from byte ", data,
            ", which run into the central directory at byte ", directory);
    const auto payload = bytes_.subspan(static_cast<std::size_t>(data), static_cast<std::size_t>(full_size));
    if (const std::uint32_t actual = detail::npz::crc32(payload); actual != crc)
      error("CRC-32 mismatch in ", quoted, " at byte ", data, " (stored 0x", hex(crc, 8), ", computed 0x",
            hex(actual, 8), ")");

    constexpr std::string_view suffix = ".npy";
    if (!name.ends_with(suffix))
      error(quoted, " at byte ", local, " is not a .npy array (its name does not end in .npy)");
    ParsedMember parsed{.name = name.substr(0, name.size() - suffix.size()), .dtype = {}, .shape = {}, .data = {},
                        .offset = local};
    if (const std::string problem = name_problem(parsed.name); !problem.empty())
      error(quoted, " at byte ", local, " gives the array name '", printable(parsed.name), "', which ", problem);
    parse_npy(parsed, payload, data, quoted);
    return parsed;
  }

  // The .npy format: "\x93NUMPY", major and minor version, header length (2 bytes in 1.0,
  // 4 in 2.0), then a Python dict literal with 'descr', 'fortran_order' and 'shape'.
  void parse_npy(ParsedMember& out, std::span<const std::uint8_t> npy, std::uint64_t at,
                 const std::string& quoted) const {
    constexpr std::array<std::uint8_t, 6> magic{0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (npy.size() < 10 || !std::equal(magic.begin(), magic.end(), npy.begin()))
      error(quoted, " at byte ", at, " is not a .npy array (no \\x93NUMPY magic)");
    const unsigned major = npy[6], minor = npy[7];
    if ((major != 1 && major != 2) || minor != 0)
      error(quoted, " at byte ", at, " has .npy version ", major, ".", minor, "; only 1.0 and 2.0 are supported");
    const std::uint64_t prefix = major == 1 ? 10 : 12;
    if (npy.size() < prefix) error(quoted, ": .npy header at byte ", at, " is cut short");
    const std::uint64_t header_length =
        major == 1 ? get_le<std::uint16_t>(npy, 8) : std::uint64_t{get_le<std::uint32_t>(npy, 8)};
    if (npy.size() - prefix < header_length)
      error(quoted, ": .npy header at byte ", at + prefix, " (", header_length, " bytes) runs past the member's ",
            npy.size(), " bytes");
    const std::string_view header(reinterpret_cast<const char*>(npy.data() + prefix),
                                  static_cast<std::size_t>(header_length));
    bool fortran_order = false;
    parse_header_dict(header, at + prefix, quoted, out, fortran_order);
    if (fortran_order)
      error(quoted, " at byte ", at, " is stored in Fortran order; only C-order arrays are supported "
            "(save np.ascontiguousarray(a))");

    const std::optional<std::uint64_t> elements = element_count(out.shape);
    if (!elements) error(quoted, " at byte ", at, " has shape ", out.shape, ", too many elements");
    const std::uint64_t count = *elements;
    const std::uint64_t needed = count * item_size(out.dtype);
    const std::uint64_t present = npy.size() - prefix - header_length;
    if (present != needed)
      error(quoted, " holds ", present, " bytes of array data at byte ", at + prefix + header_length, "; shape ",
            out.shape, " of ", out.dtype, " needs ", needed);
    out.data = npy.subspan(static_cast<std::size_t>(prefix + header_length));
  }

  // A small reader for the one dict literal NumPy writes, e.g.
  // {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
  void parse_header_dict(std::string_view header, std::uint64_t base, const std::string& quoted, ParsedMember& out,
                         bool& fortran_order) const {
    std::size_t pos = 0;
    const auto bad = [&](std::string_view expected) {
      error(quoted, ": malformed .npy header at byte ", base + pos, ": expected ", expected, " in \"",
            printable(header.substr(0, 200)), "\"");
    };
    const auto skip_space = [&] {
      while (pos < header.size() && (header[pos] == ' ' || header[pos] == '\t' || header[pos] == '\n' || header[pos] == '\r'))
        ++pos;
    };
    const auto accept = [&](char ch) {
      skip_space();
      if (pos < header.size() && header[pos] == ch) {
        ++pos;
        return true;
      }
      return false;
    };
    const auto string_literal = [&]() -> std::string_view {
      skip_space();
      if (pos >= header.size() || (header[pos] != '\'' && header[pos] != '"')) bad("a quoted string");
      const char quote = header[pos];
      const std::size_t close = header.find(quote, pos + 1);
      if (close == std::string_view::npos) bad("a closing quote");
      const std::string_view value = header.substr(pos + 1, close - pos - 1);
      pos = close + 1;
      return value;
    };
    const auto integer = [&]() -> std::ptrdiff_t {
      skip_space();
      if (pos >= header.size() || header[pos] < '0' || header[pos] > '9') bad("a non-negative integer");
      std::ptrdiff_t value = 0;
      while (pos < header.size() && header[pos] >= '0' && header[pos] <= '9') {
        const int digit = header[pos] - '0';
        if (value > (std::numeric_limits<std::ptrdiff_t>::max() - digit) / 10) bad("a dimension that fits 63 bits");
        value = value * 10 + digit;
        ++pos;
      }
      if (pos < header.size() && header[pos] == 'L') ++pos;  // Python 2 long, in old files
      return value;
    };

    if (!accept('{')) bad("'{'");
    bool seen_descr = false, seen_order = false, seen_shape = false;
    while (!accept('}')) {
      const std::string_view key = string_literal();
      if (!accept(':')) bad("':'");
      skip_space();
      if (key == "descr" && !seen_descr) {
        seen_descr = true;
        if (pos < header.size() && header[pos] == '[')
          error(quoted, " at byte ", base + pos, " has a structured dtype; only plain numbers are supported");
        const std::string_view descr = string_literal();
        const auto found = std::find(supported_dtypes.begin(), supported_dtypes.end(), descr);
        if (found == supported_dtypes.end())
          error(quoted, " at byte ", base, " has dtype ", printable(descr), ", which is not supported (supported: "
                "<f4, <f8, <i4, <i8, |u1, <u4, <u8)");
        out.dtype = *found;
      } else if (key == "fortran_order" && !seen_order) {
        seen_order = true;
        if (header.substr(pos).starts_with("True")) {
          fortran_order = true;
          pos += 4;
        } else if (header.substr(pos).starts_with("False")) {
          fortran_order = false;
          pos += 5;
        } else {
          bad("True or False");
        }
      } else if (key == "shape" && !seen_shape) {
        seen_shape = true;
        if (!accept('(')) bad("'(' starting the shape");
        while (!accept(')')) {
          out.shape.push_back(integer());
          if (!accept(',')) {
            if (!accept(')')) bad("',' or ')' in the shape");
            break;
          }
        }
        if (out.shape.size() > max_rank)
          error(quoted, " at byte ", base, " has ", out.shape.size(), " dimensions; at most ", max_rank,
                " are supported");
      } else {
        error(quoted, ": .npy header at byte ", base, " has an unexpected or repeated key '", printable(key), "'");
      }
      if (!accept(',')) {
        if (!accept('}')) bad("',' or '}'");
        break;
      }
    }
    skip_space();
    if (pos != header.size()) bad("only padding after the dict");
    if (!seen_descr || !seen_order || !seen_shape)
      error(quoted, ": .npy header at byte ", base, " lacks one of 'descr', 'fortran_order', 'shape'");
  }

  std::span<const std::uint8_t> bytes_;
  std::string_view source_;
};

}  // namespace detail::npz

/// A type an Archive stores: float, double, std::int32_t, std::int64_t, std::uint8_t,
/// std::uint32_t or std::uint64_t (NumPy's float32 ... uint64).
template <class T>
concept ArchiveElement = requires { detail::npz::Dtype<T>::descr; };

/// NumPy's spelling of the dtype of `T`, as in `np.dtype(np.float32).str == "<f4"`.
template <ArchiveElement T>
inline constexpr std::string_view npy_dtype = detail::npz::Dtype<T>::descr;

/// An ordered collection of named arrays, saved as and loaded from a NumPy .npz file.
///
/// The unit in which optimizer state, checkpoints and caches are saved, so that Python reads
/// them directly: `np.load("state.npz")["exp_avg"]`. Arrays keep the order in which they were
/// first put. Each array's data lives in its own 64-byte-aligned allocation, so `get<T>` hands
/// out aligned spans; in the file each array's data also starts on a 64-byte boundary.
///
/// Files are ZIP archives of stored (uncompressed) .npy members, byte-for-byte the same for the
/// same contents (fixed 1980-01-01 timestamps), written without ZIP64: an archive holds at most
/// 65534 arrays and every array and offset must stay below 4 GiB (std::runtime_error otherwise).
/// Loading accepts what np.savez writes, ZIP64 fields included, but not np.savez_compressed.
///
/// Errors: bad names, shapes or lookups throw std::invalid_argument naming the field (and the
/// file the archive came from); bad files and failed saves throw std::runtime_error naming the
/// file, the member and the byte offset, or the OS error.
class Archive {
 public:
  Archive() = default;

  /// Stores `data` as an array of shape `shape` (row-major; an empty shape is a 0-d scalar of
  /// one element), replacing an array of the same name in place. Names must be non-empty UTF-8
  /// without '/' or NUL; the product of `shape` must equal data.size().
  template <ArchiveElement T>
  void put(std::string name, std::span<const T> data, std::vector<std::ptrdiff_t> shape) {
    check_name(name, "Archive::put");
    require(shape.size() <= detail::npz::max_rank, "Archive::put: array '", name, "' has ", shape.size(),
            " dimensions; NumPy reads at most ", detail::npz::max_rank);
    for (std::size_t axis = 0; axis < shape.size(); ++axis)
      require(shape[axis] >= 0, "Archive::put: array '", name, "' has dimension ", shape[axis], " at axis ", axis,
              " of shape ", shape);
    const std::optional<std::uint64_t> elements = detail::npz::element_count(shape);
    require(elements.has_value(), "Archive::put: array '", name, "' has shape ", shape, ", too many elements");
    const auto count = static_cast<std::ptrdiff_t>(*elements);
    require(count == static_cast<std::ptrdiff_t>(data.size()), "Archive::put: array '", name, "' has shape ", shape,
            " (", count, " elements) but ", data.size(), " values were given");
    AlignedBuffer<std::uint8_t> bytes(count * static_cast<std::ptrdiff_t>(sizeof(T)));
    if (!data.empty()) std::memcpy(bytes.data(), data.data(), data.size_bytes());
    store(std::move(name), npy_dtype<T>, std::move(shape), std::move(bytes));
  }

  /// As above for any contiguous range (std::vector, std::array, a span of non-const).
  template <std::ranges::contiguous_range R>
    requires ArchiveElement<std::ranges::range_value_t<R>>
  void put(std::string name, const R& data, std::vector<std::ptrdiff_t> shape) {
    using T = std::ranges::range_value_t<R>;
    put(std::move(name), std::span<const T>(std::ranges::data(data), std::ranges::size(data)), std::move(shape));
  }

  /// A 1-D array of every element of `data`.
  template <std::ranges::contiguous_range R>
    requires ArchiveElement<std::ranges::range_value_t<R>>
  void put(std::string name, const R& data) {
    const auto count = static_cast<std::ptrdiff_t>(std::ranges::size(data));
    put(std::move(name), data, std::vector<std::ptrdiff_t>{count});
  }

  /// A 0-d array holding `value` (`np.load(f)["step"][()]` or `.item()` in Python). The type is
  /// the argument's: write put_scalar<std::int64_t>("step", 10) for an int64 step counter.
  template <ArchiveElement T>
  void put_scalar(std::string name, T value) {
    put(std::move(name), std::span<const T>(&value, 1), {});
  }

  /// `text` as a 1-D uint8 array of its bytes; Python decodes it with `bytes(arr).decode()`.
  void put_string(std::string name, std::string_view text) {
    put(std::move(name), detail::npz::as_bytes(text), {static_cast<std::ptrdiff_t>(text.size())});
  }

  [[nodiscard]] bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
  [[nodiscard]] std::size_t size() const noexcept { return members_.size(); }
  [[nodiscard]] bool empty() const noexcept { return members_.empty(); }

  /// Array names in the order they were first put (or appear in the file).
  [[nodiscard]] std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(members_.size());
    for (const Member& m : members_) out.push_back(m.name);
    return out;
  }

  /// The array's shape: empty for a 0-d scalar.
  [[nodiscard]] const std::vector<std::ptrdiff_t>& shape(std::string_view name) const { return find(name).shape; }
  /// The array's dtype as NumPy spells it ("<f4", "|u1", ...).
  [[nodiscard]] std::string_view dtype(std::string_view name) const { return find(name).dtype; }

  /// The array's elements, row-major, aligned to 64 bytes; valid until the array is replaced or
  /// the archive destroyed. std::invalid_argument if there is no such array or its dtype is not T's.
  template <ArchiveElement T>
  [[nodiscard]] std::span<const T> get(std::string_view name) const {
    const Member& m = find(name);
    if (m.dtype != npy_dtype<T>)
      fail(label(), ": field '", detail::npz::printable(name), "' has dtype ", m.dtype, ", expected ", npy_dtype<T>);
    return {reinterpret_cast<const T*>(m.data.data()), static_cast<std::size_t>(m.data.size()) / sizeof(T)};
  }

  /// The single element of a one-element array (0-d, or any shape of one element).
  template <ArchiveElement T>
  [[nodiscard]] T get_scalar(std::string_view name) const {
    const std::span<const T> values = get<T>(name);
    if (values.size() != 1)
      fail(label(), ": field '", detail::npz::printable(name), "' holds ", values.size(), " elements (shape ",
           shape(name), "), expected a single value");
    return values[0];
  }

  /// The bytes of a uint8 array (as written by put_string) as a string.
  [[nodiscard]] std::string get_string(std::string_view name) const {
    const std::span<const std::uint8_t> bytes = get<std::uint8_t>(name);
    return {bytes.begin(), bytes.end()};
  }

  /// Copies the array into `out`, which must hold exactly as many elements: a checkpoint loaded
  /// into a buffer of another size names both sizes rather than truncating.
  template <ArchiveElement T>
  void get_into(std::string_view name, std::span<T> out) const {
    const std::span<const T> values = get<T>(name);
    if (values.size() != out.size())
      fail(label(), ": field '", detail::npz::printable(name), "' holds ", values.size(), " elements (shape ",
           shape(name), "), expected ", out.size());
    if (!values.empty()) std::memcpy(out.data(), values.data(), values.size_bytes());
  }

  /// The file this archive was loaded from (or the name given to from_bytes); empty otherwise.
  [[nodiscard]] const std::string& source() const noexcept { return source_; }

  /// The .npz file's bytes.
  [[nodiscard]] std::vector<std::uint8_t> to_bytes() const {
    const Layout layout = plan("Archive::to_bytes");
    std::vector<std::uint8_t> out;
    out.reserve(static_cast<std::size_t>(layout.total));
    write(layout, [&](std::span<const std::uint8_t> bytes) { out.insert(out.end(), bytes.begin(), bytes.end()); });
    return out;
  }

  /// Parses an .npz file held in memory; `source_name` prefixes every error message and later
  /// lookup error (a file name, or a label such as "checkpoint from rank 3").
  [[nodiscard]] static Archive from_bytes(std::span<const std::uint8_t> bytes, std::string source_name) {
    const detail::npz::Reader reader(bytes, source_name);
    Archive archive;
    for (detail::npz::ParsedMember& parsed : reader.members()) {
      if (archive.contains(parsed.name))
        fail<std::runtime_error>(source_name.empty() ? "npz data" : source_name, ": member '",
                                 detail::npz::printable(parsed.name), ".npy' at byte ", parsed.offset,
                                 " repeats an earlier member's name");
      AlignedBuffer<std::uint8_t> data(static_cast<std::ptrdiff_t>(parsed.data.size()));
      if (!parsed.data.empty()) std::memcpy(data.data(), parsed.data.data(), parsed.data.size());
      archive.store(std::move(parsed.name), parsed.dtype, std::move(parsed.shape), std::move(data));
    }
    archive.source_ = std::move(source_name);
    return archive;
  }

  /// Writes the archive to `path` atomically and durably: into a temporary file beside it
  /// (`path` + ".tmp-<pid>-<random>"), fsync'ed, then renamed over `path`. On failure the
  /// temporary file is removed, `path` is left as it was, and std::runtime_error names the path
  /// and the OS error.
  void save(const std::filesystem::path& path) const {
    const std::string context = "Archive::save";
    require<std::runtime_error>(path.has_filename(), context, ": '", path.string(), "' names a directory, not a file");
    const Layout layout = plan(message(context, " '", path.string(), "'"));  // size limits, before touching the disk
    io::AtomicFile file(path, context);
    write(layout, [&](std::span<const std::uint8_t> bytes) { file.write(bytes); });
    file.commit();
  }

  /// Reads an .npz file (from save, or NumPy's np.savez). std::runtime_error naming the file, the
  /// member and the byte offset for anything wrong: truncation, CRC mismatch, compression,
  /// unsupported dtype, Fortran order, a malformed header.
  [[nodiscard]] static Archive load(const std::filesystem::path& path) {
    const std::vector<std::uint8_t> bytes = io::read_file(path, "Archive::load");
    return from_bytes(bytes, path.string());
  }

  /// Same names in the same order, each with the same dtype, shape and bits (NaN payloads
  /// included); where the archives came from does not matter.
  friend bool operator==(const Archive& a, const Archive& b) {
    return std::equal(a.members_.begin(), a.members_.end(), b.members_.begin(), b.members_.end(),
                      [](const Member& x, const Member& y) {
                        return x.name == y.name && x.dtype == y.dtype && x.shape == y.shape &&
                               x.data.size() == y.data.size() &&
                               (x.data.size() == 0 ||
                                std::memcmp(x.data.data(), y.data.data(), static_cast<std::size_t>(x.data.size())) == 0);
                      });
  }

 private:
  struct Member {
    std::string name;
    std::string_view dtype;  // one of detail::npz::supported_dtypes
    std::vector<std::ptrdiff_t> shape;
    AlignedBuffer<std::uint8_t> data;
  };

  // Where each member goes in the file, computed before the first byte is written so that a size
  // limit fails before a temporary file exists.
  struct Entry {
    std::string zip_name;
    std::string npy_header;
    std::uint32_t crc = 0;
    std::uint32_t size = 0;  // npy header + array data
    std::uint32_t offset = 0;
    std::uint16_t padding = 0;  // extra-field bytes that align the data to 64
    std::uint16_t flags = 0;
  };
  struct Layout {
    std::vector<Entry> entries;
    std::uint32_t directory = 0;
    std::uint32_t directory_size = 0;
    std::uint64_t total = 0;
  };

  static constexpr std::uint16_t dos_time = 0;                             // 00:00:00
  static constexpr std::uint16_t dos_date = (0 << 9) | (1 << 5) | 1;       // 1980-01-01
  static constexpr std::uint16_t version = 20;                             // ZIP 2.0: stored, no ZIP64
  static constexpr std::uint16_t made_by = (3 << 8) | version;             // Unix, so the mode below applies
  static constexpr std::uint32_t unix_mode = 0100644u << 16;               // regular file, rw-r--r--

  static void check_name(std::string_view name, std::string_view context) {
    if (const std::string problem = detail::npz::name_problem(name); !problem.empty())
      fail(context, ": name '", detail::npz::printable(name), "' ", problem);
  }

  [[nodiscard]] std::string label() const { return source_.empty() ? std::string("Archive") : source_; }

  [[nodiscard]] const Member& find(std::string_view name) const {
    const auto it = index_.find(name);
    if (it != index_.end()) return members_[it->second];
    std::string known;
    for (std::size_t i = 0; i < members_.size() && i < 10; ++i)
      known += message(i ? ", " : "", detail::npz::printable(members_[i].name));
    if (members_.size() > 10) known += message(", ... (", members_.size(), " in all)");
    fail(label(), ": no field '", detail::npz::printable(name), "' (fields: ", known.empty() ? "none" : known, ")");
  }

  void store(std::string name, std::string_view dtype, std::vector<std::ptrdiff_t> shape,
             AlignedBuffer<std::uint8_t> data) {
    if (const auto it = index_.find(name); it != index_.end()) {
      Member& m = members_[it->second];
      m.dtype = dtype;
      m.shape = std::move(shape);
      m.data = std::move(data);
      return;
    }
    index_.emplace(name, members_.size());
    members_.push_back(Member{std::move(name), dtype, std::move(shape), std::move(data)});
  }

  [[nodiscard]] Layout plan(std::string_view context) const {
    // 0xFFFF and 0xFFFFFFFF are ZIP64's "see the extended record" markers, so stay below them.
    require<std::runtime_error>(members_.size() < 0xFFFF, context, ": ", members_.size(),
                                " arrays; an archive written without ZIP64 holds at most 65534");
    constexpr std::uint64_t limit = 0xFFFFFFFF;
    Layout layout;
    layout.entries.reserve(members_.size());
    std::uint64_t offset = 0, directory_size = 0;
    for (const Member& m : members_) {
      Entry e;
      e.zip_name = m.name + ".npy";
      e.npy_header = detail::npz::npy_header(m.dtype, m.shape);
      const std::uint64_t member_size = e.npy_header.size() + static_cast<std::uint64_t>(m.data.size());
      if (member_size >= limit || offset >= limit)
        fail<std::runtime_error>(context, ": array '", detail::npz::printable(m.name), "' (", member_size,
                                 " bytes at byte ", offset, ") does not fit a zip archive without ZIP64 (4 GiB)");
      e.size = static_cast<std::uint32_t>(member_size);
      e.offset = static_cast<std::uint32_t>(offset);
      e.crc = detail::npz::crc32(m.data.span(), detail::npz::crc32(detail::npz::as_bytes(e.npy_header)));
      const std::uint64_t header_end = offset + 30 + e.zip_name.size();
      std::uint64_t padding = (64 - header_end % 64) % 64;
      if (padding < 6) padding += 64;  // room for the record's tag, length and alignment value
      e.padding = static_cast<std::uint16_t>(padding);
      // Bit 11: the name is UTF-8; set only when it matters, as Python's zipfile does.
      const bool ascii = std::all_of(m.name.begin(), m.name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
      e.flags = ascii ? 0 : 0x0800;
      offset = header_end + padding + member_size;
      directory_size += 46 + e.zip_name.size();
      layout.entries.push_back(std::move(e));
    }
    require<std::runtime_error>(offset < limit && directory_size < limit, context, ": the archive (",
                                offset + directory_size, " bytes) does not fit a zip archive without ZIP64 (4 GiB)");
    layout.directory = static_cast<std::uint32_t>(offset);
    layout.directory_size = static_cast<std::uint32_t>(directory_size);
    layout.total = offset + directory_size + 22;
    return layout;
  }

  // Local header + data per member, then the central directory and its end record.
  template <class Sink>
  void write(const Layout& layout, Sink&& sink) const {
    using detail::npz::put_le;
    std::vector<std::uint8_t> head;
    for (std::size_t i = 0; i < members_.size(); ++i) {
      const Member& m = members_[i];
      const Entry& e = layout.entries[i];
      head.clear();
      put_le<std::uint32_t>(head, 0x04034b50);
      put_le(head, version);
      put_le(head, e.flags);
      put_le<std::uint16_t>(head, 0);  // stored
      put_le(head, dos_time);
      put_le(head, dos_date);
      put_le(head, e.crc);
      put_le(head, e.size);  // stored size
      put_le(head, e.size);  // size
      put_le(head, static_cast<std::uint16_t>(e.zip_name.size()));
      put_le(head, e.padding);
      head.insert(head.end(), e.zip_name.begin(), e.zip_name.end());
      // The padding is one well-formed extra-field record (tag 0xD935 and the alignment, as
      // Android's zipalign writes it), so tools that walk extra fields accept it.
      put_le<std::uint16_t>(head, 0xD935);
      put_le(head, static_cast<std::uint16_t>(e.padding - 4));
      put_le<std::uint16_t>(head, 64);
      head.resize(head.size() + e.padding - 6, 0);
      sink(std::span<const std::uint8_t>(head));
      sink(detail::npz::as_bytes(e.npy_header));
      sink(m.data.span());
    }
    head.clear();
    for (const Entry& e : layout.entries) {
      put_le<std::uint32_t>(head, 0x02014b50);
      put_le(head, made_by);
      put_le(head, version);
      put_le(head, e.flags);
      put_le<std::uint16_t>(head, 0);  // stored
      put_le(head, dos_time);
      put_le(head, dos_date);
      put_le(head, e.crc);
      put_le(head, e.size);
      put_le(head, e.size);
      put_le(head, static_cast<std::uint16_t>(e.zip_name.size()));
      put_le<std::uint16_t>(head, 0);  // extra field
      put_le<std::uint16_t>(head, 0);  // comment
      put_le<std::uint16_t>(head, 0);  // disk
      put_le<std::uint16_t>(head, 0);  // internal attributes
      put_le(head, unix_mode);
      put_le(head, e.offset);
      head.insert(head.end(), e.zip_name.begin(), e.zip_name.end());
    }
    put_le<std::uint32_t>(head, 0x06054b50);
    put_le<std::uint16_t>(head, 0);  // this disk
    put_le<std::uint16_t>(head, 0);  // disk of the directory
    put_le(head, static_cast<std::uint16_t>(members_.size()));
    put_le(head, static_cast<std::uint16_t>(members_.size()));
    put_le(head, layout.directory_size);
    put_le(head, layout.directory);
    put_le<std::uint16_t>(head, 0);  // comment
    sink(std::span<const std::uint8_t>(head));
  }

  std::vector<Member> members_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::string source_;
};

}  // namespace distopt
