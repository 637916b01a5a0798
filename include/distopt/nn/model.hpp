// What the training loop and LocalTrainer need of a model, stated whole, and a check that says
// in one sentence which member a type lacks.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "distopt/core/concepts.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/images.hpp"
#include "distopt/core/samples.hpp"
#include "distopt/nn/loss.hpp"

namespace distopt::nn {

/// The batches a model reads (core/samples.hpp, core/images.hpp), under the names the layers use.
using distopt::Images;
using distopt::Samples;
using distopt::Targets;

/// A trainable model.
///
/// Contract: `scalar_type` is its float type and `params_type` the ParameterContainer every
/// weight and gradient lives in (optimizers update it; `parameters()` gives it, mutable and
/// const); the model reads batches as `Samples<scalar_type>` (any sample shape) with `Targets`
/// (class ids or real values); `loss_and_gradient(x, y, weight)` adds weight * (gradient of the
/// batch's mean loss) into `parameters().grads()` and reports the loss (and the accuracy where
/// targets are classes); `evaluate(x, y)` reports them without touching gradients;
/// `forward(x, out)` writes [count, output_size()] outputs (logits, or predictions for a
/// regression). Copying a model gives an independent replica (LocalTrainer's workers). The same
/// inputs give the same bits for any number of OpenMP threads; called inside a parallel region,
/// the model runs on the calling thread alone. A model whose input does not match a batch
/// throws std::invalid_argument naming both shapes.
template <class M>
concept Model = std::copy_constructible<M> &&
                requires(M& model, const M& const_model, const Samples<typename M::scalar_type>& x, const Targets& y,
                         typename M::scalar_type* out, double weight) {
                  typename M::scalar_type;
                  typename M::params_type;
                  requires ParameterContainer<typename M::params_type>;
                  { model.parameters() } -> std::same_as<typename M::params_type&>;
                  { const_model.parameters() } -> std::same_as<const typename M::params_type&>;
                  { model.loss_and_gradient(x, y, weight) } -> std::same_as<LossStats>;
                  { model.evaluate(x, y) } -> std::same_as<LossStats>;
                  model.forward(x, out);
                  { const_model.output_size() } -> std::convertible_to<std::ptrdiff_t>;
                };

/// True when M is a Model; otherwise a compile error that names the first missing member in a
/// sentence. The trainers' entry points call it, so a model that lacks something fails there
/// and not deep inside a template.
template <class M>
consteval bool check_model() {
  static_assert(requires { typename M::scalar_type; }, "distopt Model: the model needs `using scalar_type = float;` (or double)");
  static_assert(requires { typename M::params_type; },
                "distopt Model: the model needs `using params_type = ...;` naming its parameter container (distopt::ParameterSet)");
  if constexpr (requires {
                  typename M::scalar_type;
                  typename M::params_type;
                }) {
    using S = typename M::scalar_type;
    using P = typename M::params_type;
    static_assert(std::copy_constructible<M>, "distopt Model: the model must be copyable (LocalTrainer's workers are copies)");
    static_assert(ParameterContainer<P>,
                  "distopt Model: params_type must be a ParameterContainer (values(), grads(), size(), blocks())");
    static_assert(requires(M& m) {
      { m.parameters() } -> std::same_as<P&>;
    }, "distopt Model: the model needs `params_type& parameters()`");
    static_assert(requires(const M& m) {
      { m.parameters() } -> std::same_as<const P&>;
    }, "distopt Model: the model needs `const params_type& parameters() const` (trainers copy from a const model)");
    static_assert(requires(M& m, const Samples<S>& x, const Targets& y, double w) {
      { m.loss_and_gradient(x, y, w) } -> std::same_as<LossStats>;
    }, "distopt Model: the model needs `LossStats loss_and_gradient(const Samples<scalar_type>&, const Targets&, double weight)`");
    static_assert(requires(M& m, const Samples<S>& x, const Targets& y) {
      { m.evaluate(x, y) } -> std::same_as<LossStats>;
    }, "distopt Model: the model needs `LossStats evaluate(const Samples<scalar_type>&, const Targets&)`");
    static_assert(requires(M& m, const Samples<S>& x, S* out) { m.forward(x, out); },
                  "distopt Model: the model needs `void forward(const Samples<scalar_type>&, scalar_type* out)`");
    static_assert(requires(const M& m) {
      { m.output_size() } -> std::convertible_to<std::ptrdiff_t>;
    }, "distopt Model: the model needs `std::ptrdiff_t output_size() const` (classes, or values per prediction)");
  }
  return Model<M>;
}

/// The input size a model states, if it states one (`input_size()`), else 0: the trainers check
/// it against the data at construction, before any batch.
template <class M>
[[nodiscard]] std::ptrdiff_t declared_input_size(const M& model) {
  if constexpr (requires {
                  { model.input_size() } -> std::convertible_to<std::ptrdiff_t>;
                })
    return static_cast<std::ptrdiff_t>(model.input_size());
  else
    return 0;
}

/// Throws std::invalid_argument naming `who`, the model's sizes and the data's (`data`) when
/// a model cannot read its samples (of `sample`'s shape) or predict its targets (class ids, or
/// `target_width` real values): the trainers call it at construction, before any batch.
template <class M>
void check_model_fits(const M& model, const Shape& sample, bool classes, std::ptrdiff_t target_width, std::string_view data,
                      std::string_view who) {
  const std::ptrdiff_t inputs = declared_input_size(model);
  require(inputs == 0 || inputs == sample.size(), who, ": the model reads samples of ", inputs, " values, '", data,
          "' has samples of shape ", sample.str(), " (", sample.size(), " values)");
  const auto outputs = static_cast<std::ptrdiff_t>(model.output_size());
  require(classes || outputs == target_width, who, ": the model has ", outputs, " outputs, '", data, "' has ", target_width,
          " real-valued targets per sample");
}

}  // namespace distopt::nn
