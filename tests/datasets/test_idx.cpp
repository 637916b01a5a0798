#include "distopt/data/idx.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <zlib.h>

#include "../support/files.hpp"

using distopt::message;
using distopt::data::ImageDataset;
using distopt::data::ImageShape;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;
using Catch::Matchers::StartsWith;
namespace fs = std::filesystem;
namespace data = distopt::data;

namespace {

using test_support::Bytes;
using test_support::read_bytes;
using test_support::write_bytes;
using TempDir = test_support::TempDir;

void put_u32(Bytes& out, std::uint32_t value) {
  for (const int shift : {24, 16, 8, 0}) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

// The header of an IDX file of uint8 with the given dimensions.
Bytes idx_header(std::initializer_list<std::uint32_t> dims) {
  Bytes out{0x00, 0x00, 0x08, static_cast<std::uint8_t>(dims.size())};
  for (const std::uint32_t d : dims) put_u32(out, d);
  return out;
}

std::uint8_t pixel_value(std::size_t image, std::size_t y, std::size_t x) {
  return static_cast<std::uint8_t>((image * 37 + y * 11 + x * 3 + (image * y * x) % 5) % 256);
}

// An images file of `n` images of `rows` x `cols` patterned pixels.
Bytes image_file(std::uint32_t n, std::uint32_t rows, std::uint32_t cols) {
  Bytes out = idx_header({n, rows, cols});
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t y = 0; y < rows; ++y)
      for (std::size_t x = 0; x < cols; ++x) out.push_back(pixel_value(i, y, x));
  return out;
}

Bytes label_file(const std::vector<std::uint8_t>& labels) {
  Bytes out = idx_header({static_cast<std::uint32_t>(labels.size())});
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

// `n` labels that cover 0 and 9, the ends of Fashion-MNIST's range.
std::vector<std::uint8_t> some_labels(std::size_t n) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<std::uint8_t>(i == 1 ? 9 : (i * 7) % 10));
  return out;
}

// A gzip file (RFC 1952) of `bytes`, written by zlib.
Bytes gzip(std::span<const std::uint8_t> bytes) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  Bytes out(deflateBound(&z, static_cast<uLong>(bytes.size())));
  z.next_in = const_cast<Bytef*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  const int status = deflate(&z, Z_FINISH);
  const std::size_t written = z.total_out;
  deflateEnd(&z);
  REQUIRE(status == Z_STREAM_END);
  out.resize(written);
  REQUIRE(out.size() > 18);
  REQUIRE(out[0] == 0x1f);
  REQUIRE(out[1] == 0x8b);
  return out;
}

// Every pixel of `images` ([N, 1, rows, cols]) is pixel_value's.
void require_patterned(const xt::xtensor<std::uint8_t, 4>& images, std::size_t n, std::size_t rows, std::size_t cols) {
  REQUIRE(images.shape()[0] == n);
  REQUIRE(images.shape()[1] == 1);
  REQUIRE(images.shape()[2] == rows);
  REQUIRE(images.shape()[3] == cols);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t y = 0; y < rows; ++y)
      for (std::size_t x = 0; x < cols; ++x)
        if (images(i, 0, y, x) != pixel_value(i, y, x)) FAIL("image " << i << " pixel (" << y << ", " << x << ") is misplaced");
}

// The message of the `Error` that `call` throws; "no error" when it returns (any other exception
// escapes and fails the test).
template <class Error = std::invalid_argument, class Call>
std::string error_of(Call&& call) {
  try {
    static_cast<void>(call());
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

// The compressed offset in `what`, which must be `prefix` followed by a number and ": " and
// zlib's reason.
std::size_t offset_after(const std::string& what, const std::string& prefix) {
  REQUIRE_THAT(what, StartsWith(prefix));
  std::size_t end = prefix.size();
  while (end < what.size() && std::isdigit(static_cast<unsigned char>(what[end]))) ++end;
  REQUIRE(end > prefix.size());
  REQUIRE(what.substr(end, 2) == ": ");
  REQUIRE(what.size() > end + 2);  // zlib's reason
  return std::stoul(what.substr(prefix.size(), end - prefix.size()));
}

// The four files of an IDX data set in `dir`; each gzipped (with ".gz") when `gzipped`.
struct Files {
  Bytes train_images, train_labels, test_images, test_labels;
};

void write_set(const fs::path& dir, const Files& files, bool gzipped) {
  const auto put = [&](const std::string& name, const Bytes& bytes) {
    if (gzipped)
      write_bytes(dir / (name + ".gz"), gzip(bytes));
    else
      write_bytes(dir / name, bytes);
  };
  put("train-images-idx3-ubyte", files.train_images);
  put("train-labels-idx1-ubyte", files.train_labels);
  put("t10k-images-idx3-ubyte", files.test_images);
  put("t10k-labels-idx1-ubyte", files.test_labels);
}

Files small_set() {
  return {image_file(6, 28, 28), label_file(some_labels(6)), image_file(3, 28, 28), label_file({9, 0, 4})};
}

}  // namespace

TEST_CASE("IDX in memory: images and labels round trip, plain and gzipped", "[data][idx]") {
  const Bytes images = image_file(3, 4, 5);
  REQUIRE(images.size() == 16 + 3 * 4 * 5);
  REQUIRE(Bytes(images.begin(), images.begin() + 16) ==
          Bytes{0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5});
  const std::vector<std::uint8_t> labels{0, 9, 3, 3, 7};
  const Bytes label_bytes = label_file(labels);
  REQUIRE(label_bytes == Bytes{0, 0, 8, 1, 0, 0, 0, 5, 0, 9, 3, 3, 7});

  // Plain bytes pass idx_bytes unchanged and parse to the values they hold.
  REQUIRE(data::idx_bytes(images, "images") == images);
  REQUIRE(data::idx_bytes(label_bytes, "labels") == label_bytes);
  const auto parsed = data::parse_idx_images(images, "images");
  require_patterned(parsed, 3, 4, 5);
  REQUIRE(parsed(2, 0, 3, 4) == images.back());
  REQUIRE(parsed(0, 0, 0, 1) == images[17]);
  REQUIRE(data::parse_idx_labels(label_bytes, "labels", 10) == labels);
  // The class count is the only limit on a label.
  REQUIRE(data::parse_idx_labels(label_bytes, "labels", data::any_label) == labels);

  // Gzipped bytes inflate to the plain ones, and then parse the same.
  const Bytes images_gz = gzip(images);
  const Bytes labels_gz = gzip(label_bytes);
  REQUIRE(images_gz != images);
  REQUIRE(data::gunzip(images_gz, "images.gz") == images);
  REQUIRE(data::idx_bytes(images_gz, "images.gz") == images);
  REQUIRE(data::idx_bytes(labels_gz, "labels.gz") == label_bytes);
  require_patterned(data::parse_idx_images(data::idx_bytes(images_gz, "images.gz"), "images.gz"), 3, 4, 5);
  REQUIRE(data::parse_idx_labels(data::idx_bytes(labels_gz, "labels.gz"), "labels.gz", 10) == labels);

  // Larger than gunzip's first buffer (4 times the input, at least 64 KiB): it grows, and the
  // whole content comes out.
  const Bytes big = image_file(200, 28, 28);
  REQUIRE(big.size() > 2 * (std::size_t{1} << 16));
  const Bytes big_gz = gzip(big);
  REQUIRE(big_gz.size() * 4 < big.size());
  REQUIRE(data::idx_bytes(big_gz, "big.gz") == big);
  require_patterned(data::parse_idx_images(data::idx_bytes(big_gz, "big.gz"), "big.gz"), 200, 28, 28);

  // A one-pixel image and a single label are the smallest valid files.
  const auto tiny = data::parse_idx_images(Bytes{0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 255}, "tiny");
  REQUIRE(tiny.shape()[0] == 1);
  REQUIRE(tiny.size() == 1);
  REQUIRE(tiny(0, 0, 0, 0) == 255);
  REQUIRE(data::parse_idx_labels(Bytes{0, 0, 8, 1, 0, 0, 0, 1, 9}, "tiny", 10) == std::vector<std::uint8_t>{9});
}

TEST_CASE("IDX files: load_idx_dataset reads train-* and t10k-*, gzipped or plain", "[data][idx]") {
  const Files files = small_set();
  for (const bool gzipped : {true, false}) {
    CAPTURE(gzipped);
    const TempDir dir;
    write_set(dir.path(), files, gzipped);
    REQUIRE(fs::exists(dir / (gzipped ? "train-images-idx3-ubyte.gz" : "train-images-idx3-ubyte")));

    const ImageDataset set = data::load_idx_dataset(dir.path());
    REQUIRE(set.info.name == "Fashion-MNIST");
    REQUIRE(set.info.classes == 10);
    REQUIRE(set.info.class_names.size() == 10);
    REQUIRE(set.info.class_names[9] == "Ankle boot");
    REQUIRE(set.info.shape == ImageShape{1, 28, 28});
    REQUIRE(set.train.size() == 6);
    REQUIRE(set.test.size() == 3);
    REQUIRE(set.train.shape() == ImageShape{1, 28, 28});
    require_patterned(set.train.images, 6, 28, 28);
    require_patterned(set.test.images, 3, 28, 28);
    REQUIRE(set.train.fine == some_labels(6));
    REQUIRE(set.test.fine == std::vector<std::uint8_t>{9, 0, 4});
    REQUIRE_FALSE(set.train.has_coarse());
    REQUIRE_FALSE(set.test.has_coarse());

    // The one-file readers give the same content.
    const std::string suffix = gzipped ? ".gz" : "";
    require_patterned(data::read_idx_images(dir / ("t10k-images-idx3-ubyte" + suffix)), 3, 28, 28);
    REQUIRE(data::read_idx_labels(dir / ("train-labels-idx1-ubyte" + suffix), 10) == some_labels(6));
    REQUIRE(data::read_idx_file(dir / ("train-labels-idx1-ubyte" + suffix)) == files.train_labels);
  }

  // Mixed: some files gzipped, others not; another geometry, and the description passed in, whose
  // shape is taken from the files.
  const TempDir dir;
  write_bytes(dir / "train-images-idx3-ubyte.gz", gzip(image_file(4, 2, 3)));
  write_bytes(dir / "train-labels-idx1-ubyte", label_file({1, 2, 3, 4}));
  write_bytes(dir / "t10k-images-idx3-ubyte", image_file(2, 2, 3));
  write_bytes(dir / "t10k-labels-idx1-ubyte.gz", gzip(label_file({5, 6})));
  const ImageDataset mnist = data::load_idx_dataset(dir.path(), data::mnist_info());
  REQUIRE(mnist.info.name == "MNIST");
  REQUIRE(mnist.info.shape == ImageShape{1, 2, 3});
  require_patterned(mnist.train.images, 4, 2, 3);
  require_patterned(mnist.test.images, 2, 2, 3);
  REQUIRE(mnist.train.fine == std::vector<std::uint8_t>{1, 2, 3, 4});
  REQUIRE(mnist.test.fine == std::vector<std::uint8_t>{5, 6});

  // With both name.gz and name present, name.gz is read.
  write_bytes(dir / "train-labels-idx1-ubyte.gz", gzip(label_file({4, 3, 2, 1})));
  REQUIRE(data::load_idx_dataset(dir.path(), data::mnist_info()).train.fine == std::vector<std::uint8_t>{4, 3, 2, 1});
  // The description's class count bounds the labels.
  data::DatasetInfo four = data::mnist_info();
  four.classes = 4;
  REQUIRE_THROWS_WITH(data::load_idx_dataset(dir.path(), four),
                      Equals(message("IDX file '", (dir / "train-labels-idx1-ubyte.gz").string(),
                                     "': label of record 0 (byte offset 8) is 4, must be below 4")));
}

TEST_CASE("IDX errors: a wrong magic names the file, offset 0 and both magics", "[data][idx]") {
  const TempDir dir;
  const fs::path file = dir / "images";
  // A labels file read as images, and an images file read as labels.
  write_bytes(file, label_file({1, 2}));
  REQUIRE_THROWS_AS(data::read_idx_images(file), std::invalid_argument);
  REQUIRE_THROWS_WITH(data::read_idx_images(file),
                      Equals(message("IDX file '", file.string(),
                                     "': magic at offset 0 is 0x00000801, expected 0x00000803 (uint8, 3 dimensions: images)")));
  write_bytes(file, image_file(1, 2, 2));
  REQUIRE_THROWS_WITH(data::read_idx_labels(file, 10),
                      Equals(message("IDX file '", file.string(),
                                     "': magic at offset 0 is 0x00000803, expected 0x00000801 (uint8, 1 dimension: labels)")));
  // Another element type (0x0D: float), a nonzero first byte, a little-endian header.
  Bytes bad = image_file(1, 2, 2);
  bad[2] = 0x0d;
  REQUIRE_THROWS_WITH(data::parse_idx_images(bad, "floats"),
                      Equals("IDX file 'floats': magic at offset 0 is 0x00000d03, expected 0x00000803 (uint8, 3 dimensions: images)"));
  bad = image_file(1, 2, 2);
  bad[0] = 0x01;
  REQUIRE_THROWS_WITH(data::parse_idx_images(bad, "b"), StartsWith("IDX file 'b': magic at offset 0 is 0x01000803, expected"));
  REQUIRE_THROWS_WITH(data::parse_idx_labels(Bytes{1, 8, 0, 0, 1, 0, 0, 0, 0}, "le", 10),
                      StartsWith("IDX file 'le': magic at offset 0 is 0x01080000, expected 0x00000801"));
  // Shorter than the magic, empty included.
  write_bytes(file, Bytes{0, 0, 8});
  REQUIRE_THROWS_WITH(data::read_idx_images(file),
                      Equals(message("IDX file '", file.string(), "': 3 bytes, shorter than the 4-byte magic at offset 0")));
  REQUIRE_THROWS_WITH(data::parse_idx_labels(Bytes{}, "empty", 10),
                      Equals("IDX file 'empty': 0 bytes, shorter than the 4-byte magic at offset 0"));
  // The offset is of the decompressed content.
  write_bytes(dir / "labels.gz", gzip(image_file(1, 1, 1)));
  REQUIRE_THROWS_WITH(data::read_idx_labels(dir / "labels.gz", 10),
                      Equals(message("IDX file '", (dir / "labels.gz").string(),
                                     "': magic at offset 0 is 0x00000803, expected 0x00000801 (uint8, 1 dimension: labels)")));
}

TEST_CASE("IDX errors: a truncated header names the file and where it ends", "[data][idx]") {
  const TempDir dir;
  const fs::path file = dir / "train-images-idx3-ubyte";
  const Bytes whole = image_file(2, 3, 3);
  for (const std::size_t size : {4u, 7u, 8u, 15u}) {
    CAPTURE(size);
    write_bytes(file, std::span<const std::uint8_t>(whole).first(size));
    REQUIRE_THROWS_AS(data::read_idx_images(file), std::invalid_argument);
    REQUIRE_THROWS_WITH(data::read_idx_images(file),
                        Equals(message("IDX file '", file.string(), "': truncated header, the file ends at byte offset ", size,
                                       " but the header of 3 dimension(s) needs 16 bytes")));
  }
  REQUIRE_THROWS_WITH(data::parse_idx_labels(Bytes{0, 0, 8, 1, 0, 0, 0}, "labels", 10),
                      Equals("IDX file 'labels': truncated header, the file ends at byte offset 7 but the header of 1 "
                             "dimension(s) needs 8 bytes"));
}

TEST_CASE("IDX errors: truncated data names the file, where it ends and the size the header needs", "[data][idx]") {
  const TempDir dir;
  const fs::path file = dir / "t10k-images-idx3-ubyte";
  const Bytes whole = image_file(3, 4, 5);  // 16 + 60 bytes
  for (const std::size_t size : {16u, 17u, 56u, 75u}) {
    CAPTURE(size);
    write_bytes(file, std::span<const std::uint8_t>(whole).first(size));
    REQUIRE_THROWS_AS(data::read_idx_images(file), std::invalid_argument);
    REQUIRE_THROWS_WITH(data::read_idx_images(file),
                        Equals(message("IDX file '", file.string(), "': truncated, the data ends at byte offset ", size,
                                       " but the header ([3, 4, 5]) needs 76 bytes")));
  }
  const Bytes labels = label_file({1, 2, 3});
  REQUIRE_THROWS_WITH(data::parse_idx_labels(std::span<const std::uint8_t>(labels).first(10), "labels", 10),
                      Equals("IDX file 'labels': truncated, the data ends at byte offset 10 but the header ([3]) needs 11 bytes"));
  // A header claiming billions of images is refused before anything is allocated.
  REQUIRE_THROWS_WITH(data::parse_idx_images(idx_header({0xffffffffu, 0xffffffffu, 0xffffffffu}), "huge"),
                      StartsWith("IDX file 'huge': dimension 2 (at byte offset 12) makes the size overflow"));
  REQUIRE_THROWS_WITH(data::parse_idx_images(idx_header({60000, 28, 28}), "huge"),
                      Equals("IDX file 'huge': truncated, the data ends at byte offset 16 but the header ([60000, 28, 28]) "
                             "needs 47040016 bytes"));
}

TEST_CASE("IDX errors: trailing bytes name the file, their count and their offset", "[data][idx]") {
  const TempDir dir;
  const fs::path file = dir / "train-labels-idx1-ubyte";
  Bytes labels = label_file({1, 2, 3});
  labels.push_back(4);
  write_bytes(file, labels);
  REQUIRE_THROWS_AS(data::read_idx_labels(file, 10), std::invalid_argument);
  REQUIRE_THROWS_WITH(data::read_idx_labels(file, 10),
                      Equals(message("IDX file '", file.string(), "': 1 trailing byte(s) after the data, from byte offset 11")));
  Bytes images = image_file(2, 3, 3);
  images.insert(images.end(), 9, 0);  // a whole image more than the header says
  write_bytes(dir / "images.gz", gzip(images));
  REQUIRE_THROWS_WITH(data::read_idx_images(dir / "images.gz"),
                      Equals(message("IDX file '", (dir / "images.gz").string(),
                                     "': 9 trailing byte(s) after the data, from byte offset 34")));
}

TEST_CASE("IDX errors: a zero dimension names the file, the dimension and its offset", "[data][idx]") {
  const TempDir dir;
  const fs::path file = dir / "images";
  struct Case {
    std::uint32_t n, rows, cols;
    std::size_t dim;
  };
  for (const Case c : {Case{0, 28, 28, 0}, Case{5, 0, 28, 1}, Case{5, 28, 0, 2}, Case{0, 0, 0, 0}}) {
    CAPTURE(c.dim);
    write_bytes(file, idx_header({c.n, c.rows, c.cols}));
    REQUIRE_THROWS_AS(data::read_idx_images(file), std::invalid_argument);
    REQUIRE_THROWS_WITH(data::read_idx_images(file), Equals(message("IDX file '", file.string(), "': dimension ", c.dim,
                                                                    " (at byte offset ", 4 + 4 * c.dim, ") is 0")));
  }
  REQUIRE_THROWS_WITH(data::parse_idx_labels(label_file({}), "labels", 10),
                      Equals("IDX file 'labels': dimension 0 (at byte offset 4) is 0"));
}

TEST_CASE("IDX errors: images and labels of different counts name both files", "[data][idx]") {
  for (const std::string split : {"train", "t10k"}) {
    CAPTURE(split);
    const TempDir dir;
    Files files = small_set();
    (split == "train" ? files.train_labels : files.test_labels) = label_file(some_labels(split == "train" ? 5 : 4));
    write_set(dir.path(), files, true);
    const fs::path images = dir / (split + "-images-idx3-ubyte.gz");
    const fs::path labels = dir / (split + "-labels-idx1-ubyte.gz");
    REQUIRE_THROWS_AS(data::load_idx_dataset(dir.path()), std::invalid_argument);
    REQUIRE_THROWS_WITH(data::load_idx_dataset(dir.path()),
                        Equals(message("IDX data: '", images.string(), "' holds ", split == "train" ? 6 : 3, " images but '",
                                       labels.string(), "' ", split == "train" ? 5 : 4,
                                       " labels (the counts at byte offset 4)")));
  }
}

TEST_CASE("IDX errors: a label of 10 or more names the file, the record and its offset", "[data][idx]") {
  const TempDir dir;
  const fs::path file = dir / "t10k-labels-idx1-ubyte";
  for (const std::uint8_t bad : {std::uint8_t{10}, std::uint8_t{11}, std::uint8_t{255}}) {
    CAPTURE(int{bad});
    write_bytes(file, label_file({0, 9, bad, 3, 200}));
    REQUIRE_THROWS_AS(data::read_idx_labels(file, 10), std::invalid_argument);
    // The first bad record is named.
    REQUIRE_THROWS_WITH(data::read_idx_labels(file, 10),
                        Equals(message("IDX file '", file.string(), "': label of record 2 (byte offset 10) is ", int{bad},
                                       ", must be below 10")));
  }
  // Through the data set loader, gzipped.
  Files files = small_set();
  files.test_labels = label_file({9, 0, 10});
  write_set(dir.path(), files, true);
  REQUIRE_THROWS_WITH(data::load_fashion_mnist(dir.path()),
                      Equals(message("IDX file '", (dir / "t10k-labels-idx1-ubyte.gz").string(),
                                     "': label of record 2 (byte offset 10) is 10, must be below 10")));
}

TEST_CASE("IDX errors: a corrupt gzip stream names the file and the compressed offset", "[data][idx]") {
  const TempDir dir;
  const fs::path file = dir / "train-images-idx3-ubyte.gz";
  const Bytes plain = image_file(40, 28, 28);
  const Bytes good = gzip(plain);
  REQUIRE(good.size() > 200);
  const std::string prefix = message("gunzip '", file.string(), "': corrupt gzip stream at compressed offset ");
  std::size_t cases = 0;
  for (const std::size_t at : {good.size() / 3, good.size() / 2, good.size() / 2 + 1, 2 * good.size() / 3}) {
    for (const std::size_t width : {1u, 4u}) {
      CAPTURE(at, width);
      Bytes bad = good;
      for (std::size_t i = at; i < at + width; ++i) bad[i] = static_cast<std::uint8_t>(bad[i] ^ 0x5a);
      write_bytes(file, bad);
      REQUIRE_THROWS_AS(data::read_idx_images(file), std::invalid_argument);
      const std::string what = error_of([&] { return data::read_idx_images(file); });
      // zlib notices the damage at or after it (a bad code, a distance too far back, or the CRC
      // at the end), within the file.
      const std::size_t offset = offset_after(what, prefix);
      REQUIRE(offset >= at);
      REQUIRE(offset <= bad.size());
      REQUIRE(error_of([&] { return data::idx_bytes(bad, file.string()); }) == what);
      ++cases;
    }
  }
  REQUIRE(cases == 8);

  // Damage to the 8-byte trailer: the CRC-32 fails at the end of the stream.
  Bytes bad = good;
  bad[bad.size() - 6] = static_cast<std::uint8_t>(bad[bad.size() - 6] ^ 1);
  REQUIRE_THROWS_WITH(data::gunzip(bad, "crc"),
                      Equals(message("gunzip 'crc': corrupt gzip stream at compressed offset ", good.size() - 4,
                                     ": incorrect data check")));
  // A compression method other than deflate, in the gzip header.
  bad = good;
  bad[2] = 7;
  REQUIRE_THROWS_WITH(data::gunzip(bad, "method"), StartsWith("gunzip 'method': corrupt gzip stream at compressed offset "));
  // A second gzip member after the first would be dropped: refused, naming where it starts.
  bad = good;
  bad.insert(bad.end(), good.begin(), good.end());
  REQUIRE_THROWS_WITH(data::gunzip(bad, "twice"),
                      Equals(message("gunzip 'twice': ", good.size(), " byte(s) after the end of the gzip stream at compressed offset ",
                                     good.size())));
}

TEST_CASE("IDX errors: a truncated gzip stream names the file and where it ends", "[data][idx]") {
  const TempDir dir;
  const fs::path file = dir / "t10k-labels-idx1-ubyte.gz";
  const Bytes good = gzip(label_file(some_labels(500)));
  for (const std::size_t size : {std::size_t{2}, std::size_t{10}, good.size() / 2, good.size() - 8, good.size() - 1}) {
    CAPTURE(size);
    write_bytes(file, std::span<const std::uint8_t>(good).first(size));
    REQUIRE_THROWS_AS(data::read_idx_labels(file, 10), std::invalid_argument);
    REQUIRE_THROWS_WITH(data::read_idx_labels(file, 10),
                        Equals(message("gunzip '", file.string(), "': truncated gzip stream, it ends at compressed offset ", size,
                                       " before its end marker")));
  }
  // Through the data set loader.
  Files files = small_set();
  write_set(dir.path(), files, true);
  const Bytes images = read_bytes(dir / "train-images-idx3-ubyte.gz");
  write_bytes(dir / "train-images-idx3-ubyte.gz", std::span<const std::uint8_t>(images).first(images.size() - 3));
  REQUIRE_THROWS_WITH(data::load_idx_dataset(dir.path()),
                      Equals(message("gunzip '", (dir / "train-images-idx3-ubyte.gz").string(),
                                     "': truncated gzip stream, it ends at compressed offset ", images.size() - 3,
                                     " before its end marker")));
}

TEST_CASE("IDX errors: training and test images of different sizes name both files", "[data][idx]") {
  const TempDir dir;
  Files files = small_set();
  files.test_images = image_file(3, 28, 27);
  write_bytes(dir / "train-images-idx3-ubyte.gz", gzip(files.train_images));
  write_bytes(dir / "train-labels-idx1-ubyte.gz", gzip(files.train_labels));
  write_bytes(dir / "t10k-images-idx3-ubyte", files.test_images);
  write_bytes(dir / "t10k-labels-idx1-ubyte", files.test_labels);
  REQUIRE_THROWS_AS(data::load_idx_dataset(dir.path()), std::invalid_argument);
  REQUIRE_THROWS_WITH(data::load_idx_dataset(dir.path()),
                      Equals(message("IDX data in '", dir.path().string(), "': the images of '",
                                     (dir / "train-images-idx3-ubyte.gz").string(), "' are 28 x 28 but those of '",
                                     (dir / "t10k-images-idx3-ubyte").string(),
                                     "' 28 x 27 (rows and columns at byte offsets 8 and 12)")));
  // Same pixel count, transposed: still refused.
  write_bytes(dir / "t10k-images-idx3-ubyte", image_file(3, 27, 28));
  write_bytes(dir / "train-images-idx3-ubyte.gz", gzip(image_file(6, 28, 27)));
  REQUIRE_THROWS_WITH(data::load_idx_dataset(dir.path()), Contains("' are 28 x 27 but those of '"));
}

TEST_CASE("IDX errors: a missing file is a runtime_error naming it and the package to install", "[data][idx]") {
  const TempDir dir;
  REQUIRE_THROWS_AS(data::load_idx_dataset(dir.path()), std::runtime_error);
  REQUIRE_THROWS_WITH(data::load_idx_dataset(dir.path()),
                      Equals(message("IDX data in '", dir.path().string(),
                                     "': neither train-images-idx3-ubyte.gz nor train-images-idx3-ubyte is there "
                                     "(Fashion-MNIST: install Debian's dataset-fashion-mnist)")));
  // Only the test labels missing.
  write_set(dir.path(), small_set(), true);
  REQUIRE(data::load_idx_dataset(dir.path()).test.size() == 3);
  fs::remove(dir / "t10k-labels-idx1-ubyte.gz");
  REQUIRE_THROWS_AS(data::load_idx_dataset(dir.path()), std::runtime_error);
  REQUIRE_THROWS_WITH(data::load_idx_dataset(dir.path()),
                      Equals(message("IDX data in '", dir.path().string(),
                                     "': neither t10k-labels-idx1-ubyte.gz nor t10k-labels-idx1-ubyte is there "
                                     "(Fashion-MNIST: install Debian's dataset-fashion-mnist)")));
  // A folder that does not exist, and one file read directly.
  const fs::path nowhere = dir / "nowhere";
  REQUIRE_THROWS_AS(data::load_fashion_mnist(nowhere), std::runtime_error);
  REQUIRE_THROWS_WITH(data::load_fashion_mnist(nowhere),
                      StartsWith(message("IDX data in '", nowhere.string(), "': neither train-images-idx3-ubyte.gz")));
  const fs::path missing = dir / "t10k-labels-idx1-ubyte";
  REQUIRE_THROWS_AS(data::read_idx_labels(missing, 10), std::runtime_error);
  REQUIRE_THROWS_WITH(data::read_idx_labels(missing, 10), Contains(message("'", missing.string(), "': No such file or directory")));
}

TEST_CASE("Fashion-MNIST from Debian's dataset-fashion-mnist: 60,000 + 10,000 balanced images", "[data][idx]") {
  const fs::path folder{std::string(data::fashion_mnist_folder)};
  if (!fs::is_directory(folder))
    FAIL(folder.string() << " is missing: install Debian's dataset-fashion-mnist (scripts/setup-deps installs it: "
                            "apt-get install dataset-fashion-mnist)");
  const ImageDataset set = data::load_fashion_mnist();
  REQUIRE(set.info.name == "Fashion-MNIST");
  REQUIRE(set.info.classes == 10);
  REQUIRE(set.info.class_names.front() == "T-shirt/top");
  REQUIRE(set.info.shape == ImageShape{1, 28, 28});
  REQUIRE(set.train.images.shape() == std::array<std::size_t, 4>{60000, 1, 28, 28});
  REQUIRE(set.test.images.shape() == std::array<std::size_t, 4>{10000, 1, 28, 28});
  REQUIRE(set.train.fine.size() == 60000);
  REQUIRE(set.test.fine.size() == 10000);
  REQUIRE_FALSE(set.train.has_coarse());

  std::array<std::size_t, 10> train_counts{}, test_counts{};
  for (const std::uint8_t label : set.train.fine) ++train_counts.at(label);
  for (const std::uint8_t label : set.test.fine) ++test_counts.at(label);
  for (std::size_t c = 0; c < 10; ++c) {
    CAPTURE(c);
    REQUIRE(train_counts[c] == 6000);
    REQUIRE(test_counts[c] == 1000);
  }

  // Values from an independent decoding (Python's gzip module) of the same files: the first
  // labels, and pixel sums of the first image, the last image and every image.
  REQUIRE(std::vector<std::uint8_t>(set.train.fine.begin(), set.train.fine.begin() + 10) ==
          std::vector<std::uint8_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5});
  REQUIRE(std::vector<std::uint8_t>(set.test.fine.begin(), set.test.fine.begin() + 10) ==
          std::vector<std::uint8_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7});
  const auto sum = [](const xt::xtensor<std::uint8_t, 4>& images, std::size_t from, std::size_t count) {
    return std::accumulate(images.data() + from, images.data() + from + count, std::uint64_t{0});
  };
  REQUIRE(sum(set.train.images, 0, 784) == 76247);
  REQUIRE(sum(set.train.images, 59999 * 784, 784) == 16684);
  REQUIRE(sum(set.train.images, 0, set.train.images.size()) == 3431114169u);
  REQUIRE(sum(set.test.images, 0, 784) == 33456);
  REQUIRE(sum(set.test.images, 9999 * 784, 784) == 24390);
  REQUIRE(sum(set.test.images, 0, set.test.images.size()) == 573469082u);
  REQUIRE(set.train.images(0, 0, 14, 14) == 217);
  REQUIRE(set.test.images(0, 0, 14, 14) == 110);
}
