// Adam with decoupled weight decay, torch.optim.AdamW semantics.
#pragma once

#include <cmath>
#include <vector>

#include "distopt/core/compiler.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/optim/optimizer.hpp"

DISTOPT_PR105593_OFF

namespace distopt::optim {

/// Hyperparameters of AdamW, PyTorch's names and defaults.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
  NonFinite on_non_finite = NonFinite::raise;
};

/// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019), exactly
/// torch.optim.AdamW, at step t = 1, 2, ...:
///   w <- w * (1 - lr * wd)                      (decoupled: the gradient never sees wd)
///   m <- b1 * m + (1 - b1) * g,   v <- b2 * v + (1 - b2) * g^2
///   v_max <- max(v_max, v)                      (amsgrad, Reddi et al. 2018; v_max replaces v below)
///   w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// Per block: lr * lr_scale, and decay unless the block's `decay` is off (on by default).
/// One fused pass over the flat buffer (square roots through Eigen, vectorised whatever the
/// user's -fno-math-errno), plus one read of the gradients to refuse non-finite ones.
template <ParameterContainer P>
class AdamW : public detail::OptimizerBase<P> {
  using Base = detail::OptimizerBase<P>;
  using T = typename P::scalar_type;

 public:
  using options_type = AdamWOptions;

  AdamW(const P& params, AdamWOptions options = {})
      : Base(params, "AdamW", validate(options).lr, options.on_non_finite,
             options.amsgrad ? std::vector<std::string>{"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
                             : std::vector<std::string>{"exp_avg", "exp_avg_sq"}),
        options_(options),
        coefficients_(params.blocks().size()) {}

  [[nodiscard]] const AdamWOptions& options() const noexcept { return options_; }

  bool step(P& params) {
    this->check_layout(params);
    if (!this->accept_gradients(params, this->gradients_finite(params))) return false;
    const auto t = static_cast<double>(this->state_.step() + 1);
    const double correction1 = 1 - std::pow(options_.beta1, t);
    const double correction2 = 1 - std::pow(options_.beta2, t);
    const auto blocks = params.blocks();
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      const double lr = this->lr_ * blocks[b].options.lr_scale;
      const double wd = resolve(blocks[b].options.decay, true) ? options_.weight_decay : 0.0;
      coefficients_[b] = {static_cast<T>(1 - lr * wd), static_cast<T>(lr / correction1)};
    }

    T* w_data = params.values().data();
    const T* g_data = params.grads().data();
    T* m_data = this->state_.data(0);
    T* v_data = this->state_.data(1);
    T* v_max_data = options_.amsgrad ? this->state_.data(2) : nullptr;
    // 1 - beta in double, then rounded: 1 - 0.999f is 1.3e-5 away from 0.001 and would bias v.
    const T b1 = static_cast<T>(options_.beta1), b2 = static_cast<T>(options_.beta2);
    const T one_minus_b1 = static_cast<T>(1 - options_.beta1), one_minus_b2 = static_cast<T>(1 - options_.beta2);
    const T eps = static_cast<T>(options_.eps);
    const T inv_sqrt_correction2 = static_cast<T>(1 / std::sqrt(correction2));

    detail::for_each_item(this->work_, [&](const detail::WorkItem& item) {
      // Plain locals, not a structured binding: clang before 16 cannot capture those in a lambda.
      const T decay = coefficients_[item.block].decay, step_size = coefficients_[item.block].step_size;
      detail::for_each_tile<T>(item, [&](std::ptrdiff_t i, auto width) {
        constexpr int n = decltype(width)::value;
        using Tile = Eigen::Array<T, n, 1>;
        auto w = detail::tile<n>(w_data, i);
        auto m = detail::tile<n>(m_data, i);
        auto v = detail::tile<n>(v_data, i);
        const Tile g = detail::tile<n>(g_data, i);
        const Tile m_new = b1 * m + one_minus_b1 * g;
        Tile v_new = b2 * v + one_minus_b2 * g.square();
        m = m_new;
        v = v_new;
        if (v_max_data) {
          auto v_max = detail::tile<n>(v_max_data, i);
          v_new = v_max.max(v_new);
          v_max = v_new;
        }
        w = w * decay - step_size * m_new / (v_new.sqrt() * inv_sqrt_correction2 + eps);
      });
    });
    this->state_.advance();
    return true;
  }

 private:
  static AdamWOptions validate(const AdamWOptions& o) {
    detail::check_lr("AdamW", o.lr);
    detail::check_betas("AdamW", o.beta1, o.beta2);
    require(std::isfinite(o.eps) && o.eps > 0, "AdamW: eps must be > 0, got ", o.eps);
    require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "AdamW: weight_decay must be >= 0, got ",
            o.weight_decay);
    return o;
  }

  struct Coefficients {
    T decay;      // 1 - lr * wd
    T step_size;  // lr / (1 - b1^t)
  };

  AdamWOptions options_;
  std::vector<Coefficients> coefficients_;
};

}  // namespace distopt::optim

DISTOPT_PR105593_ON
