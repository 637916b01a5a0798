// Prepared data (split + statistics) saved as NumPy .npy files, and checked against its source.
//
// A cache folder holds, all written through xtensor's .npy writer and readable by numpy.load:
//   {train,validation,test}_images.npy   uint8 [N, C, H, W]
//   {train,validation,test}_fine.npy     uint8 [N]
//   {train,validation,test}_coarse.npy   uint8 [N]  (only for data with coarse labels)
//   mean.npy, std.npy                    float64 [C]  (ChannelStats of the training split)
//   manifest.txt                         `key = value` lines: the data set's description, the
//                                        source's fingerprints, the split options, and the size
//                                        and fingerprint of every file above
// Images stay uint8: four times smaller than floats, and the loader normalises them on the fly
// (augmentation needs the raw pixels anyway).
//
// The folder is written beside its final place and renamed into it, so a crash leaves either the
// previous cache or the new one, never a mixture. Loading checks every file's size and fingerprint
// and, when asked, that the cache was prepared from the given source with the given split.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <streambuf>
#include <type_traits>
#include <utility>
#include <vector>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

#include <xtensor/xnpy.hpp>
#include <xtensor/xtensor.hpp>

#include "distopt/core/archive.hpp"
#include "distopt/core/error.hpp"
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

[[nodiscard]] inline SourceFingerprint fingerprint(const Dataset& source) {
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
[[nodiscard]] inline PreparedData prepare_data(const Dataset& source, const SplitOptions& split) {
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

inline constexpr std::string_view format = "distopt-prepared 2";
inline constexpr std::array<std::string_view, 3> parts = {"train", "validation", "test"};

inline std::string hex(std::uint64_t v) { return distopt::detail::npz::hex(v, 16); }

inline std::string exact(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

/// Reads a byte vector as a stream without copying it (std::ispanstream is C++23).
struct MemoryBuffer : std::streambuf {
  explicit MemoryBuffer(std::vector<std::uint8_t>& bytes) {
    char* begin = reinterpret_cast<char*>(bytes.data());
    setg(begin, begin, begin + bytes.size());
  }
};

inline std::string npy_bytes(const auto& array) { return xt::dump_npy(array); }

inline void write_file(const std::filesystem::path& file, std::string_view bytes) {
  distopt::detail::npz::AtomicFile out(file, "save_data");
  out.write({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
  out.commit();
}

inline std::map<std::string, std::string> read_manifest(const std::filesystem::path& file) {
  std::ifstream in(file);
  require<std::runtime_error>(in.good(), "load_data: cannot read '", file.string(), "' (",
                              std::filesystem::exists(file) ? "unreadable" : "missing", "): not a prepared-data cache");
  std::map<std::string, std::string> fields;
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const auto eq = line.find(" = ");
    require(eq != std::string::npos, "load_data: '", file.string(), "' line ", number, " is not `key = value`");
    fields[line.substr(0, eq)] = line.substr(eq + 3);
  }
  return fields;
}

inline const std::string& field(const std::map<std::string, std::string>& fields, const std::filesystem::path& file,
                                const std::string& key) {
  const auto it = fields.find(key);
  require(it != fields.end(), "load_data: '", file.string(), "' has no field '", key, "'");
  return it->second;
}

inline std::uint64_t parse_u64(const std::string& text, const std::filesystem::path& file, const std::string& key, int base) {
  std::size_t used = 0;
  std::uint64_t value = 0;
  try {
    value = std::stoull(text, &used, base);
  } catch (const std::exception&) {
    used = 0;
  }
  require(used == text.size() && !text.empty(), "load_data: '", file.string(), "' field '", key, "' is not a number: '", text, "'");
  return value;
}

}  // namespace detail::cache

/// Saves `data` as a cache folder (see the top of this header), replacing any cache already
/// there. Throws std::runtime_error naming the path if it cannot be written; then the previous
/// cache, if any, is left as it was.
inline void save_data(const std::filesystem::path& folder, const PreparedData& data) {
  namespace fs = std::filesystem;
  using namespace detail::cache;
  const fs::path target = fs::absolute(folder).lexically_normal();
  const fs::path parent = target.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  require<std::runtime_error>(!ec, "save_data: cannot create '", parent.string(), "': ", ec.message());
  std::random_device entropy;
  const fs::path temp = parent / message(".", target.filename().string(), ".tmp-", ::getpid(), "-", hex(entropy()));
  fs::create_directory(temp, ec);
  require<std::runtime_error>(!ec, "save_data: cannot create '", temp.string(), "': ", ec.message());
  struct Cleanup {
    fs::path path;
    ~Cleanup() {
      std::error_code ignored;
      if (!path.empty()) fs::remove_all(path, ignored);
    }
  } cleanup{temp};

  std::ostringstream manifest;
  manifest << "format = " << format << '\n'
           << "source.train = " << hex(data.source.train) << '\n'
           << "source.test = " << hex(data.source.test) << '\n'
           << "split.validation_ratio = " << exact(data.split.validation_ratio) << '\n'
           << "split.seed = " << data.split.seed << '\n'
           << "split.stratified = " << (data.split.stratified ? 1 : 0) << '\n'
           << "dataset.name = " << data.info.name << '\n'
           << "dataset.classes = " << data.info.classes << '\n'
           << "dataset.coarse = " << (data.train.has_coarse() ? 1 : 0) << '\n';
  require(data.info.class_names.empty() || data.info.class_names.size() == data.info.classes, "save_data: DatasetInfo has ",
          data.info.classes, " classes but ", data.info.class_names.size(), " class names");
  for (std::size_t c = 0; c < data.info.class_names.size(); ++c) {
    require(data.info.class_names[c].find('\n') == std::string::npos, "save_data: class name ", c, " holds a line break");
    manifest << "dataset.class." << c << " = " << data.info.class_names[c] << '\n';
  }
  const auto put = [&](const std::string& name, const std::string& bytes) {
    write_file(temp / name, bytes);
    manifest << "file." << name << ".bytes = " << bytes.size() << '\n'
             << "file." << name << ".fingerprint = "
             << hex(fingerprint({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()})) << '\n';
  };
  const LabelledImages* sets[] = {&data.train, &data.validation, &data.test};
  for (std::size_t p = 0; p < parts.size(); ++p) {
    const LabelledImages& set = *sets[p];
    check_labels_match(set, message("save_data (", parts[p], " split)"));
    require(set.has_coarse() == data.train.has_coarse(), "save_data: the ", parts[p], " split ",
            set.has_coarse() ? "has" : "lacks", " coarse labels, unlike the train split");
    const std::string part(parts[p]);
    put(part + "_images.npy", npy_bytes(set.images));
    put(part + "_fine.npy", npy_bytes(xt::adapt(set.fine, {set.fine.size()})));
    if (set.has_coarse()) put(part + "_coarse.npy", npy_bytes(xt::adapt(set.coarse, {set.coarse.size()})));
  }
  put("mean.npy", npy_bytes(xt::adapt(data.stats.mean, {data.stats.mean.size()})));
  put("std.npy", npy_bytes(xt::adapt(data.stats.std, {data.stats.std.size()})));
  write_file(temp / "manifest.txt", manifest.str());

  // Swap the complete folder into place; an old cache is moved aside first and removed last.
  fs::path old;
  if (fs::exists(target)) {
    old = parent / message(".", target.filename().string(), ".old-", ::getpid(), "-", hex(entropy()));
    fs::rename(target, old, ec);
    require<std::runtime_error>(!ec, "save_data: cannot move the previous cache '", target.string(), "' aside: ", ec.message());
  }
  fs::rename(temp, target, ec);
  if (ec) {
    std::error_code ignored;
    if (!old.empty()) fs::rename(old, target, ignored);
    fail<std::runtime_error>("save_data: cannot rename '", temp.string(), "' to '", target.string(), "': ", ec.message());
  }
  cleanup.path = old;
}

/// Loads a cache written by save_data. Throws std::runtime_error if the folder or a file is
/// missing or unreadable, and std::invalid_argument naming the file and field if a file's size or
/// fingerprint differs from the manifest (a truncated or altered cache), an array has the wrong
/// type or shape, or a label is out of range (naming the record).
[[nodiscard]] inline PreparedData load_data(const std::filesystem::path& folder) {
  namespace fs = std::filesystem;
  using namespace detail::cache;
  const fs::path manifest_file = folder / "manifest.txt";
  const auto fields = read_manifest(manifest_file);
  require(field(fields, manifest_file, "format") == format, "load_data: '", manifest_file.string(), "' field 'format' is '",
          field(fields, manifest_file, "format"), "', expected '", format, "'");

  const auto read = [&](const std::string& name) {
    const fs::path file = folder / name;
    const std::string key = "file." + name;
    const std::uint64_t bytes = parse_u64(field(fields, manifest_file, key + ".bytes"), manifest_file, key + ".bytes", 10);
    const std::uint64_t expected = parse_u64(field(fields, manifest_file, key + ".fingerprint"), manifest_file, key + ".fingerprint", 16);
    std::vector<std::uint8_t> content = distopt::detail::npz::read_file(file);
    require(content.size() == bytes, "load_data: '", file.string(), "' holds ", content.size(), " bytes, the manifest says ",
            bytes, " (field '", key, ".bytes'): the cache is truncated or was changed");
    const std::uint64_t actual = fingerprint(content);
    require(actual == expected, "load_data: '", file.string(), "' has fingerprint ", hex(actual), ", the manifest says ",
            hex(expected), " (field '", key, ".fingerprint'): the cache was changed");
    return std::pair{file, std::move(content)};
  };
  const auto load = [&]<class T>(const std::string& name, std::size_t dims, std::type_identity<T>) {
    auto [file, content] = read(name);
    MemoryBuffer buffer(content);
    std::istream in(&buffer);
    try {
      auto array = xt::load_npy<T>(in);
      require(array.dimension() == dims, "load_data: '", file.string(), "' has ", array.dimension(), " dimensions, expected ", dims);
      return array;
    } catch (const std::invalid_argument&) {
      throw;
    } catch (const std::exception& e) {
      fail("load_data: '", file.string(), "' is not a valid .npy array of the expected type: ", e.what());
    }
  };

  PreparedData out;
  out.info.name = field(fields, manifest_file, "dataset.name");
  out.info.classes = parse_u64(field(fields, manifest_file, "dataset.classes"), manifest_file, "dataset.classes", 10);
  require(out.info.classes >= 1 && out.info.classes <= any_label, "load_data: '", manifest_file.string(),
          "' field 'dataset.classes' is ", out.info.classes, ", must be in [1, 256]");
  if (fields.count("dataset.class.0") != 0)  // names are optional (data made in memory may have none)
    for (std::size_t c = 0; c < out.info.classes; ++c)
      out.info.class_names.push_back(field(fields, manifest_file, message("dataset.class.", c)));
  const bool coarse_labels = parse_u64(field(fields, manifest_file, "dataset.coarse"), manifest_file, "dataset.coarse", 10) != 0;
  LabelledImages* sets[] = {&out.train, &out.validation, &out.test};
  for (std::size_t p = 0; p < parts.size(); ++p) {
    const std::string part(parts[p]);
    auto images = load(part + "_images.npy", 4, std::type_identity<std::uint8_t>{});
    const std::vector<std::size_t> shape(images.shape().begin(), images.shape().end());
    if (p > 0)
      require(ImageShape{shape[1], shape[2], shape[3]} == out.train.shape(), "load_data: '", (folder / (part + "_images.npy")).string(),
              "' has shape ", shape, ", its images differ from the train split's");
    auto fine = load(part + "_fine.npy", 1, std::type_identity<std::uint8_t>{});
    require(fine.size() == shape[0], "load_data: the ", part, " split has ", shape[0], " images but ", fine.size(), " labels");
    LabelledImages& set = *sets[p];
    set.images = xt::xtensor<std::uint8_t, 4>::from_shape({shape[0], shape[1], shape[2], shape[3]});
    std::copy(images.begin(), images.end(), set.images.begin());
    set.fine.assign(fine.begin(), fine.end());
    if (coarse_labels) {
      auto coarse = load(part + "_coarse.npy", 1, std::type_identity<std::uint8_t>{});
      require(coarse.size() == shape[0], "load_data: the ", part, " split has ", shape[0], " images but ", coarse.size(),
              " coarse labels");
      set.coarse.assign(coarse.begin(), coarse.end());
    }
    for (std::size_t i = 0; i < set.size(); ++i)
      require(set.fine[i] < out.info.classes, "load_data: record ", i, " of the ", part, " split has label ", int{set.fine[i]},
              ", out of range for ", out.info.classes, " classes");
  }
  out.info.shape = out.train.shape();
  const auto mean = load("mean.npy", 1, std::type_identity<double>{});
  const auto deviation = load("std.npy", 1, std::type_identity<double>{});
  const std::size_t channels = out.info.shape.channels;
  require(mean.size() == channels && deviation.size() == channels, "load_data: mean.npy and std.npy must hold ", channels, " values");
  out.stats.mean.assign(mean.begin(), mean.end());
  out.stats.std.assign(deviation.begin(), deviation.end());

  out.source.train = parse_u64(field(fields, manifest_file, "source.train"), manifest_file, "source.train", 16);
  out.source.test = parse_u64(field(fields, manifest_file, "source.test"), manifest_file, "source.test", 16);
  const std::string& ratio = field(fields, manifest_file, "split.validation_ratio");
  try {
    out.split.validation_ratio = std::stod(ratio);
  } catch (const std::exception&) {
    fail("load_data: '", manifest_file.string(), "' field 'split.validation_ratio' is not a number: '", ratio, "'");
  }
  out.split.seed = parse_u64(field(fields, manifest_file, "split.seed"), manifest_file, "split.seed", 10);
  out.split.stratified = parse_u64(field(fields, manifest_file, "split.stratified"), manifest_file, "split.stratified", 10) != 0;
  return out;
}

/// As above, and checks that the cache was prepared from `source` with `split`; otherwise throws
/// std::invalid_argument naming the manifest and the first field that differs.
[[nodiscard]] inline PreparedData load_data(const std::filesystem::path& folder, const SourceFingerprint& source,
                                            const SplitOptions& split) {
  PreparedData data = load_data(folder);
  const std::string manifest = (folder / "manifest.txt").string();
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
[[nodiscard]] inline PreparedData load_or_prepare(const std::filesystem::path& folder, const Dataset& source,
                                                  const SplitOptions& split, bool* loaded = nullptr) {
  const SourceFingerprint fp = fingerprint(source);
  if (std::filesystem::exists(folder / "manifest.txt")) {
    try {
      PreparedData data = load_data(folder, fp, split);
      if (loaded) *loaded = true;
      return data;
    } catch (const std::invalid_argument&) {
      // A stale or damaged cache is rebuilt below, which is what a user re-running a stage wants.
    }
  }
  PreparedData data = prepare_data(source, split);
  save_data(folder, data);
  if (loaded) *loaded = false;
  return data;
}

[[nodiscard]] inline PreparedData load_or_prepare(const std::filesystem::path& folder, const Cifar100& source,
                                                  const SplitOptions& split, bool* loaded = nullptr) {
  return load_or_prepare(folder, to_dataset(source), split, loaded);
}

}  // namespace distopt::data
