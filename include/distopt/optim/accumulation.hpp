// Gradient accumulation: one optimizer step on a batch larger than fits at once.
//
// How: with a mean-reduced loss L = (1/N) sum_i l_i over a batch of N samples, cut the batch into
// micro-batches of n_k samples; the large-batch gradient is sum_k (n_k / N) * grad L_k, where L_k is
// the mean loss of micro-batch k. So zero the gradients once, add each micro-batch's gradient scaled
// by its `weight` (n_k / N) into the gradient buffer, and call `step` once; optim::step
// (optim/step.hpp) does exactly that:
//
//   for (const auto& micro : optim::split_batch(batch_size, 4096))
//     model.loss_and_gradient(images.slice(micro.begin, micro.end), labels_of(micro), micro.weight);
//
// Equal to one large-batch step up to float rounding (tests hold it). The study uses 4096 as the
// largest micro-batch for batch sizes up to 16k and beyond.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "distopt/core/error.hpp"

namespace distopt::optim {

/// One micro-batch: samples [begin, end) of the batch, and the weight n_k / N its mean-loss
/// gradient carries in the large-batch gradient.
struct MicroBatch {
  std::int64_t begin;
  std::int64_t end;
  double weight;
};

/// The number of micro-batches `split_batch` makes: ceil(batch / max_micro_batch).
[[nodiscard]] inline std::int64_t accumulation_steps(std::int64_t batch, std::int64_t max_micro_batch) {
  require(batch > 0, "accumulation_steps: batch must be > 0, got ", batch);
  require(max_micro_batch > 0, "accumulation_steps: max_micro_batch must be > 0, got ", max_micro_batch);
  return (batch + max_micro_batch - 1) / max_micro_batch;
}

/// Cuts a batch into `accumulation_steps(batch, max_micro_batch)` micro-batches of nearly equal
/// size (sizes differ by at most one), weights n_k / N summing to 1.
[[nodiscard]] inline std::vector<MicroBatch> split_batch(std::int64_t batch, std::int64_t max_micro_batch) {
  const std::int64_t k = accumulation_steps(batch, max_micro_batch);
  std::vector<MicroBatch> micro;
  micro.reserve(static_cast<std::size_t>(k));
  std::int64_t begin = 0;
  for (std::int64_t i = 0; i < k; ++i) {
    const std::int64_t size = batch / k + (i < batch % k ? 1 : 0);
    micro.push_back({begin, begin + size, static_cast<double>(size) / static_cast<double>(batch)});
    begin += size;
  }
  return micro;
}

}  // namespace distopt::optim
