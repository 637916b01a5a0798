// Train/validation split of a labelled dataset, and subsets by index.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <span>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/data/dataset.hpp"
#include "distopt/data/images.hpp"

namespace distopt::data {

/// How to hold out a validation set: `validation_ratio` of the samples (rounded to the nearest
/// count), drawn with `seed`. `stratified` keeps every class's share of the validation set equal to
/// its share of the data (per class, round(ratio * n_c) up to a largest-remainder correction so
/// the total is still round(ratio * N)); otherwise the samples are drawn uniformly.
struct SplitOptions {
  double validation_ratio = 0.1;
  std::uint64_t seed = 0;
  bool stratified = true;

  friend bool operator==(const SplitOptions&, const SplitOptions&) = default;
};

/// A partition of [0, N) into training and validation indices, each in increasing order (so a
/// subset keeps the source's order and two splits with the same options are the same bytes).
struct SplitIndices {
  std::vector<std::size_t> train;
  std::vector<std::size_t> validation;
};

namespace detail::split {
inline constexpr std::uint64_t stream = 0x5B117;  // labels this file's Rng streams apart from others
}

/// Splits the samples labelled `labels` (one class id per sample, below `classes`) as `options`
/// says. The result depends only on the labels and the options. Throws std::invalid_argument
/// naming the field for a ratio outside [0, 1) or a label >= classes.
[[nodiscard]] inline SplitIndices split_indices(ClassIds labels, const SplitOptions& options,
                                                std::size_t classes = any_label) {
  require(std::isfinite(options.validation_ratio) && options.validation_ratio >= 0.0 && options.validation_ratio < 1.0,
          "SplitOptions.validation_ratio must be in [0, 1), got ", options.validation_ratio);
  const std::size_t n = labels.size();
  const auto wanted = static_cast<std::size_t>(std::llround(options.validation_ratio * static_cast<double>(n)));
  const Rng root = Rng(options.seed).split(detail::split::stream);
  std::vector<std::uint8_t> in_validation(n, 0);

  if (!options.stratified) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    Rng rng = root;
    rng.shuffle(order.begin(), order.end());
    for (std::size_t i = 0; i < wanted; ++i) in_validation[order[i]] = 1;
  } else {
    std::vector<std::vector<std::size_t>> members(classes);
    for (std::size_t i = 0; i < n; ++i) {
      require(labels[i] >= 0 && static_cast<std::size_t>(labels[i]) < classes, "split_indices: label of sample ", i, " is ",
              labels[i], ", must be in [0, ", classes, ")");
      members[static_cast<std::size_t>(labels[i])].push_back(i);
    }
    // Per class floor(ratio * n_c); the remaining samples go to the classes with the largest
    // fractional parts (ties to the lower class id), so the total is exactly `wanted`.
    std::vector<std::size_t> take(classes);
    std::vector<std::pair<double, std::size_t>> remainders;
    std::size_t taken = 0;
    for (std::size_t c = 0; c < classes; ++c) {
      const double exact = options.validation_ratio * static_cast<double>(members[c].size());
      take[c] = static_cast<std::size_t>(std::floor(exact));
      taken += take[c];
      remainders.emplace_back(exact - std::floor(exact), c);
    }
    std::stable_sort(remainders.begin(), remainders.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    for (std::size_t r = 0; taken < wanted && r < remainders.size(); ++r) {
      const std::size_t c = remainders[r].second;
      if (take[c] < members[c].size()) {
        ++take[c];
        ++taken;
      }
    }
    for (std::size_t c = 0; c < classes; ++c) {
      Rng rng = root.split(c);
      rng.shuffle(members[c].begin(), members[c].end());
      for (std::size_t i = 0; i < take[c]; ++i) in_validation[members[c][i]] = 1;
    }
  }

  SplitIndices result;
  result.validation.reserve(wanted);
  result.train.reserve(n - wanted);
  for (std::size_t i = 0; i < n; ++i) (in_validation[i] ? result.validation : result.train).push_back(i);
  return result;
}

/// The samples of `data` at `indices`, in that order (repeats allowed). Throws
/// std::invalid_argument naming the position of an index outside the data.
[[nodiscard]] inline LabelledImages subset(const LabelledImages& data, std::span<const std::size_t> indices) {
  const std::size_t n = data.size();
  for (std::size_t k = 0; k < indices.size(); ++k)
    require(indices[k] < n, "subset: index ", indices[k], " at position ", k, " is outside the ", n, " samples");
  check_labels_match(data, "subset");
  LabelledImages out = allocate_images(indices.size(), data.shape(), data.has_coarse());
  const std::size_t pixels = data.shape().pixels();
  for (std::size_t k = 0; k < indices.size(); ++k) {
    std::memcpy(out.images.data() + k * pixels, data.images.data() + indices[k] * pixels, pixels);
    out.fine[k] = data.fine[indices[k]];
    if (data.has_coarse()) out.coarse[k] = data.coarse[indices[k]];
  }
  return out;
}

/// Training and validation sets held out of one labelled set.
struct TrainValidation {
  LabelledImages train;
  LabelledImages validation;
};

/// Splits `data` by its fine labels as `options` says (see split_indices).
[[nodiscard]] inline TrainValidation split(const LabelledImages& data, const SplitOptions& options) {
  const SplitIndices indices = split_indices(data.fine, options);
  return {subset(data, indices.train), subset(data, indices.validation)};
}

/// Split indices of any data set: stratified by class where its targets are classes and the
/// options ask for it, uniform otherwise (a regression's).
template <Dataset D>
[[nodiscard]] SplitIndices split_indices(const D& data, const SplitOptions& options) {
  const TargetInfo info = data.target_info();
  if (info.are_classes()) {
    const std::vector<std::int32_t> ids = class_ids(data, "split_indices");
    return split_indices(ClassIds(ids), options, info.classes);
  }
  SplitOptions uniform = options;
  uniform.stratified = false;
  return split_indices(ClassIds(std::vector<std::int32_t>(data.size(), 0)), uniform, 1);
}

/// The samples of `a` followed by those of `b`, images and both labels: for retraining the best
/// trial of a search on train + validation before its one look at the test set. Throws
/// std::invalid_argument naming the set whose label count differs from its image count, or if
/// the two sets' images differ in shape.
[[nodiscard]] inline LabelledImages concatenate(const LabelledImages& a, const LabelledImages& b) {
  check_labels_match(a, "concatenate (first set)");
  check_labels_match(b, "concatenate (second set)");
  // An empty set has no shape and no coarse labels to agree with: the other set is the answer.
  if (a.size() == 0) return b;
  if (b.size() == 0) return a;
  require(a.has_coarse() == b.has_coarse(), "concatenate: one set has coarse labels, the other has none");
  const auto& sa = a.images.shape();
  const auto& sb = b.images.shape();
  require(sa[1] == sb[1] && sa[2] == sb[2] && sa[3] == sb[3], "concatenate: images of shape [", sa[1], ", ", sa[2], ", ",
          sa[3], "] and [", sb[1], ", ", sb[2], ", ", sb[3], "]");
  LabelledImages out;
  out.images = xt::xtensor<std::uint8_t, 4>::from_shape({a.size() + b.size(), sa[1], sa[2], sa[3]});
  if (a.images.size() > 0) std::memcpy(out.images.data(), a.images.data(), a.images.size());
  if (b.images.size() > 0) std::memcpy(out.images.data() + a.images.size(), b.images.data(), b.images.size());
  out.fine = a.fine;
  out.fine.insert(out.fine.end(), b.fine.begin(), b.fine.end());
  out.coarse = a.coarse;
  out.coarse.insert(out.coarse.end(), b.coarse.begin(), b.coarse.end());
  return out;
}

}  // namespace distopt::data
