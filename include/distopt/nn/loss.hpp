// Cross-entropy on logits, and top-k accuracy.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include "distopt/core/error.hpp"

namespace distopt::nn {

/// What one batch's loss pass reports.
struct LossStats {
  double loss = 0;             ///< mean loss over the batch
  std::int64_t correct1 = 0;   ///< top-1 hits
  std::int64_t correct5 = 0;   ///< top-5 hits
  std::int64_t count = 0;      ///< samples
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

}  // namespace distopt::nn
