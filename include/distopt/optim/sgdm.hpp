// SGD with momentum, torch.optim.SGD semantics.
#pragma once

#include <vector>

#include "distopt/core/concepts.hpp"
#include "distopt/optim/optimizer.hpp"

namespace distopt::optim {

/// Hyperparameters of Sgdm, PyTorch's names and defaults (lr has none in PyTorch; 0.01 is the
/// study's). Validated when the optimizer is built.
struct SgdmOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  NonFinite on_non_finite = NonFinite::raise;
};

/// Stochastic gradient descent with momentum (Polyak 1964; Nesterov as in Sutskever et al. 2013),
/// exactly torch.optim.SGD:
///   g <- g + wd * w
///   b <- g on the first step, else mu * b + (1 - dampening) * g
///   g <- g + mu * b  (nesterov)  or  b
///   w <- w - lr * g
/// Per block: lr * lr_scale, and weight decay unless the block's `decay` is off (on by default,
/// as PyTorch decays every parameter). One fused pass over the flat buffer, plus one read of the
/// gradients to refuse non-finite ones (the update cannot be undone, so it must come first).
template <ParameterContainer P>
class Sgdm : public detail::OptimizerBase<P> {
  using Base = detail::OptimizerBase<P>;
  using T = typename P::scalar_type;

 public:
  using options_type = SgdmOptions;

  Sgdm(const P& params, SgdmOptions options = {})
      : Base(params, "Sgdm", validate(options).lr, options.on_non_finite,
             options.momentum > 0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{}),
        options_(options),
        coefficients_(params.blocks().size()) {}

  [[nodiscard]] const SgdmOptions& options() const noexcept { return options_; }

  /// One update from `params.grads()`; false if skipped for a non-finite gradient.
  bool step(P& params) {
    this->check_layout(params);
    if (!this->accept_gradients(params, this->gradients_finite(params))) return false;
    const auto blocks = params.blocks();
    for (std::size_t b = 0; b < blocks.size(); ++b)
      coefficients_[b] = {static_cast<T>(this->lr_ * blocks[b].options.lr_scale),
                          resolve(blocks[b].options.decay, true) ? static_cast<T>(options_.weight_decay) : T(0)};

    T* w_data = params.values().data();
    const T* g_data = params.grads().data();
    const detail::Momentum<T> momentum{.buffer = options_.momentum > 0 ? this->state_.data(0) : nullptr,
                                       .mu = static_cast<T>(options_.momentum),
                                       .keep = static_cast<T>(1 - options_.dampening),
                                       .first = this->state_.step() == 0,
                                       .nesterov = options_.nesterov};
    detail::for_each_item(this->work_, [&](const detail::WorkItem& item) {
      // Plain locals, not a structured binding: clang before 16 cannot capture those in a lambda.
      const T lr = coefficients_[item.block].lr, wd = coefficients_[item.block].weight_decay;
      detail::for_each_tile<T>(item, [&](std::ptrdiff_t i, auto width) {
        constexpr int n = decltype(width)::value;
        auto w = detail::tile<n>(w_data, i);
        const Eigen::Array<T, n, 1> d = detail::tile<n>(g_data, i) + wd * w;
        detail::momentum_step<n>(w, d, lr, momentum, i);
      });
    });
    this->state_.advance();
    return true;
  }

 private:
  static SgdmOptions validate(const SgdmOptions& o) {
    detail::check_lr("Sgdm", o.lr);
    require(std::isfinite(o.momentum) && o.momentum >= 0, "Sgdm: momentum must be >= 0, got ", o.momentum);
    require(std::isfinite(o.dampening) && o.dampening >= 0 && o.dampening <= 1,
            "Sgdm: dampening must be in [0, 1], got ", o.dampening);
    require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "Sgdm: weight_decay must be >= 0, got ",
            o.weight_decay);
    require(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
            "Sgdm: nesterov needs momentum > 0 and dampening 0, got momentum ", o.momentum, " and dampening ",
            o.dampening);
    return o;
  }

  struct Coefficients {
    T lr;
    T weight_decay;
  };

  SgdmOptions options_;
  std::vector<Coefficients> coefficients_;
};

}  // namespace distopt::optim
