// The losses a model trains on (cross-entropy on class ids, mean squared error on real values),
// behind one interface, and top-k accuracy.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "distopt/core/error.hpp"
#include "distopt/core/samples.hpp"

namespace distopt::nn {

/// What one batch's loss pass reports.
struct LossStats {
  double loss = 0;             ///< mean loss over the batch
  std::int64_t correct1 = 0;   ///< top-1 hits
  std::int64_t correct5 = 0;   ///< top-5 hits
  std::int64_t count = 0;      ///< samples
  bool classified = true;      ///< false for regression: correct1 and correct5 mean nothing
};

/// Cross-entropy with optional label smoothing (Szegedy et al. 2016), torch.nn.functional
/// semantics: with log-probabilities l = log_softmax(z) (computed stably, z - max z) and target
/// q = (1 - eps) onehot(y) + eps / C,
///   loss = mean_i ( -sum_j q_ij l_ij ),   dloss/dz_i = (softmax(z_i) - q_i) / batch.
struct CrossEntropy {
  double label_smoothing = 0.0;

  /// Checks every label is a class, naming the first bad one.
  static void check_labels(std::span<const std::int32_t> labels, std::ptrdiff_t classes) {
    for (std::size_t i = 0; i < labels.size(); ++i)
      require(labels[i] >= 0 && labels[i] < classes, "cross_entropy: label ", labels[i], " at position ", i,
              " is outside [0, ", classes, ")");
  }

  /// Loss of row `i` of `logits` [rows, classes]; writes scale * dloss_i/dz_i into `grad` (if not
  /// null) where scale is weight / batch for a mean over the batch.
  template <class T>
  [[nodiscard]] double row(const T* z, std::ptrdiff_t classes, std::int32_t label, T* grad, double scale) const {
    const T top = *std::max_element(z, z + classes);
    double sum = 0;
    for (std::ptrdiff_t j = 0; j < classes; ++j) sum += std::exp(static_cast<double>(z[j] - top));
    const double log_sum = std::log(sum);
    const double off = label_smoothing / static_cast<double>(classes);
    double loss = 0;
    for (std::ptrdiff_t j = 0; j < classes; ++j) {
      const double log_p = static_cast<double>(z[j] - top) - log_sum;
      const double q = off + (j == label ? 1.0 - label_smoothing : 0.0);
      loss -= q * log_p;
      if (grad) grad[j] = static_cast<T>(scale * (std::exp(log_p) - q));
    }
    return loss;
  }
};

/// Whether `label` is among the k largest logits of a row (ties counted against: a class tied
/// with the label's logit and listed before it takes a place first, as torch.topk does).
template <class T>
[[nodiscard]] bool in_top_k(const T* z, std::ptrdiff_t classes, std::int32_t label, int k) {
  const T value = z[label];
  std::ptrdiff_t above = 0;
  for (std::ptrdiff_t j = 0; j < classes; ++j) above += (z[j] > value || (z[j] == value && j < label)) ? 1 : 0;
  return above < k;
}

/// Mean squared error, torch.nn.functional.mse_loss(reduction="mean") over a batch [N, width]:
///   loss = 1 / (N width) sum_ij (z_ij - y_ij)^2,   dloss/dz_ij = 2 (z_ij - y_ij) / (N width).
struct MeanSquaredError {
  /// Row `z`'s share of the loss times N (its mean squared error over `width` values); writes
  /// scale * dloss/dz into `grad` (if not null), scale being weight / N for a mean over the batch.
  template <class T>
  [[nodiscard]] double row(const T* z, std::ptrdiff_t width, const float* y, T* grad, double scale) const {
    double sum = 0;
    const double w = static_cast<double>(width);
    for (std::ptrdiff_t j = 0; j < width; ++j) {
      const double d = static_cast<double>(z[j]) - static_cast<double>(y[j]);
      sum += d * d;
      if (grad) grad[j] = static_cast<T>(scale * 2.0 * d / w);
    }
    return sum / w;
  }
};

/// The loss of a model: cross-entropy with label smoothing on class ids (CrossEntropy), or mean
/// squared error on real targets (MeanSquaredError). One interface, so a model is written once
/// for classification and regression; the targets of a batch must suit the kind (check()).
struct Loss {
  enum class Kind : std::uint8_t { cross_entropy, mean_squared_error };
  Kind kind = Kind::cross_entropy;
  double label_smoothing = 0.0;  ///< cross-entropy only

  [[nodiscard]] static Loss cross_entropy(double smoothing = 0.0) { return {Kind::cross_entropy, smoothing}; }
  [[nodiscard]] static Loss mean_squared_error() { return {Kind::mean_squared_error, 0.0}; }
  [[nodiscard]] bool classifies() const noexcept { return kind == Kind::cross_entropy; }
  [[nodiscard]] const char* name() const noexcept { return classifies() ? "cross_entropy" : "mse"; }

  /// Throws std::invalid_argument naming `who` unless `targets` hold `count` targets of the kind
  /// this loss reads for a model of `outputs` outputs: class ids in [0, outputs), or `outputs`
  /// finite values per sample.
  void check(const Targets& targets, std::ptrdiff_t count, std::ptrdiff_t outputs, std::string_view who) const {
    if (classifies()) {
      require(targets.are_classes(), who, ": cross-entropy needs class ids, the batch has real-valued targets of width ",
              targets.width);
      require(targets.count() == count, who, ": ", targets.count(), " labels for a batch of ", count, " samples");
      CrossEntropy::check_labels(targets.classes, outputs);
    } else {
      require(!targets.are_classes(), who, ": mean squared error needs real-valued targets, the batch has class ids");
      require(targets.width == outputs, who, ": targets of width ", targets.width, " for a model of ", outputs, " outputs");
      require(targets.count() == count, who, ": ", targets.count(), " targets for a batch of ", count, " samples");
    }
  }

  /// The loss of row `i` of a batch, `z` its `outputs` outputs; writes scale * dloss_i/dz into
  /// `grad` (if not null).
  template <class T>
  [[nodiscard]] double row(const T* z, std::ptrdiff_t outputs, const Targets& targets, std::ptrdiff_t i, T* grad,
                           double scale) const {
    if (classifies())
      return CrossEntropy{label_smoothing}.row(z, outputs, targets.classes[static_cast<std::size_t>(i)], grad, scale);
    return MeanSquaredError{}.row(z, outputs, targets.values.data() + i * targets.width, grad, scale);
  }
};

}  // namespace distopt::nn
