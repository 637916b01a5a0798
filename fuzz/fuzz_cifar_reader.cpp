// libFuzzer target for the CIFAR-100 readers: parse_cifar100_records and parse_label_names, the
// in-memory halves of read_cifar100_records and read_label_names (the file readers share their
// checks). See fuzz/README.md for building and running it.
//
// Input layout, so that one corpus drives both parsers and their count checks:
//
//   byte 0   bit 0: 0 = record parser, 1 = label-name parser
//            bit 1: record parser only: 1 = pass byte 1 as expected_records, 0 = std::nullopt
//   byte 1   the expected count (label names always take it; 20 and 100 are the real ones)
//   rest     the bytes handed to the parser
//
// Missing header bytes count as 0, so every input, even an empty one, is a valid test case.
// A parser may throw only its documented exceptions (std::invalid_argument for bad content,
// std::runtime_error for I/O); anything else escapes to libFuzzer and is reported. When a parser
// succeeds, its result must satisfy the format's invariants, and a violation traps.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "distopt/data/cifar.hpp"

namespace {

namespace cifar100 = distopt::data::cifar100;

constexpr std::string_view source_name = "<fuzz input>";

// Not assert(): the release build defines NDEBUG, and a broken invariant must always stop the run.
void check(bool invariant) {
  if (!invariant) __builtin_trap();
}

// Every message the parsers throw names its source (the file name, for the file readers).
void check_message(const std::exception& error) {
  check(std::string_view(error.what()).find(source_name) != std::string_view::npos);
}

void fuzz_records(std::span<const std::uint8_t> bytes, std::optional<std::size_t> expected) {
  using namespace cifar100;
  distopt::data::LabelledImages out;
  try {
    out = distopt::data::parse_cifar100_records(bytes, source_name, expected);
  } catch (const std::invalid_argument& error) {
    check_message(error);
    return;
  } catch (const std::runtime_error& error) {
    check_message(error);
    return;
  }
  const std::size_t n = out.size();
  const auto& shape = out.images.shape();
  check(shape[0] == n && shape[1] == channels && shape[2] == height && shape[3] == width);
  check(n * record_bytes == bytes.size());
  check(!expected || *expected == n);
  check(out.fine.size() == n && out.coarse.size() == n);
  check(out.images.size() == n * pixels_per_image);
  // The result is the input, unpacked: labels in range and equal to the label bytes, pixels equal
  // to the rest of each record (what write_cifar100_records would write back).
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* record = bytes.data() + i * record_bytes;
    check(out.coarse[i] < coarse_classes && out.fine[i] < fine_classes);
    check(out.coarse[i] == record[0] && out.fine[i] == record[1]);
    check(std::memcmp(out.images.data() + i * pixels_per_image, record + 2, pixels_per_image) == 0);
  }
}

void fuzz_label_names(std::string_view text, std::size_t expected) {
  std::vector<std::string> names;
  try {
    names = distopt::data::parse_label_names(text, source_name, expected);
  } catch (const std::invalid_argument& error) {
    check_message(error);
    return;
  } catch (const std::runtime_error& error) {
    check_message(error);
    return;
  }
  check(names.size() == expected);
  std::string rewritten;  // what write_label_names would write
  for (const std::string& name : names) {
    check(!name.empty() && name.find_first_of("\r\n") == std::string::npos);
    rewritten += name;
    rewritten += '\n';
  }
  // What the parser accepts, the writer can write, and reading that back gives the same names.
  check(distopt::data::parse_label_names(rewritten, source_name, expected) == names);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::uint8_t mode = size > 0 ? data[0] : 0;
  const std::size_t count = size > 1 ? data[1] : 0;
  const std::size_t header = size < 2 ? size : 2;
  const std::span<const std::uint8_t> payload(data + header, size - header);
  if ((mode & 1U) == 0) {
    fuzz_records(payload, (mode & 2U) != 0 ? std::optional<std::size_t>(count) : std::nullopt);
  } else {
    fuzz_label_names(std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()), count);
  }
  return 0;
}
