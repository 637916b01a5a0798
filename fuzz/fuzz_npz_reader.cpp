// libFuzzer target for the .npz reader: Archive::from_bytes, the in-memory path that
// Archive::load takes after reading the file (checkpoints, optimizer state and caches, which
// users hand us, so every byte is untrusted). See fuzz/README.md.
//
// Input layout: the whole input is the file, with no header bytes, so every seed is a real .npz
// file (np.load reads the valid ones) and every input, even an empty one, is a valid test case.
//
// Each input is parsed twice: as it is, then, if that changes anything, with the CRC-32 of every
// member in the central directory replaced by the CRC of the bytes the reader will check. A
// mutation inside a .npy header or array data almost never keeps the CRC right, so without the
// second pass the .npy parser behind the CRC check would hardly be reached. The fix-up walks the
// archive the way the reader does (end record, ZIP64 records, central directory, local headers),
// so a file the reader accepts needs no fix-up: one that does is a CRC the reader did not check.
//
// from_bytes may throw only std::runtime_error (a bad file: truncated, damaged, compressed, an
// unsupported dtype, ...) or std::invalid_argument, each naming the source; anything else
// escapes to libFuzzer and is reported. When it succeeds, the archive must hold what it says:
//
//   - names() are distinct, as many as size(), each found by contains();
//   - each array's dtype is one of the seven supported ones, its shape has at most 32
//     non-negative extents, and get<T> for that dtype's T returns exactly the product of the
//     shape elements (64-byte aligned); get<U> for another type, and a lookup of a name no
//     archive can hold, throw std::invalid_argument naming the source; get_string of a |u1
//     array is its bytes;
//   - the archive survives a round trip: from_bytes(to_bytes()) == archive, and writing that
//     copy again gives the same bytes (the writer is deterministic).
//
// The archive is then read as a data set (data::arrays_from, the reader behind data::load_arrays
// and `train --data file.npz`), with the default names (x, y) and, when the archive holds exactly
// two arrays, with those two in either order, as classes and as real values: it may only throw
// std::invalid_argument naming the source; when it accepts, the data set holds what it says
// (as many samples as the features' first extent, finite features and targets, class ids in
// [0, classes), a copy of every sample that reproduces them).
//
// A violation traps. An exception from to_bytes or from the round trip's from_bytes is a bug
// too (an archive parsed from <= 64 KiB is far below the writer's 4 GiB and 65534-array limits),
// so it is left to escape. Work per input is linear in the input's size except for members
// whose data overlap (see fuzz/README.md): from_bytes copies each member, so at -max_len=65536
// an input holds at most a few tens of MB of arrays.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <zlib.h>

#include "distopt/core/archive.hpp"
#include "distopt/data/arrays.hpp"

namespace {

using distopt::Archive;
using distopt::npy_dtype;

constexpr std::string_view source_name = "<fuzz input>";
constexpr std::string_view round_trip_name = "<fuzz round trip>";

// Not assert(): the release build defines NDEBUG, and a broken invariant must always stop the run.
void check(bool invariant) {
  if (!invariant) __builtin_trap();
}

// Every message names its source (the file name, for Archive::load).
void check_message(const std::exception& error) {
  check(std::string_view(error.what()).find(source_name) != std::string_view::npos);
}

/// Runs `call`, which must throw std::invalid_argument naming the source.
template <class Call>
void check_refused(Call&& call) {
  try {
    call();
  } catch (const std::invalid_argument& error) {
    check_message(error);
    return;
  }
  check(false);
}

/// Calls `visit(T{})` with the element type T whose npy_dtype<T> is `dtype`; traps for a dtype
/// the archive should never hold.
template <class Visit>
void with_element_type(std::string_view dtype, Visit&& visit) {
  if (dtype == npy_dtype<float>) visit(float{});
  else if (dtype == npy_dtype<double>) visit(double{});
  else if (dtype == npy_dtype<std::int32_t>) visit(std::int32_t{});
  else if (dtype == npy_dtype<std::int64_t>) visit(std::int64_t{});
  else if (dtype == npy_dtype<std::uint8_t>) visit(std::uint8_t{});
  else if (dtype == npy_dtype<std::uint32_t>) visit(std::uint32_t{});
  else if (dtype == npy_dtype<std::uint64_t>) visit(std::uint64_t{});
  else check(false);
}

/// The number of elements of `shape` (1 for a 0-d scalar). Any zero extent makes it 0, whatever
/// the others are; otherwise the product must not overflow, since the data are in memory.
std::uint64_t element_count(const std::vector<std::ptrdiff_t>& shape) {
  for (const std::ptrdiff_t extent : shape) {
    check(extent >= 0);
    if (extent == 0) return 0;
  }
  std::uint64_t count = 1;
  for (const std::ptrdiff_t extent : shape) check(!__builtin_mul_overflow(count, static_cast<std::uint64_t>(extent), &count));
  return count;
}

void check_array(const Archive& archive, const std::string& name) {
  check(archive.contains(name));
  const std::string_view dtype = archive.dtype(name);
  const std::vector<std::ptrdiff_t>& shape = archive.shape(name);
  check(shape.size() <= 32);
  const std::uint64_t count = element_count(shape);
  with_element_type(dtype, [&](auto zero) {
    using T = decltype(zero);
    const std::span<const T> values = archive.get<T>(name);
    check(values.size() == count);
    check(values.empty() || reinterpret_cast<std::uintptr_t>(values.data()) % 64 == 0);
    // Asking for the wrong element type is refused, naming the archive's source.
    if constexpr (std::is_same_v<T, float>) {
      check_refused([&] { (void)archive.get<double>(name); });
    } else {
      check_refused([&] { (void)archive.get<float>(name); });
    }
    if constexpr (std::is_same_v<T, std::uint8_t>) {
      const std::string text = archive.get_string(name);
      check(text.size() == values.size() && std::equal(text.begin(), text.end(), values.begin(),
                                                        [](char c, std::uint8_t b) { return static_cast<std::uint8_t>(c) == b; }));
    }
  });
}

template <class U>
U le(std::span<const std::uint8_t> bytes, std::size_t at) {
  U value = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) value = static_cast<U>(value | static_cast<U>(U{bytes[at + i]} << (8 * i)));
  return value;
}

/// `file` with the CRC-32 field of each central directory entry set to the CRC of the member
/// data that entry describes, found as Archive::from_bytes finds it: the last end record whose
/// comment reaches the end of the file, the ZIP64 end record when a locator points at one, sizes
/// and offset from the entry (or its ZIP64 extra field), the data after the local header.
/// Entries it cannot follow are left as they are.
std::vector<std::uint8_t> with_fixed_crcs(std::span<const std::uint8_t> file) {
  std::vector<std::uint8_t> out(file.begin(), file.end());
  const std::size_t size = file.size();
  if (size < 22) return out;
  std::size_t end = size;  // the end record, once found
  for (std::size_t at = size - 22 + 1, first = size - 22 > 0xFFFF ? size - 22 - 0xFFFF : 0; at-- > first;) {
    if (le<std::uint32_t>(file, at) == 0x06054b50 && le<std::uint16_t>(file, at + 20) == size - 22 - at) {
      end = at;
      break;
    }
  }
  if (end == size) return out;
  std::uint64_t entries = le<std::uint16_t>(file, end + 10);
  std::uint64_t directory_size = le<std::uint32_t>(file, end + 12);
  std::uint64_t directory = le<std::uint32_t>(file, end + 16);
  std::uint64_t limit = end;
  if (end >= 20 && le<std::uint32_t>(file, end - 20) == 0x07064b50) {
    const std::uint64_t record = le<std::uint64_t>(file, end - 20 + 8);
    if (record <= end - 20 && end - 20 - record >= 56 && le<std::uint32_t>(file, record) == 0x06064b50) {
      entries = le<std::uint64_t>(file, record + 32);
      directory_size = le<std::uint64_t>(file, record + 40);
      directory = le<std::uint64_t>(file, record + 48);
      limit = record;
    }
  }
  if (directory > limit || directory_size > limit - directory) return out;
  const std::uint64_t directory_end = directory + directory_size;
  std::uint64_t at = directory;
  for (std::uint64_t index = 0; index < entries && directory_end - at >= 46; ++index) {
    if (le<std::uint32_t>(file, at) != 0x02014b50) break;
    const std::uint64_t name_length = le<std::uint16_t>(file, at + 28);
    const std::uint64_t extra_length = le<std::uint16_t>(file, at + 30);
    const std::uint64_t entry_size = 46 + name_length + extra_length + le<std::uint16_t>(file, at + 32);
    if (directory_end - at < entry_size) break;
    std::uint64_t full_size = le<std::uint32_t>(file, at + 24);
    std::uint64_t stored_size = le<std::uint32_t>(file, at + 20);
    std::uint64_t local = le<std::uint32_t>(file, at + 42);
    // The ZIP64 extra field (tag 1): the 64-bit values of the fields that read 0xFFFFFFFF, in order.
    const std::uint64_t extra = at + 46 + name_length;
    for (std::uint64_t field = extra; extra + extra_length - field >= 4;) {
      const std::uint64_t length = le<std::uint16_t>(file, field + 2);
      if (extra + extra_length - field - 4 < length) break;
      if (le<std::uint16_t>(file, field) == 1) {
        std::uint64_t next = field + 4;
        for (std::uint64_t* value : {&full_size, &stored_size, &local}) {
          if (*value != 0xFFFFFFFF || field + 4 + length - next < 8) continue;
          *value = le<std::uint64_t>(file, next);
          next += 8;
        }
        break;
      }
      field += 4 + length;
    }
    if (local <= directory && directory - local >= 30) {
      const std::uint64_t data = local + 30 + le<std::uint16_t>(file, local + 26) + le<std::uint16_t>(file, local + 28);
      if (data <= directory && directory - data >= full_size) {
        const auto crc = static_cast<std::uint32_t>(
            full_size == 0 ? 0 : ::crc32_z(0, file.data() + data, static_cast<std::size_t>(full_size)));
        for (std::size_t i = 0; i < 4; ++i) out[at + 16 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
      }
    }
    at += entry_size;
  }
  return out;
}

/// Reads `archive` as a data set with `options`, checking what the arrays reader promises.
void check_arrays(const Archive& archive, const distopt::data::ArraysOptions& options) {
  distopt::data::ArrayDataset d;
  try {
    d = distopt::data::arrays_from(archive, options, std::string(source_name));
  } catch (const std::invalid_argument& error) {
    check_message(error);
    return;
  }
  const auto& fshape = archive.shape(options.features);
  check(fshape.size() >= 2 && static_cast<std::ptrdiff_t>(d.size()) == fshape[0] && d.size() > 0);
  const auto width = static_cast<std::size_t>(d.sample_shape().size());
  check(d.features().size() == d.size() * width);
  for (const float v : d.features()) check(std::isfinite(v));
  const auto info = d.target_info();
  if (info.are_classes()) {
    check(d.classes().size() == d.size());
    for (const std::int32_t id : d.classes()) check(id >= 0 && static_cast<std::size_t>(id) < info.classes);
  } else {
    check(d.values().size() == d.size() * info.width);
    for (const float v : d.values()) check(std::isfinite(v));
  }
  // The last sample through copy(), as a loader reads it.
  const std::size_t last = d.size() - 1;
  std::vector<float> features(width), values(info.are_classes() ? 0 : info.width);
  std::vector<std::int32_t> classes(info.are_classes() ? 1 : 0);
  d.copy(std::span<const std::size_t>(&last, 1), features, classes, values);
  check(std::equal(features.begin(), features.end(), d.features().begin() + static_cast<std::ptrdiff_t>(last * width)));
}

/// Parses `file` and checks what comes out; true when the reader accepted it.
bool fuzz_file(std::span<const std::uint8_t> file) {
  Archive archive;
  try {
    archive = Archive::from_bytes(file, std::string(source_name));
  } catch (const std::runtime_error& error) {
    check_message(error);
    return false;
  } catch (const std::invalid_argument& error) {
    check_message(error);
    return false;
  }

  check(archive.source() == source_name);
  const std::vector<std::string> names = archive.names();
  check(names.size() == archive.size() && archive.empty() == names.empty());
  check(std::set<std::string>(names.begin(), names.end()).size() == names.size());
  for (const std::string& name : names) check_array(archive, name);
  // No array can be named "" (the reader refuses the member ".npy"), so this lookup always fails.
  check(!archive.contains(""));
  check_refused([&] { (void)archive.shape(""); });

  using Kind = distopt::data::TargetInfo::Kind;
  check_arrays(archive, {});
  if (names.size() == 2)
    for (const Kind kind : {Kind::classes, Kind::values}) {
      check_arrays(archive, {.features = names[0], .targets = names[1], .kind = kind});
      check_arrays(archive, {.features = names[1], .targets = names[0], .kind = kind});
    }

  // What the reader accepts, the writer writes, and reading that back gives the same archive.
  const std::vector<std::uint8_t> written = archive.to_bytes();
  const Archive copy = Archive::from_bytes(written, std::string(round_trip_name));
  check(copy == archive && archive == copy);
  check(copy.names() == names);
  check(copy.to_bytes() == written);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> file(data, size);
  const bool accepted = fuzz_file(file);
  const std::vector<std::uint8_t> fixed = with_fixed_crcs(file);
  if (std::equal(fixed.begin(), fixed.end(), file.begin(), file.end())) return 0;
  // Some stored CRC was wrong, so the file as it was must have been refused.
  check(!accepted);
  fuzz_file(fixed);
  return 0;
}
