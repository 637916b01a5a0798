// libFuzzer target for the IDX readers (Fashion-MNIST, MNIST): idx_bytes (gzip detection and
// inflation through zlib) followed by parse_idx_images or parse_idx_labels, the in-memory path
// that read_idx_images and read_idx_labels take after reading the file. See fuzz/README.md.
//
// Input layout, so that one corpus drives both parsers:
//
//   byte 0   bit 0: 0 = images (3 dimensions), 1 = labels (1 dimension)
//   byte 1   labels only: the number of classes (10 for Fashion-MNIST); 0 refuses every label
//   rest     the file's bytes, gzipped or plain
//
// Missing header bytes count as 0, so every input, even an empty one, is a valid test case.
// The readers may throw only std::invalid_argument (bad content) or std::runtime_error (zlib
// cannot start), each naming the source; anything else escapes to libFuzzer and is reported.
// When a parser succeeds its result must be the file's content, and a violation traps.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "distopt/data/idx.hpp"

namespace {

constexpr std::string_view source_name = "<fuzz input>";

// Not assert(): the release build defines NDEBUG, and a broken invariant must always stop the run.
void check(bool invariant) {
  if (!invariant) __builtin_trap();
}

void check_message(const std::exception& error) { check(std::string_view(error.what()).find(source_name) != std::string_view::npos); }

/// Runs `parse`: true when it returned, false when it threw one of the readers' documented
/// exceptions (whose message must name the source); anything else escapes to libFuzzer.
template <class Parse>
bool parses(Parse&& parse) {
  try {
    parse();
    return true;
  } catch (const std::invalid_argument& error) {
    check_message(error);
  } catch (const std::runtime_error& error) {
    check_message(error);
  }
  return false;
}

using distopt::data::detail::idx::big_endian;

void fuzz_images(std::span<const std::uint8_t> file) {
  std::vector<std::uint8_t> bytes;
  xt::xtensor<std::uint8_t, 4> images;
  if (!parses([&] {
        bytes = distopt::data::idx_bytes(file, source_name);
        images = distopt::data::parse_idx_images(bytes, source_name);
      }))
    return;
  // The header is the shape, the data are the pixels, and nothing is left over.
  const auto& shape = images.shape();
  check(bytes.size() == 16 + images.size());
  check(big_endian(bytes.data()) == 0x0803u);
  check(shape[0] == big_endian(bytes.data() + 4) && shape[1] == 1 && shape[2] == big_endian(bytes.data() + 8) &&
        shape[3] == big_endian(bytes.data() + 12));
  check(std::memcmp(images.data(), bytes.data() + 16, images.size()) == 0);
}

void fuzz_labels(std::span<const std::uint8_t> file, std::size_t classes) {
  std::vector<std::uint8_t> bytes;
  std::vector<std::uint8_t> labels;
  if (!parses([&] {
        bytes = distopt::data::idx_bytes(file, source_name);
        labels = distopt::data::parse_idx_labels(bytes, source_name, classes);
      }))
    return;
  check(bytes.size() == 8 + labels.size());
  check(big_endian(bytes.data()) == 0x0801u && big_endian(bytes.data() + 4) == labels.size());
  for (std::size_t i = 0; i < labels.size(); ++i) check(labels[i] < classes && labels[i] == bytes[8 + i]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::uint8_t mode = size > 0 ? data[0] : 0;
  const std::size_t classes = size > 1 ? data[1] : 0;
  const std::size_t header = size < 2 ? size : 2;
  const std::span<const std::uint8_t> file(data + header, size - header);
  if ((mode & 1U) == 0) {
    fuzz_images(file);
  } else {
    fuzz_labels(file, classes);
  }
  return 0;
}
