// The step kernel every training loop shares: zero the gradients, loss and gradient of the batch
// (in micro-batches), check that the loss is finite, set the learning rate, step the optimizer.
// train::train_epoch runs it over a loader; each worker of a local::LocalTrainer runs it on its
// shard. One kernel, so a centralized run and a worker compute the same bits for the same batch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string_view>

#include "distopt/core/error.hpp"
#include "distopt/nn/model.hpp"
#include "distopt/optim/accumulation.hpp"
#include "distopt/optim/optimizer.hpp"

namespace distopt::optim {

/// A step whose loss or gradient stopped being finite. Training loops turn it into a run that
/// ended with status "diverged" instead of an error.
struct Diverged : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What a step saw: the batch's mean loss (the micro-batches' losses weighted n_k / N), its
/// correct top-1 predictions (where targets are classes) and its size.
struct StepStats {
  double loss = 0;
  std::int64_t correct = 0;
  std::int64_t count = 0;
  bool classified = true;
};

/// One optimizer step on the batch `inputs` with `targets` at learning rate `lr`: gradients zeroed, the loss
/// and gradient of micro-batches of at most `micro_batch` samples each added with weight n_k / N
/// (so the update is the whole batch's), then `optimizer.step`. Throws Diverged, its message
/// starting with `who` and naming `step` (the step's 1-based number), when the loss or a gradient
/// is not finite; the weights are then as the optimizer left them (it refuses a non-finite step).
template <nn::Model M, Optimizer O>
StepStats step(M& model, O& optimizer, const Samples<typename M::scalar_type>& inputs, const Targets& targets, double lr,
               std::int64_t micro_batch, std::string_view who, std::int64_t step) {
  auto& params = model.parameters();
  std::fill_n(params.grads().data(), params.size(), typename M::scalar_type{0});
  StepStats stats;
  stats.count = inputs.count;
  for (const MicroBatch& micro : split_batch(inputs.count, micro_batch)) {
    const nn::LossStats s =
        model.loss_and_gradient(inputs.slice(micro.begin, micro.end), targets.slice(micro.begin, micro.end), micro.weight);
    stats.loss += s.loss * micro.weight;
    stats.correct += s.correct1;
    stats.classified = s.classified;
  }
  if (!std::isfinite(stats.loss)) throw Diverged(message(who, "loss is ", stats.loss, " at step ", step));
  optimizer.set_lr(lr);
  try {
    optimizer.step(params);
  } catch (const std::domain_error& e) {
    throw Diverged(message(who, e.what()));
  }
  return stats;
}

}  // namespace distopt::optim
