// What the loader, the splits, the shards and the trainers need of a data set: a concept, so a
// user's own data plugs in beside the library's image sets (data/images.hpp) and float arrays
// (data/arrays.hpp).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/core/samples.hpp"

namespace distopt::data {

/// What a sample's target is: a class id in [0, classes), or `width` real values.
struct TargetInfo {
  enum class Kind : std::uint8_t { classes, values };
  Kind kind = Kind::classes;
  std::size_t classes = 0;  ///< for class ids: how many classes there are
  std::size_t width = 0;    ///< for real values: how many per sample

  [[nodiscard]] static TargetInfo class_ids(std::size_t count) { return {Kind::classes, count, 0}; }
  [[nodiscard]] static TargetInfo values(std::size_t per_sample) { return {Kind::values, 0, per_sample}; }
  [[nodiscard]] bool are_classes() const noexcept { return kind == Kind::classes; }
  /// "10 classes" or "2 real values".
  [[nodiscard]] std::string str() const {
    return are_classes() ? message(classes, " classes") : message(width, " real value", width == 1 ? "" : "s");
  }
  friend bool operator==(const TargetInfo&, const TargetInfo&) = default;
};

/// A data set: N samples of one shape, each with a target.
///
/// Contract: `size()` samples, each of `sample_shape()` (rank 1 to 4); `target_info()` says
/// whether targets are class ids (and how many classes) or real values (and how many per
/// sample); `copy(indices, features, classes, values)` writes the features of samples
/// `indices[0], indices[1], ...` as float32, one after the other (`features` holds
/// indices.size() * sample_shape().size() floats), and their targets into `classes` (one id per
/// index, when targets are classes; `values` is then empty) or into `values` (width per index;
/// `classes` is then empty). Features are the data's own scale (images: pixel / 255, as
/// torchvision's ToTensor), before any normalisation. `copy` is const and may run on several
/// threads at once for different indices; indices are below size() (the loader checks them).
template <class D>
concept Dataset = requires(const D& data, std::span<const std::size_t> indices, std::span<float> features,
                           std::span<std::int32_t> classes, std::span<float> values) {
  { data.size() } -> std::convertible_to<std::size_t>;
  { data.sample_shape() } -> std::convertible_to<Shape>;
  { data.target_info() } -> std::convertible_to<TargetInfo>;
  data.copy(indices, features, classes, values);
};

/// A read-only view of one class id per sample, bytes (the image sets' labels) or 32-bit ids
/// (any other data set's): what splits and shards read.
class ClassIds {
 public:
  ClassIds(std::span<const std::uint8_t> ids) : bytes_(ids), size_(ids.size()) {}   // NOLINT(google-explicit-constructor)
  ClassIds(std::span<const std::int32_t> ids) : ints_(ids), size_(ids.size()) {}   // NOLINT(google-explicit-constructor)
  ClassIds(const std::vector<std::uint8_t>& ids) : ClassIds(std::span<const std::uint8_t>(ids)) {}  // NOLINT
  ClassIds(const std::vector<std::int32_t>& ids) : ClassIds(std::span<const std::int32_t>(ids)) {}  // NOLINT
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::int64_t operator[](std::size_t i) const noexcept { return bytes_.empty() ? std::int64_t{ints_[i]} : std::int64_t{bytes_[i]}; }

 private:
  std::span<const std::uint8_t> bytes_{};
  std::span<const std::int32_t> ints_{};
  std::size_t size_ = 0;
};

namespace detail::dataset {
// The class ids of `data` through copy(), one sample at a time: works on any model of the
// concept without materialising its features.
template <Dataset D>
[[nodiscard]] std::vector<std::int32_t> copied_class_ids(const D& data) {
  const std::size_t n = data.size();
  std::vector<std::int32_t> ids(n);
  std::vector<float> one(static_cast<std::size_t>(Shape(data.sample_shape()).size()));
  for (std::size_t i = 0; i < n; ++i) data.copy(std::span<const std::size_t>(&i, 1), one, std::span(ids).subspan(i, 1), {});
  return ids;
}
}  // namespace detail::dataset

/// Every class id of a data set whose targets are classes, in sample order (what stratified
/// splits and class-balanced shards read): its own `class_ids()` where it has one, else through
/// copy(). Throws std::invalid_argument naming `who` when the targets are real values.
template <Dataset D>
[[nodiscard]] std::vector<std::int32_t> class_ids(const D& data, const char* who = "class_ids") {
  const TargetInfo info = data.target_info();
  require(info.are_classes(), who, ": the data set's targets are ", info.str(), ", not class ids");
  if constexpr (requires { data.class_ids(); })
    return data.class_ids();
  else
    return detail::dataset::copied_class_ids(data);
}

}  // namespace distopt::data
