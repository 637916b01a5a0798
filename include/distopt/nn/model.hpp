// What the training loop and LocalTrainer need of a model.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include "distopt/core/concepts.hpp"
#include "distopt/core/images.hpp"
#include "distopt/core/error.hpp"
#include "distopt/nn/loss.hpp"

namespace distopt::nn {

/// The batches a model reads (core/images.hpp), under the name the layers use.
using distopt::Images;

/// A trainable model.
///
/// Contract: `parameters()` is the container every weight and gradient lives in (optimizers
/// update it); `loss_and_gradient(x, labels, weight)` adds weight * (gradient of the batch's mean
/// loss) into `parameters().grads()` and reports the loss and accuracy; `evaluate` reports them
/// without touching gradients; `forward(x, logits)` writes [count, num_classes()] logits; copying a
/// model gives an independent replica (LocalTrainer's workers). The same inputs give the same bits
/// for any number of OpenMP threads; called inside a parallel region, the model runs on the
/// calling thread alone.
template <class M>
concept Model = std::copy_constructible<M> &&
                requires(M& model, const M& const_model, const Images<typename M::scalar_type>& x,
                         std::span<const std::int32_t> labels, typename M::scalar_type* logits, double weight) {
                  typename M::params_type;
                  requires ParameterContainer<typename M::params_type>;
                  { model.parameters() } -> std::same_as<typename M::params_type&>;
                  { model.loss_and_gradient(x, labels, weight) } -> std::same_as<LossStats>;
                  { model.evaluate(x, labels) } -> std::same_as<LossStats>;
                  model.forward(x, logits);
                  { const_model.num_classes() } -> std::convertible_to<std::ptrdiff_t>;
                };

}  // namespace distopt::nn
