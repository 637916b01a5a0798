// Float arrays as a data set: features of any shape ([N, d] tables, [N, C, H, W] images, [N, T, d]
// sequences) with class ids or real-valued targets, from memory or from a NumPy .npz file.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "distopt/core/archive.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/samples.hpp"
#include "distopt/data/dataset.hpp"

namespace distopt::data {

struct ArraysOptions;

/// N samples of float features of one shape, each with a class id or real-valued targets, held
/// in memory: the Dataset of users' own data. Every value is checked on construction: finite
/// features and targets, class ids in [0, classes), as many targets as samples; an error names
/// the data set (its file), the array and the index.
class ArrayDataset {
 public:
  ArrayDataset() = default;

  /// `features` row-major [N, shape...] and one class id per sample in [0, classes) (classes 0:
  /// the largest id + 1).
  [[nodiscard]] static ArrayDataset classification(std::vector<float> features, Shape shape, std::vector<std::int32_t> labels,
                                                   std::size_t classes = 0, std::string name = "arrays") {
    return classification(std::move(features), shape, std::move(labels), classes, std::move(name), Labels{});
  }

  /// `features` row-major [N, shape...] and `width` real targets per sample, [N, width].
  [[nodiscard]] static ArrayDataset regression(std::vector<float> features, Shape shape, std::vector<float> targets,
                                               std::size_t width = 1, std::string name = "arrays") {
    return regression(std::move(features), shape, std::move(targets), width, std::move(name), Labels{});
  }

  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  [[nodiscard]] Shape sample_shape() const noexcept { return shape_; }
  [[nodiscard]] TargetInfo target_info() const noexcept { return info_; }
  /// The file it came from, or the name it was given: what error messages and tables call it.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::span<const float> features() const noexcept { return features_; }
  [[nodiscard]] std::span<const std::int32_t> classes() const noexcept { return classes_; }
  [[nodiscard]] std::span<const float> values() const noexcept { return values_; }

  void copy(std::span<const std::size_t> indices, std::span<float> features, std::span<std::int32_t> classes,
            std::span<float> values) const {
    const auto d = static_cast<std::size_t>(shape_.size());
    require(features.size() >= indices.size() * d, name_, ": room for ", features.size(), " features, ", indices.size(),
            " samples need ", indices.size() * d);
    for (std::size_t k = 0; k < indices.size(); ++k) {
      const std::size_t i = indices[k];
      require(i < count_, name_, ": sample ", i, " is outside the ", count_, " samples");
      std::copy_n(features_.data() + i * d, d, features.data() + k * d);
      if (info_.are_classes()) {
        require(classes.size() > k, name_, ": no room for the class id of sample ", k, " of the batch");
        classes[k] = classes_[i];
      } else {
        require(values.size() >= (k + 1) * info_.width, name_, ": no room for the targets of sample ", k, " of the batch");
        std::copy_n(values_.data() + i * info_.width, info_.width, values.data() + k * info_.width);
      }
    }
  }

  /// The samples at `indices`, in that order (a split, a shard kept apart).
  [[nodiscard]] ArrayDataset subset(std::span<const std::size_t> indices) const {
    ArrayDataset out;
    out.shape_ = shape_;
    out.info_ = info_;
    out.name_ = name_;
    out.count_ = indices.size();
    const auto d = static_cast<std::size_t>(shape_.size());
    out.features_.resize(indices.size() * d);
    if (info_.are_classes())
      out.classes_.resize(indices.size());
    else
      out.values_.resize(indices.size() * info_.width);
    copy(indices, out.features_, out.classes_, out.values_);
    return out;
  }

 private:
  friend ArrayDataset arrays_from(const Archive&, const ArraysOptions&, const std::string&);

  // What the messages call the features and the targets: "features" and "targets" for arrays
  // from memory, "array 'x'" and "array 'y'" for arrays from a file.
  struct Labels {
    std::string features = "features";
    std::string targets = "targets";
  };

  static ArrayDataset classification(std::vector<float> features, Shape shape, std::vector<std::int32_t> labels,
                                     std::size_t classes, std::string name, Labels what) {
    ArrayDataset d(std::move(features), shape, std::move(name), std::move(what));
    if (classes == 0)
      for (const std::int32_t id : labels) classes = std::max(classes, static_cast<std::size_t>(std::max(id, 0)) + 1);
    d.info_ = TargetInfo::class_ids(classes);
    d.classes_ = std::move(labels);
    d.check_targets();
    return d;
  }

  static ArrayDataset regression(std::vector<float> features, Shape shape, std::vector<float> targets, std::size_t width,
                                 std::string name, Labels what) {
    ArrayDataset d(std::move(features), shape, std::move(name), std::move(what));
    require(width >= 1, d.name_, ": targets need a width of at least 1");
    d.info_ = TargetInfo::values(width);
    d.values_ = std::move(targets);
    d.check_targets();
    return d;
  }

  // Every check of the values is here, once, whichever way the data came in.
  ArrayDataset(std::vector<float> features, Shape shape, std::string name, Labels what)
      : features_(std::move(features)), shape_(shape), name_(std::move(name)), what_(std::move(what)) {
    require(shape_.rank >= 1, name_, ": the sample shape is empty");
    const auto d = static_cast<std::size_t>(shape_.size());
    require(features_.size() % d == 0, name_, ": ", features_.size(), " feature values do not make samples of shape ",
            shape_.str());
    count_ = features_.size() / d;
    require(count_ > 0, name_, ": no samples");
    for (std::size_t j = 0; j < features_.size(); ++j)
      require(std::isfinite(features_[j]), name_, ": ", what_.features, ": sample ", j / d, " holds ", features_[j],
              " at element ", j % d, "; features must be finite");
  }

  void check_targets() const {
    if (info_.are_classes()) {
      require(classes_.size() == count_, name_, ": ", count_, " samples of features but ", classes_.size(), " class ids");
      for (std::size_t i = 0; i < count_; ++i)
        require(classes_[i] >= 0 && static_cast<std::size_t>(classes_[i]) < info_.classes, name_, ": ", what_.targets,
                ": class id ", classes_[i], " of sample ", i, " is outside [0, ", info_.classes, ")");
    } else {
      require(values_.size() == count_ * info_.width, name_, ": ", count_, " samples of features but ", values_.size(),
              " target values (", info_.width, " per sample)");
      for (std::size_t j = 0; j < values_.size(); ++j)
        require(std::isfinite(values_[j]), name_, ": ", what_.targets, ": target ", j / info_.width, " holds ", values_[j],
                "; targets must be finite");
    }
  }

  std::vector<float> features_;
  std::vector<std::int32_t> classes_;
  std::vector<float> values_;
  Shape shape_{};
  TargetInfo info_{};
  std::size_t count_ = 0;
  std::string name_ = "arrays";
  Labels what_{};
};

/// The rows of an Eigen matrix or array (row i: sample i's features) as the row-major floats
/// ArrayDataset takes, whatever its storage order and scalar type:
///   ArrayDataset::classification(data::rows(X), {X.cols()}, labels)
template <class Derived>
[[nodiscard]] std::vector<float> rows(const Eigen::DenseBase<Derived>& x) {
  std::vector<float> out(static_cast<std::size_t>(x.rows() * x.cols()));
  Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(out.data(), x.rows(), x.cols()) =
      x.derived().template cast<float>();
  return out;
}

/// Which arrays of an .npz hold a data set, and how to read its targets.
struct ArraysOptions {
  std::string features = "x";  ///< [N, ...] features, any real or integer dtype (read as float32)
  std::string targets = "y";   ///< [N] or [N, width]
  /// How the targets are read: class ids (integer dtypes by default) or real values (float
  /// dtypes by default). Class ids stored as floats are accepted when every one is an integer.
  std::optional<TargetInfo::Kind> kind{};
  std::size_t classes = 0;  ///< 0: the largest id + 1
};

namespace detail::arrays {

// Every element of a member as float, whatever its dtype; a value float cannot hold is refused
// by the caller's finiteness check (it becomes inf).
inline std::vector<float> as_floats(const Archive& a, const std::string& name, const std::string& source) {
  const std::string_view dtype = a.dtype(name);
  std::vector<float> out;
  const auto take = [&](auto values) {
    out.resize(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) out[i] = static_cast<float>(values[i]);
  };
  if (dtype == "<f4") take(a.get<float>(name));
  else if (dtype == "<f8") take(a.get<double>(name));
  else if (dtype == "<i4") take(a.get<std::int32_t>(name));
  else if (dtype == "<i8") take(a.get<std::int64_t>(name));
  else if (dtype == "|u1") take(a.get<std::uint8_t>(name));
  else if (dtype == "<u4") take(a.get<std::uint32_t>(name));
  else if (dtype == "<u8") take(a.get<std::uint64_t>(name));
  else fail(source, ": array '", name, "' has dtype ", dtype, "; features and targets must be numbers");
  return out;
}

inline bool integral(std::string_view dtype) { return dtype != "<f4" && dtype != "<f8"; }

}  // namespace detail::arrays

/// The data set held by arrays of `archive` (loaded from `source`, which errors name): features
/// [N, ...] (rank 2 to 5: a sample of rank 1 to 4) and targets [N] or [N, width]. Throws
/// std::invalid_argument naming the source, the array and the index for a missing array, a
/// wrong rank or dtype, counts that differ, a NaN or inf, or a class id outside [0, classes).
[[nodiscard]] inline ArrayDataset arrays_from(const Archive& archive, const ArraysOptions& options, const std::string& source) {
  for (const std::string* name : {&options.features, &options.targets})
    require(archive.contains(*name), source, ": no array '", *name, "' (it holds ", archive.names(), ")");
  const auto& fshape = archive.shape(options.features);
  const auto& tshape = archive.shape(options.targets);
  require(fshape.size() >= 2 && fshape.size() <= 1 + Shape::max_rank, source, ": array '", options.features, "' has shape ",
          fshape, "; features need [N, ...] with 1 to ", Shape::max_rank, " dimensions per sample");
  require(tshape.size() == 1 || tshape.size() == 2, source, ": array '", options.targets, "' has shape ", tshape,
          "; targets need [N] or [N, width]");
  require(fshape[0] == tshape[0], source, ": array '", options.features, "' holds ", fshape[0], " samples, array '",
          options.targets, "' ", tshape[0], " targets");
  const Shape shape(std::vector<std::ptrdiff_t>(fshape.begin() + 1, fshape.end()));
  std::vector<float> features = detail::arrays::as_floats(archive, options.features, source);
  ArrayDataset::Labels what{"array '" + options.features + "'", "array '" + options.targets + "'"};
  const std::string_view tdtype = archive.dtype(options.targets);
  const TargetInfo::Kind kind =
      options.kind.value_or(detail::arrays::integral(tdtype) ? TargetInfo::Kind::classes : TargetInfo::Kind::values);
  std::vector<float> targets = detail::arrays::as_floats(archive, options.targets, source);
  const std::string tname = source + ": array '" + options.targets + "'";
  if (kind == TargetInfo::Kind::values) {
    const std::size_t width = tshape.size() == 2 ? static_cast<std::size_t>(tshape[1]) : 1;
    return ArrayDataset::regression(std::move(features), shape, std::move(targets), width, source, std::move(what));
  }
  require(tshape.size() == 1, tname, " has shape ", tshape, "; class ids need one per sample, [N]");
  std::vector<std::int32_t> ids(targets.size());
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const float t = targets[i];
    require(std::isfinite(t) && t == std::floor(t) && t >= 0 && t < 2147483648.0f, tname, ": target ", i, " is ", t,
            "; a class id is a whole number >= 0");
    ids[i] = static_cast<std::int32_t>(t);
  }
  return ArrayDataset::classification(std::move(features), shape, std::move(ids), options.classes, source, std::move(what));
}

/// The data set in the .npz file `path` (np.savez(path, x=features, y=targets)); see arrays_from.
[[nodiscard]] inline ArrayDataset load_arrays(const std::filesystem::path& path, const ArraysOptions& options = {}) {
  return arrays_from(Archive::load(path), options, path.string());
}

}  // namespace distopt::data
