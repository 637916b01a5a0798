// Prepared data (split + statistics) saved as one NumPy .npz file, and checked against its source.
//
// A cache folder holds prepared.npz (core/archive.hpp; np.load reads it), with the arrays
//   {train,validation,test}_images   uint8 [N, C, H, W]
//   {train,validation,test}_fine     uint8 [N]
//   {train,validation,test}_coarse   uint8 [N]  (only for data with coarse labels)
//   mean, std                        float64 [C]  (ChannelStats of the training split)
// and the fields format, dataset.{name,classes,coarse,class.<c>}, source.{train,test} (the
// source's fingerprints) and split.{validation_ratio,seed,stratified}.
// Images stay uint8: four times smaller than floats, and the loader normalises them on the fly
// (augmentation needs the raw pixels anyway).
//
// The folder is written beside its final place and swapped into it (io::replace_directory), so a
// crash leaves either the previous cache or the new one, never a mixture, and a cache of an older
// format is replaced whole. The .npz's CRC-32 of every array catches a truncated or altered file;
// loading checks, when asked, that the cache was prepared from the given source with the given split.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include <xtensor/xtensor.hpp>

#include "distopt/core/archive.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/io.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/data/cifar.hpp"
#include "distopt/data/images.hpp"
#include "distopt/data/split.hpp"
#include "distopt/data/statistics.hpp"

namespace distopt::data {

/// A 64-bit fingerprint of `bytes`: 1 MiB chunks hashed in parallel with four independent
/// SplitMix64-mixed lanes, combined in chunk order with the length, so it is the same for any
/// thread count. Not cryptographic: it tells a cache from another source, not from an attacker.
[[nodiscard]] inline std::uint64_t fingerprint(std::span<const std::uint8_t> bytes) {
  constexpr std::ptrdiff_t chunk = std::ptrdiff_t{1} << 20;
  const std::ptrdiff_t n = static_cast<std::ptrdiff_t>(bytes.size());
  const parallel::Chunks chunks{n, chunk};
  std::vector<std::uint64_t> partial(static_cast<std::size_t>(chunks.count()));
  parallel::for_each_chunk(n, chunk, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
    std::array<std::uint64_t, 4> lane{0x9E3779B97F4A7C15ull, 0xC2B2AE3D27D4EB4Full, 0x165667B19E3779F9ull,
                                      0x27D4EB2F165667C5ull};
    const std::uint8_t* p = bytes.data() + begin;
    std::ptrdiff_t i = 0;
    const std::ptrdiff_t size = end - begin;
    for (; i + 32 <= size; i += 32)
      for (std::size_t l = 0; l < 4; ++l) {
        std::uint64_t word;
        std::memcpy(&word, p + i + 8 * static_cast<std::ptrdiff_t>(l), 8);
        lane[l] = mix64(lane[l] + word);
      }
    std::uint64_t tail = 0;
    for (; i < size; ++i) tail = mix64(tail ^ (std::uint64_t{p[i]} | static_cast<std::uint64_t>(i) << 8));
    partial[static_cast<std::size_t>(begin / chunk)] =
        mix64(lane[0] ^ mix64(lane[1] ^ mix64(lane[2] ^ mix64(lane[3] ^ mix64(tail)))));
  });
  std::uint64_t h = mix64(bytes.size());
  for (const std::uint64_t part : partial) h = mix64(h ^ part);
  return h;
}

/// The fingerprint of a labelled set: its images, fine and coarse labels.
[[nodiscard]] inline std::uint64_t fingerprint(const LabelledImages& data) {
  std::uint64_t h = fingerprint(std::span<const std::uint8_t>(data.images.data(), data.images.size()));
  h = mix64(h ^ fingerprint(data.fine));
  return mix64(h ^ fingerprint(data.coarse));
}

/// Identifies the data a cache was prepared from: the fingerprints of its two splits.
struct SourceFingerprint {
  std::uint64_t train = 0;
  std::uint64_t test = 0;

  friend bool operator==(const SourceFingerprint&, const SourceFingerprint&) = default;
};

[[nodiscard]] inline SourceFingerprint fingerprint(const ImageDataset& source) {
  return {fingerprint(source.train), fingerprint(source.test)};
}
[[nodiscard]] inline SourceFingerprint fingerprint(const Cifar100& source) {
  return {fingerprint(source.train), fingerprint(source.test)};
}

/// A data set prepared for training: the official training set split into train and validation,
/// the test set untouched, the statistics of the train split, and the data set's description.
struct PreparedData {
  DatasetInfo info;
  LabelledImages train, validation, test;
  ChannelStats stats;
  SplitOptions split;
  SourceFingerprint source;
};

/// Splits `source.train` as `split` says (stratified by its labels) and computes the train
/// split's statistics.
[[nodiscard]] inline PreparedData prepare_data(const ImageDataset& source, const SplitOptions& split) {
  PreparedData out;
  out.info = source.info;
  auto parts = data::split(source.train, split);
  out.train = std::move(parts.train);
  out.validation = std::move(parts.validation);
  out.test = source.test;
  out.stats = channel_statistics(out.train);
  out.split = split;
  out.source = fingerprint(source);
  return out;
}
[[nodiscard]] inline PreparedData prepare_data(const Cifar100& source, const SplitOptions& split) {
  return prepare_data(to_dataset(source), split);
}

namespace detail::cache {

inline constexpr std::string_view format = "distopt-prepared 3";
inline constexpr std::string_view file_name = "prepared.npz";
inline constexpr std::array<std::string_view, 3> parts = {"train", "validation", "test"};

inline std::string hex(std::uint64_t v) { return io::hex(v, 16); }

}  // namespace detail::cache

/// Saves `data` as a cache folder (see the top of this header), replacing any cache already
/// there. Throws std::runtime_error naming the path if it cannot be written; then the previous
/// cache, if any, is left as it was.
inline void save_data(const std::filesystem::path& folder, const PreparedData& data) {
  namespace fs = std::filesystem;
  using namespace detail::cache;
  require(data.info.class_names.empty() || data.info.class_names.size() == data.info.classes, "save_data: DatasetInfo has ",
          data.info.classes, " classes but ", data.info.class_names.size(), " class names");
  Archive archive;
  archive.put_string("format", format);
  archive.put_scalar<std::uint64_t>("source.train", data.source.train);
  archive.put_scalar<std::uint64_t>("source.test", data.source.test);
  archive.put_scalar<double>("split.validation_ratio", data.split.validation_ratio);
  archive.put_scalar<std::uint64_t>("split.seed", data.split.seed);
  archive.put_scalar<std::uint8_t>("split.stratified", data.split.stratified ? 1 : 0);
  archive.put_string("dataset.name", data.info.name);
  archive.put_scalar<std::uint64_t>("dataset.classes", data.info.classes);
  archive.put_scalar<std::uint8_t>("dataset.coarse", data.train.has_coarse() ? 1 : 0);
  for (std::size_t c = 0; c < data.info.class_names.size(); ++c)
    archive.put_string(message("dataset.class.", c), data.info.class_names[c]);
  const LabelledImages* sets[] = {&data.train, &data.validation, &data.test};
  for (std::size_t p = 0; p < parts.size(); ++p) {
    const LabelledImages& set = *sets[p];
    check_labels_match(set, message("save_data (", parts[p], " split)"));
    require(set.has_coarse() == data.train.has_coarse(), "save_data: the ", parts[p], " split ",
            set.has_coarse() ? "has" : "lacks", " coarse labels, unlike the train split");
    const std::string part(parts[p]);
    const auto& shape = set.images.shape();
    archive.put<std::uint8_t>(part + "_images", std::span<const std::uint8_t>(set.images.data(), set.images.size()),
                              {static_cast<std::ptrdiff_t>(shape[0]), static_cast<std::ptrdiff_t>(shape[1]),
                               static_cast<std::ptrdiff_t>(shape[2]), static_cast<std::ptrdiff_t>(shape[3])});
    archive.put(part + "_fine", set.fine);
    if (set.has_coarse()) archive.put(part + "_coarse", set.coarse);
  }
  archive.put("mean", data.stats.mean);
  archive.put("std", data.stats.std);

  // The whole folder is replaced, so files of an older cache format never outlive it.
  const fs::path target = fs::absolute(folder).lexically_normal();
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  require<std::runtime_error>(!ec, "save_data: cannot create '", target.parent_path().string(), "': ", ec.message());
  std::random_device entropy;
  const fs::path staging = target.parent_path() / message(".", target.filename().string(), ".tmp-", ::getpid(), "-", hex(entropy()));
  fs::create_directory(staging, ec);
  require<std::runtime_error>(!ec, "save_data: cannot create '", staging.string(), "': ", ec.message());
  struct Cleanup {
    fs::path path;
    ~Cleanup() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } cleanup{staging};
  archive.save(staging / file_name);
  io::replace_directory(staging, target, "save_data");
}

/// Loads a cache written by save_data. Throws std::runtime_error if the folder or its file is
/// missing, unreadable, truncated or altered (the .npz's checksums), and std::invalid_argument
/// naming the file and field for a missing field, an array of the wrong type or shape, or a label
/// out of range (naming the record).
[[nodiscard]] inline PreparedData load_data(const std::filesystem::path& folder) {
  using namespace detail::cache;
  const std::filesystem::path file = folder / file_name;
  require<std::runtime_error>(std::filesystem::exists(file), "load_data: '", file.string(), "' is missing: not a prepared-data cache");
  const Archive archive = Archive::load(file);
  const auto need = [&](const std::string& field) {
    require(archive.contains(field), "load_data: '", file.string(), "' has no field '", field, "'");
    return field;
  };
  require(archive.get_string(need("format")) == format, "load_data: '", file.string(), "' field 'format' is '",
          archive.get_string("format"), "', expected '", format, "'");

  PreparedData out;
  out.info.name = archive.get_string(need("dataset.name"));
  out.info.classes = archive.get_scalar<std::uint64_t>(need("dataset.classes"));
  require(out.info.classes >= 1 && out.info.classes <= any_label, "load_data: '", file.string(),
          "' field 'dataset.classes' is ", out.info.classes, ", must be in [1, 256]");
  if (archive.contains("dataset.class.0"))  // names are optional (data made in memory may have none)
    for (std::size_t c = 0; c < out.info.classes; ++c) out.info.class_names.push_back(archive.get_string(need(message("dataset.class.", c))));
  const bool coarse_labels = archive.get_scalar<std::uint8_t>(need("dataset.coarse")) != 0;
  LabelledImages* sets[] = {&out.train, &out.validation, &out.test};
  for (std::size_t p = 0; p < parts.size(); ++p) {
    const std::string part(parts[p]);
    const std::string images = need(part + "_images");
    const auto& shape = archive.shape(images);
    require(shape.size() == 4, "load_data: '", file.string(), "' field '", images, "' has ", shape.size(),
            " dimensions, expected 4");
    const std::vector<std::size_t> dims(shape.begin(), shape.end());
    if (p > 0)
      require(ImageShape{dims[1], dims[2], dims[3]} == out.train.shape(), "load_data: '", file.string(), "' field '", images,
              "' has shape ", shape, ", its images differ from the train split's");
    const auto pixels = archive.get<std::uint8_t>(images);
    const auto fine = archive.get<std::uint8_t>(need(part + "_fine"));
    require(fine.size() == dims[0], "load_data: the ", part, " split has ", dims[0], " images but ", fine.size(), " labels");
    LabelledImages& set = *sets[p];
    set.images = xt::xtensor<std::uint8_t, 4>::from_shape({dims[0], dims[1], dims[2], dims[3]});
    std::copy(pixels.begin(), pixels.end(), set.images.begin());
    set.fine.assign(fine.begin(), fine.end());
    if (coarse_labels) {
      const auto coarse = archive.get<std::uint8_t>(need(part + "_coarse"));
      require(coarse.size() == dims[0], "load_data: the ", part, " split has ", dims[0], " images but ", coarse.size(),
              " coarse labels");
      set.coarse.assign(coarse.begin(), coarse.end());
    }
    for (std::size_t i = 0; i < set.size(); ++i)
      require(set.fine[i] < out.info.classes, "load_data: record ", i, " of the ", part, " split has label ", int{set.fine[i]},
              ", out of range for ", out.info.classes, " classes");
  }
  out.info.shape = out.train.shape();
  const auto mean = archive.get<double>(need("mean"));
  const auto deviation = archive.get<double>(need("std"));
  const std::size_t channels = out.info.shape.channels;
  require(mean.size() == channels && deviation.size() == channels, "load_data: '", file.string(),
          "' fields 'mean' and 'std' must hold ", channels, " values");
  out.stats.mean.assign(mean.begin(), mean.end());
  out.stats.std.assign(deviation.begin(), deviation.end());
  out.source.train = archive.get_scalar<std::uint64_t>(need("source.train"));
  out.source.test = archive.get_scalar<std::uint64_t>(need("source.test"));
  out.split.validation_ratio = archive.get_scalar<double>(need("split.validation_ratio"));
  out.split.seed = archive.get_scalar<std::uint64_t>(need("split.seed"));
  out.split.stratified = archive.get_scalar<std::uint8_t>(need("split.stratified")) != 0;
  return out;
}

/// As above, and checks that the cache was prepared from `source` with `split`; otherwise throws
/// std::invalid_argument naming the manifest and the first field that differs.
[[nodiscard]] inline PreparedData load_data(const std::filesystem::path& folder, const SourceFingerprint& source,
                                            const SplitOptions& split) {
  PreparedData data = load_data(folder);
  const std::string manifest = (folder / detail::cache::file_name).string();
  using detail::cache::hex;
  require(data.source.train == source.train, "load_data: '", manifest, "' field 'source.train' is ", hex(data.source.train),
          " but the source's training set has fingerprint ", hex(source.train), ": the cache comes from other data");
  require(data.source.test == source.test, "load_data: '", manifest, "' field 'source.test' is ", hex(data.source.test),
          " but the source's test set has fingerprint ", hex(source.test), ": the cache comes from other data");
  require(data.split.validation_ratio == split.validation_ratio, "load_data: '", manifest, "' field 'split.validation_ratio' is ",
          data.split.validation_ratio, ", expected ", split.validation_ratio);
  require(data.split.seed == split.seed, "load_data: '", manifest, "' field 'split.seed' is ", data.split.seed, ", expected ", split.seed);
  require(data.split.stratified == split.stratified, "load_data: '", manifest, "' field 'split.stratified' is ",
          data.split.stratified, ", expected ", split.stratified);
  return data;
}

/// The prepared data of `source`: loaded from the cache in `folder` if one matches the source and
/// the split, otherwise prepared and saved there (replacing a stale cache). `loaded`, if given,
/// tells which happened.
[[nodiscard]] inline PreparedData load_or_prepare(const std::filesystem::path& folder, const ImageDataset& source,
                                                  const SplitOptions& split, bool* loaded = nullptr) {
  const SourceFingerprint fp = fingerprint(source);
  if (std::filesystem::exists(folder / detail::cache::file_name)) {
    try {
      PreparedData data = load_data(folder, fp, split);
      if (loaded) *loaded = true;
      return data;
    } catch (const std::exception&) {
      // A stale, damaged or unreadable cache is rebuilt below (what a user re-running a stage
      // wants); if the folder cannot be written either, save_data says so.
    }
  }
  PreparedData data = prepare_data(source, split);
  try {
    save_data(folder, data);
  } catch (const std::exception&) {
    // Another process preparing the same cache (a second job on a shared work folder) may have
    // swapped its folder in meanwhile: its cache then holds these very arrays, and all is well.
    const std::exception_ptr failure = std::current_exception();
    try {
      (void)load_data(folder, fp, split);
    } catch (const std::exception&) {
      std::rethrow_exception(failure);
    }
  }
  if (loaded) *loaded = false;
  return data;
}

[[nodiscard]] inline PreparedData load_or_prepare(const std::filesystem::path& folder, const Cifar100& source,
                                                  const SplitOptions& split, bool* loaded = nullptr) {
  return load_or_prepare(folder, to_dataset(source), split, loaded);
}

}  // namespace distopt::data
