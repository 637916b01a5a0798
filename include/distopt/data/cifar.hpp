// CIFAR-100 in its official binary form: reading and writing the record files and label names.
//
// The binary version (https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz) unpacks to
//
//   cifar-100-binary/
//     train.bin               50,000 records
//     test.bin                10,000 records
//     fine_label_names.txt    100 lines, one name per line, in label order
//     coarse_label_names.txt  20 lines, likewise
//
// A record is 3074 bytes, with no header before the first record and nothing between records:
//
//   byte 0           coarse label, 0..19
//   byte 1           fine label, 0..99
//   bytes 2..3073    the pixels: the 1024 red values, then the 1024 green, then the 1024 blue,
//                    each plane row-major 32x32; pixel (c, y, x) is byte 2 + c*1024 + y*32 + x
//
// Record i starts at byte offset i*3074. The pixel part of a record is exactly one [3, 32, 32]
// image in C order, so `LabelledImages::images` holds the records' pixels back to back.
//
// Errors: std::invalid_argument for bad content (a size that is not a whole number of records, an
// unexpected record count, a label out of range, a wrong number of names, bad input to a writer);
// std::runtime_error for I/O failures (a file that is missing or unreadable, a failed write). Every
// message names the file and, for a record, its index (from 0) and byte offset.
//
// parse_cifar100_records and parse_label_names do the same on bytes already in memory (a caller
// that has them, and fuzz/fuzz_cifar_reader.cpp), naming a `source_name` where the readers name
// the file; the file readers are built on the same checks, so both report identical errors.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xtensor/xtensor.hpp>

#include "distopt/core/io.hpp"
#include "distopt/core/error.hpp"
#include "distopt/data/images.hpp"

namespace distopt::data {

/// Geometry of the CIFAR-100 binary format (see the top of this header).
namespace cifar100 {
inline constexpr std::size_t channels = 3;
inline constexpr std::size_t height = 32;
inline constexpr std::size_t width = 32;
inline constexpr std::size_t pixels_per_image = channels * height * width;  // 3072
inline constexpr std::size_t record_bytes = 2 + pixels_per_image;          // 3074
inline constexpr std::size_t fine_classes = 100;
inline constexpr std::size_t coarse_classes = 20;
inline constexpr std::size_t train_records = 50'000;
inline constexpr std::size_t test_records = 10'000;
inline constexpr std::string_view folder_name = "cifar-100-binary";
inline constexpr std::string_view source_url = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
}  // namespace cifar100

/// The whole of CIFAR-100: both splits and the names of the labels (`fine_names[label]`).
struct Cifar100 {
  LabelledImages train, test;
  std::vector<std::string> fine_names, coarse_names;
};

/// How many records `load_cifar100` expects in each split; std::nullopt accepts any number
/// (the library's synthetic data and the tests write small files).
struct Cifar100Options {
  std::optional<std::size_t> train_records = cifar100::train_records;
  std::optional<std::size_t> test_records = cifar100::test_records;
};

namespace detail::cifar {

[[noreturn]] inline void os_error(std::string_view what, const std::filesystem::path& file, int err) {
  fail<std::runtime_error>(what, " '", file.string(), "': ", std::generic_category().message(err));
}

/// An open file descriptor, closed on scope exit; `size` is the byte size of the regular file.
struct InputFile {
  explicit InputFile(const std::filesystem::path& file) : path(file) {
    fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) os_error("cannot open", file, errno);
    struct ::stat info {};
    if (::fstat(fd, &info) != 0) os_error("cannot stat", file, errno);
    if (!S_ISREG(info.st_mode)) os_error("cannot read", file, EISDIR);
    size = static_cast<std::size_t>(info.st_size);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() { ::close(fd); }

  /// Fills `out` from the current position; std::runtime_error if the file ends first.
  void read(std::span<std::uint8_t> out, std::size_t offset) {
    std::size_t filled = 0;
    while (filled < out.size()) {
      const ::ssize_t got = ::read(fd, out.data() + filled, out.size() - filled);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) os_error("cannot read", path, errno);
      if (got == 0)
        fail<std::runtime_error>("cannot read '", path.string(), "': the file ended at byte offset ", offset + filled,
                                 " while being read (it shrank after it was opened)");
      filled += static_cast<std::size_t>(got);
    }
  }

  std::filesystem::path path;
  int fd = -1;
  std::size_t size = 0;
};

inline void check_labels(std::string_view where, std::size_t record, std::uint8_t coarse, std::uint8_t fine) {
  const std::size_t offset = record * cifar100::record_bytes;
  if (coarse >= cifar100::coarse_classes)
    fail(where, ": record ", record, " (byte offset ", offset, "): coarse label ", unsigned{coarse},
         " is outside [0, ", cifar100::coarse_classes, ")");
  if (fine >= cifar100::fine_classes)
    fail(where, ": record ", record, " (byte offset ", offset, "): fine label ", unsigned{fine},
         " is outside [0, ", cifar100::fine_classes, ")");
}

/// Records processed per read or write: about 3 MB.
inline constexpr std::size_t chunk_records = 1024;

/// The number of records in `size` bytes of `source`; std::invalid_argument naming the partial
/// record and its offset if `size` is not whole records, or the count if it is not `expected`.
inline std::size_t count_records(std::string_view source, std::size_t size, std::optional<std::size_t> expected) {
  using namespace cifar100;
  const std::size_t records = size / record_bytes;
  if (const std::size_t rest = size % record_bytes; rest != 0)
    fail(source, ": truncated: ", size, " bytes is ", records, " whole records of ", record_bytes, " bytes and ",
         rest, " bytes of record ", records, " (byte offset ", records * record_bytes, ")");
  if (expected && records != *expected) fail(source, ": holds ", records, " records, expected ", *expected);
  return records;
}

/// Room for `records` images and their labels, filled by decode_records.
inline LabelledImages allocate_records(std::size_t records) {
  using namespace cifar100;
  LabelledImages out;
  out.images = xt::xtensor<std::uint8_t, 4>::from_shape({records, channels, height, width});
  out.fine.resize(records);
  out.coarse.resize(records);
  return out;
}

/// Checks and unpacks the whole records in `bytes` into records `first`, `first + 1`, ... of
/// `out`; the one place a record is validated, so the file and in-memory readers report the
/// same errors.
inline void decode_records(std::string_view source, std::span<const std::uint8_t> bytes, std::size_t first,
                           LabelledImages& out) {
  using namespace cifar100;
  const std::size_t count = bytes.size() / record_bytes;
  std::uint8_t* pixels = out.images.data();
  for (std::size_t k = 0; k < count; ++k) {
    const std::uint8_t* record = bytes.data() + k * record_bytes;
    check_labels(source, first + k, record[0], record[1]);
    out.coarse[first + k] = record[0];
    out.fine[first + k] = record[1];
    std::memcpy(pixels + (first + k) * pixels_per_image, record + 2, pixels_per_image);
  }
}

}  // namespace detail::cifar

/// Parses CIFAR-100 records held in memory (the bytes of a record file); `source_name` stands for
/// the file name in error messages. Same checks and messages as read_cifar100_records: throws
/// std::invalid_argument naming `source_name`, the record and its byte offset if the size is not
/// a whole number of records, the count differs from `expected_records`, or a label is out of range.
[[nodiscard]] inline LabelledImages parse_cifar100_records(std::span<const std::uint8_t> bytes,
                                                           std::string_view source_name,
                                                           std::optional<std::size_t> expected_records = std::nullopt) {
  const std::size_t records = detail::cifar::count_records(source_name, bytes.size(), expected_records);
  LabelledImages out = detail::cifar::allocate_records(records);
  detail::cifar::decode_records(source_name, bytes, 0, out);
  return out;
}

/// Reads a CIFAR-100 record file (train.bin, test.bin, or one written by write_cifar100_records).
/// `expected_records`, when given, is the number of records the file must hold.
/// Throws std::runtime_error if the file is missing or cannot be read (with the OS error), and
/// std::invalid_argument naming the file, the record and its byte offset if the size is not a
/// whole number of records, the count differs from `expected_records`, or a label is out of range.
[[nodiscard]] inline LabelledImages read_cifar100_records(const std::filesystem::path& file,
                                                          std::optional<std::size_t> expected_records = std::nullopt) {
  using namespace cifar100;
  detail::cifar::InputFile input(file);
  const std::string name = file.string();
  const std::size_t records = detail::cifar::count_records(name, input.size, expected_records);
  LabelledImages out = detail::cifar::allocate_records(records);
  // Chunked rather than read whole, so a 150 MB train.bin is not held twice.
  std::vector<std::uint8_t> buffer(std::min(records, detail::cifar::chunk_records) * record_bytes);
  for (std::size_t first = 0; first < records; first += detail::cifar::chunk_records) {
    const std::size_t count = std::min(detail::cifar::chunk_records, records - first);
    const std::span<std::uint8_t> chunk(buffer.data(), count * record_bytes);
    input.read(chunk, first * record_bytes);
    detail::cifar::decode_records(name, chunk, first, out);
  }
  return out;
}

/// Writes `data` as a CIFAR-100 record file, the exact inverse of read_cifar100_records. The
/// bytes go to a temporary file beside `file`, fsync'ed and renamed over it, so a failure never
/// leaves a partial file (and leaves an existing `file` as it was).
/// Throws std::invalid_argument, before touching the disk, if `images` is not [N, 3, 32, 32] with
/// N = fine.size() = coarse.size() or a label is out of range (naming the record), and
/// std::runtime_error with the OS error if the file cannot be written.
inline void write_cifar100_records(const std::filesystem::path& file, const LabelledImages& data) {
  using namespace cifar100;
  const std::string where = message("write_cifar100_records '", file.string(), "'");
  const auto& shape = data.images.shape();
  const std::size_t records = shape[0];
  if (shape[1] != channels || shape[2] != height || shape[3] != width)
    fail(where, ": images have shape [", shape[0], ", ", shape[1], ", ", shape[2], ", ", shape[3],
         "], expected [N, 3, 32, 32]");
  require(data.fine.size() == records && data.coarse.size() == records, where, ": ", records, " images but ",
          data.fine.size(), " fine and ", data.coarse.size(), " coarse labels");
  for (std::size_t i = 0; i < records; ++i) detail::cifar::check_labels(where, i, data.coarse[i], data.fine[i]);

  io::AtomicFile out(file, where);
  std::vector<std::uint8_t> buffer(std::min(records, detail::cifar::chunk_records) * record_bytes);
  const std::uint8_t* pixels = data.images.data();
  for (std::size_t first = 0; first < records; first += detail::cifar::chunk_records) {
    const std::size_t count = std::min(detail::cifar::chunk_records, records - first);
    for (std::size_t k = 0; k < count; ++k) {
      std::uint8_t* record = buffer.data() + k * record_bytes;
      record[0] = data.coarse[first + k];
      record[1] = data.fine[first + k];
      std::memcpy(record + 2, pixels + (first + k) * pixels_per_image, pixels_per_image);
    }
    out.write(std::span<const std::uint8_t>(buffer.data(), count * record_bytes));
  }
  out.commit();
}

/// Parses the text of a label-name file: one name per line, '\r' before a line end stripped,
/// trailing empty lines ignored; `source_name` stands for the file name in error messages.
/// Throws std::invalid_argument naming `source_name` if the text holds other than `expected`
/// names, an empty line before the last name, or a '\r' anywhere else in a line.
[[nodiscard]] inline std::vector<std::string> parse_label_names(std::string_view text, std::string_view source_name,
                                                                std::size_t expected) {
  std::vector<std::string> names;
  for (std::size_t begin = 0; begin < text.size();) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(begin, end - begin);
    if (line.ends_with('\r')) line.remove_suffix(1);
    names.emplace_back(line);
    begin = end + 1;
  }
  while (!names.empty() && names.back().empty()) names.pop_back();
  for (std::size_t i = 0; i < names.size(); ++i) {
    require(!names[i].empty(), source_name, ": line ", i + 1, " is empty; every label needs a name");
    // A '\r' left inside a name ("\n\r" line ends, a stray byte) is no line end we know; keeping
    // it would give a name write_label_names refuses and that prints as garbage (found by
    // fuzz/fuzz_cifar_reader.cpp).
    require(names[i].find('\r') == std::string::npos, source_name, ": line ", i + 1,
            " holds a carriage return ('\\r') before its end; a name is one line");
  }
  require(names.size() == expected, source_name, ": holds ", names.size(), " label names, expected ", expected);
  return names;
}

/// Reads a label-name file (fine_label_names.txt, coarse_label_names.txt) and parses it with
/// parse_label_names. Throws std::invalid_argument naming the file if it holds other than
/// `expected` names, an empty line before the last name or a stray '\r' (see parse_label_names),
/// std::runtime_error if it cannot be read.
[[nodiscard]] inline std::vector<std::string> read_label_names(const std::filesystem::path& file,
                                                               std::size_t expected) {
  detail::cifar::InputFile input(file);
  std::string text(input.size, '\0');
  input.read(std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(text.data()), text.size()), 0);
  return parse_label_names(text, file.string(), expected);
}

/// Writes one name per line ('\n' after each), atomically like write_cifar100_records.
/// Throws std::invalid_argument, before touching the disk, for an empty name or one containing
/// '\n' or '\r' (naming its index), std::runtime_error if the file cannot be written.
inline void write_label_names(const std::filesystem::path& file, const std::vector<std::string>& names) {
  const std::string where = message("write_label_names '", file.string(), "'");
  std::string text;
  for (std::size_t i = 0; i < names.size(); ++i) {
    require(!names[i].empty() && names[i].find_first_of("\r\n") == std::string::npos, where, ": name ", i,
            " is empty or holds a line break");
    text += names[i];
    text += '\n';
  }
  io::AtomicFile out(file, where);
  out.write(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  out.commit();
}

/// Loads CIFAR-100 from `folder`: either the folder that contains `cifar-100-binary/` or that
/// folder itself. By default the splits must hold 50,000 and 10,000 records; `options` sets
/// other counts or none. Throws std::runtime_error naming the expected path and where the data
/// comes from if a file is missing, and the errors of read_cifar100_records and read_label_names.
[[nodiscard]] inline Cifar100 load_cifar100(const std::filesystem::path& folder, const Cifar100Options& options = {}) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path nested = folder / cifar100::folder_name;
  const fs::path root = fs::is_directory(nested, ec) ? nested : folder;
  const auto need = [&](std::string_view name) {
    fs::path path = root / name;
    if (!fs::exists(path, ec))
      fail<std::runtime_error>("load_cifar100: no file '", path.string(), "'; CIFAR-100 comes from ",
                               cifar100::source_url, ", to be unpacked in '", folder.string(), "' (giving '",
                               (folder / cifar100::folder_name / name).string(), "')");
    return path;
  };
  Cifar100 data;
  data.train = read_cifar100_records(need("train.bin"), options.train_records);
  data.test = read_cifar100_records(need("test.bin"), options.test_records);
  data.fine_names = read_label_names(need("fine_label_names.txt"), cifar100::fine_classes);
  data.coarse_names = read_label_names(need("coarse_label_names.txt"), cifar100::coarse_classes);
  return data;
}

/// The description the pipeline reads: 3 x 32 x 32 images, the 100 fine classes and their names.
[[nodiscard]] inline DatasetInfo cifar100_info(std::vector<std::string> fine_names = {}) {
  return {.name = "CIFAR-100", .shape = {cifar100::channels, cifar100::height, cifar100::width},
          .classes = cifar100::fine_classes, .class_names = std::move(fine_names)};
}

/// CIFAR-100 as an ImageDataset: fine labels as the classes, coarse labels kept beside them.
[[nodiscard]] inline ImageDataset to_dataset(const Cifar100& source) {
  return {.info = cifar100_info(source.fine_names), .train = source.train, .test = source.test};
}

}  // namespace distopt::data
