// The IDX format of MNIST and Fashion-MNIST (LeCun et al. 1998; Xiao, Rasul, Vollgraf 2017,
// "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms"), plain or
// gzipped, read into the same uint8 arrays as the CIFAR-100 reader.
//
// An IDX file is a big-endian header and the data in C order, nothing after it:
//
//   bytes 0..3   magic 0x00 0x00 <type> <dims>: type 0x08 = uint8; dims 3 for images, 1 for labels
//   bytes 4..    one uint32 per dimension: N (items), then rows and columns for images
//   then         N * rows * cols pixel bytes (row-major, 0 = background), or N label bytes
//
// Debian's dataset-fashion-mnist installs the four files of the official release, gzipped, in
// /usr/share/datasets/fashion-mnist/. A file that starts with the gzip magic (1f 8b) is inflated
// with zlib first; any other file is read as it is, so unpacked MNIST folders work too.
//
// Errors: std::invalid_argument for bad content (wrong magic, a zero dimension, a size that does
// not match the header, a label out of range, counts of images and labels that differ, a corrupt
// gzip stream), std::runtime_error for I/O failures; every message names the file and the byte
// offset (of the decompressed data; for a corrupt gzip stream, of the compressed input).
// parse_idx_images and parse_idx_labels work on bytes in memory (fuzz/fuzz_idx_reader.cpp).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <zlib.h>

#include "distopt/core/io.hpp"
#include "distopt/core/error.hpp"
#include "distopt/data/images.hpp"

namespace distopt::data {

/// Where Debian's dataset-fashion-mnist puts the four gzipped IDX files.
inline constexpr std::string_view fashion_mnist_folder = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's description: 1 x 28 x 28 grey images, 10 classes of clothing.
[[nodiscard]] inline DatasetInfo fashion_mnist_info() {
  return {.name = "Fashion-MNIST",
          .shape = {1, 28, 28},
          .classes = 10,
          .class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}};
}

/// MNIST's description: 1 x 28 x 28 grey images of the digits 0 to 9.
[[nodiscard]] inline DatasetInfo mnist_info() {
  return {.name = "MNIST", .shape = {1, 28, 28}, .classes = 10, .class_names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}};
}

namespace detail::idx {

inline std::uint32_t big_endian(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | std::uint32_t{p[3]};
}

/// The dimensions after the header of an IDX file of `dims` dimensions of uint8, checked
/// against the size of `bytes`, so a header that claims more than the file holds is refused
/// before anything is allocated.
inline std::vector<std::size_t> header(std::span<const std::uint8_t> bytes, std::string_view source, std::size_t dims) {
  require(bytes.size() >= 4, "IDX file '", source, "': ", bytes.size(), " bytes, shorter than the 4-byte magic at offset 0");
  const std::uint32_t magic = big_endian(bytes.data());
  const std::uint32_t expected = 0x0800u | static_cast<std::uint32_t>(dims);
  if (magic != expected) {
    char found[16];
    std::snprintf(found, sizeof found, "0x%08x", magic);
    char wanted[16];
    std::snprintf(wanted, sizeof wanted, "0x%08x", expected);
    fail("IDX file '", source, "': magic at offset 0 is ", found, ", expected ", wanted, " (uint8, ", dims,
         dims == 1 ? " dimension: labels)" : " dimensions: images)");
  }
  const std::size_t header_bytes = 4 + 4 * dims;
  require(bytes.size() >= header_bytes, "IDX file '", source, "': truncated header, the file ends at byte offset ", bytes.size(),
          " but the header of ", dims, " dimension(s) needs ", header_bytes, " bytes");
  std::vector<std::size_t> shape(dims);
  std::size_t items = 1;
  for (std::size_t d = 0; d < dims; ++d) {
    shape[d] = big_endian(bytes.data() + 4 + 4 * d);
    require(shape[d] > 0, "IDX file '", source, "': dimension ", d, " (at byte offset ", 4 + 4 * d, ") is 0");
    require(items <= std::numeric_limits<std::size_t>::max() / shape[d], "IDX file '", source, "': dimension ", d,
            " (at byte offset ", 4 + 4 * d, ") makes the size overflow");
    items *= shape[d];
  }
  const std::size_t data = bytes.size() - header_bytes;
  require(data >= items, "IDX file '", source, "': truncated, the data ends at byte offset ", bytes.size(), " but the header (",
          shape, ") needs ", header_bytes + items, " bytes");
  require(data == items, "IDX file '", source, "': ", data - items, " trailing byte(s) after the data, from byte offset ",
          header_bytes + items);
  return shape;
}

inline bool gzipped(std::span<const std::uint8_t> bytes) { return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b; }

}  // namespace detail::idx

/// Inflates a gzip stream held in memory. Throws std::invalid_argument naming `source_name`, the
/// compressed offset reached and zlib's reason for a corrupt or truncated stream.
[[nodiscard]] inline std::vector<std::uint8_t> gunzip(std::span<const std::uint8_t> compressed, std::string_view source_name) {
  z_stream z{};
  // 15 + 32: the largest window, with the gzip (or zlib) header detected by zlib.
  require<std::runtime_error>(inflateInit2(&z, 15 + 32) == Z_OK, "gunzip '", source_name, "': zlib cannot start: ",
                              z.msg ? z.msg : "inflateInit2 failed");
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&z};
  std::vector<std::uint8_t> out(std::max<std::size_t>(compressed.size() * 4, 1 << 16));
  std::size_t in_done = 0, out_done = 0;
  for (;;) {
    // zlib counts in uInt: feed and drain at most 1 GiB per call.
    constexpr std::size_t step = std::size_t{1} << 30;
    z.next_in = const_cast<Bytef*>(compressed.data() + in_done);
    z.avail_in = static_cast<uInt>(std::min(step, compressed.size() - in_done));
    if (out_done == out.size()) out.resize(out.size() * 2);
    z.next_out = out.data() + out_done;
    z.avail_out = static_cast<uInt>(std::min(step, out.size() - out_done));
    const uInt in_before = z.avail_in, out_before = z.avail_out;
    const int status = inflate(&z, Z_NO_FLUSH);
    in_done += in_before - z.avail_in;
    out_done += out_before - z.avail_out;
    if (status == Z_STREAM_END) {
      // Concatenated members (gzip allows them) would be silently dropped: refuse them instead.
      require(in_done == compressed.size(), "gunzip '", source_name, "': ", compressed.size() - in_done,
              " byte(s) after the end of the gzip stream at compressed offset ", in_done);
      break;
    }
    if (status == Z_BUF_ERROR && in_done == compressed.size() && z.avail_out > 0)
      fail("gunzip '", source_name, "': truncated gzip stream, it ends at compressed offset ", in_done, " before its end marker");
    require(status == Z_OK || status == Z_BUF_ERROR, "gunzip '", source_name, "': corrupt gzip stream at compressed offset ", in_done,
            ": ", z.msg ? z.msg : "zlib error");
  }
  out.resize(out_done);
  return out;
}

/// The content of an IDX file held in memory: inflated when it is gzipped, else as it is.
[[nodiscard]] inline std::vector<std::uint8_t> idx_bytes(std::span<const std::uint8_t> file_bytes, std::string_view source_name) {
  if (detail::idx::gzipped(file_bytes)) return gunzip(file_bytes, source_name);
  return {file_bytes.begin(), file_bytes.end()};
}

/// Images of an IDX file (after decompression) as [N, 1, rows, cols].
[[nodiscard]] inline xt::xtensor<std::uint8_t, 4> parse_idx_images(std::span<const std::uint8_t> bytes, std::string_view source_name) {
  const auto shape = detail::idx::header(bytes, source_name, 3);
  auto images = xt::xtensor<std::uint8_t, 4>::from_shape({shape[0], 1, shape[1], shape[2]});
  std::memcpy(images.data(), bytes.data() + 16, images.size());
  return images;
}

/// Labels of an IDX file (after decompression); each below `classes`, else std::invalid_argument
/// naming the record and its byte offset.
[[nodiscard]] inline std::vector<std::uint8_t> parse_idx_labels(std::span<const std::uint8_t> bytes, std::string_view source_name,
                                                               std::size_t classes) {
  static_cast<void>(detail::idx::header(bytes, source_name, 1));
  std::vector<std::uint8_t> labels(bytes.begin() + 8, bytes.end());
  for (std::size_t i = 0; i < labels.size(); ++i)
    require(labels[i] < classes, "IDX file '", source_name, "': label of record ", i, " (byte offset ", 8 + i, ") is ",
            int{labels[i]}, ", must be below ", classes);
  return labels;
}

/// The decompressed content of an IDX file on disk (gzipped or plain).
[[nodiscard]] inline std::vector<std::uint8_t> read_idx_file(const std::filesystem::path& file) {
  const std::vector<std::uint8_t> raw = io::read_file(file);
  return idx_bytes(raw, file.string());
}

[[nodiscard]] inline xt::xtensor<std::uint8_t, 4> read_idx_images(const std::filesystem::path& file) {
  return parse_idx_images(read_idx_file(file), file.string());
}

[[nodiscard]] inline std::vector<std::uint8_t> read_idx_labels(const std::filesystem::path& file, std::size_t classes) {
  return parse_idx_labels(read_idx_file(file), file.string(), classes);
}

namespace detail::idx {

/// `name.gz` when it exists, else `name`, in `folder`; std::runtime_error naming both if neither does.
inline std::filesystem::path find(const std::filesystem::path& folder, const std::string& name) {
  for (const std::string& candidate : {name + ".gz", name})
    if (std::filesystem::exists(folder / candidate)) return folder / candidate;
  fail<std::runtime_error>("IDX data in '", folder.string(), "': neither ", name, ".gz nor ", name,
                           " is there (Fashion-MNIST: install Debian's dataset-fashion-mnist)");
}

struct Split {
  LabelledImages set;
  std::filesystem::path images_file;
};

inline Split read_split(const std::filesystem::path& folder, const std::string& prefix, std::size_t classes) {
  Split out{.set = {}, .images_file = find(folder, prefix + "-images-idx3-ubyte")};
  const auto labels_file = find(folder, prefix + "-labels-idx1-ubyte");
  out.set.images = read_idx_images(out.images_file);
  out.set.fine = read_idx_labels(labels_file, classes);
  require(out.set.fine.size() == out.set.size(), "IDX data: '", out.images_file.string(), "' holds ", out.set.size(),
          " images but '", labels_file.string(), "' ", out.set.fine.size(), " labels (the counts at byte offset 4)");
  return out;
}

}  // namespace detail::idx

/// The two splits of an IDX data set in `folder` (train-* and t10k-* images and labels, each
/// gzipped or plain) with `info` describing them; `info.shape` is taken from the files, whose
/// images must agree in size.
[[nodiscard]] inline ImageDataset load_idx_dataset(const std::filesystem::path& folder, DatasetInfo info = fashion_mnist_info()) {
  ImageDataset out{.info = std::move(info), .train = {}, .test = {}};
  auto train = detail::idx::read_split(folder, "train", out.info.classes);
  auto test = detail::idx::read_split(folder, "t10k", out.info.classes);
  out.train = std::move(train.set);
  out.test = std::move(test.set);
  require(out.train.shape() == out.test.shape(), "IDX data in '", folder.string(), "': the images of '", train.images_file.string(),
          "' are ", out.train.shape().height, " x ", out.train.shape().width, " but those of '", test.images_file.string(), "' ",
          out.test.shape().height, " x ", out.test.shape().width, " (rows and columns at byte offsets 8 and 12)");
  out.info.shape = out.train.shape();
  return out;
}

/// Fashion-MNIST from `folder` (by default where Debian installs it).
[[nodiscard]] inline ImageDataset load_fashion_mnist(const std::filesystem::path& folder = std::string(fashion_mnist_folder)) {
  return load_idx_dataset(folder, fashion_mnist_info());
}

}  // namespace distopt::data
