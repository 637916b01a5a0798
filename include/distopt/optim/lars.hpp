// LARS: layer-wise adaptive rate scaling, with LARC's trust clipping as an option.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include <Eigen/Core>

#include "distopt/core/compiler.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/optim/optimizer.hpp"

DISTOPT_PR105593_OFF

namespace distopt::optim {

/// Hyperparameters of Lars (defaults as in You et al. and NVIDIA's LARC).
struct LarsOptions {
  double lr = 0.1;
  double momentum = 0.9;
  double trust_coefficient = 1e-3;  ///< eta
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool trust_clip = false;          ///< LARC: trust <- min(trust / lr, 1)
  NonFinite on_non_finite = NonFinite::raise;
};

/// LARS (You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks", 2017), per
/// block with its own weight decay wd and learning rate lr (lr * lr_scale):
///   trust = eta * ||w|| / (||g|| + wd * ||w|| + eps)   (1 when ||w|| or ||g|| is 0)
///   trust <- min(trust / lr, 1)                        (trust_clip: NVIDIA apex's LARC)
///   d = (g + wd * w) * trust
///   b <- d on the first step, else mu * b + d;  d <- d + mu * b (nesterov) or b
///   w <- w - lr * d
/// Blocks whose `adapt` is off have trust 1, whose `decay` is off have wd 0; both default to off
/// for 1-D blocks (biases), as the paper and common practice exclude them.
/// Two passes: the per-block norms (fixed chunks, added in order: the same bits for any thread
/// count), then one fused update.
template <ParameterContainer P>
class Lars : public detail::OptimizerBase<P> {
  using Base = detail::OptimizerBase<P>;
  using T = typename P::scalar_type;
  using Norms = Eigen::Array<double, 3, 1>;  // ||w||^2, ||g||^2, non-finite items

 public:
  using options_type = LarsOptions;

  Lars(const P& params, LarsOptions options = {})
      : Base(params, "Lars", validate(options).lr, options.on_non_finite,
             options.momentum > 0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{}),
        options_(options),
        coefficients_(params.blocks().size()),
        sums_(params.blocks().size()) {}

  [[nodiscard]] const LarsOptions& options() const noexcept { return options_; }

  bool step(P& params) {
    this->check_layout(params);
    T* w_data = params.values().data();
    const T* g_data = params.grads().data();

    detail::block_sums<3>(this->work_, [&](const detail::WorkItem& item) {
      // ||w||^2, ||g||^2, and 0 * g, which is NaN exactly when some g is not finite (asked
      // directly: a huge finite gradient may square to infinity in T).
      detail::TileSums<T, 3> sums;
      detail::for_each_tile<T>(item, [&](std::ptrdiff_t i, auto width) {
        constexpr int n = decltype(width)::value;
        using Tile = Eigen::Array<T, n, 1>;
        const Tile w = detail::tile<n>(static_cast<const T*>(w_data), i);
        const Tile g = detail::tile<n>(g_data, i);
        sums.add(0, Tile(w.square()));
        sums.add(1, Tile(g.square()));
        sums.add(2, Tile(g * T(0)));
      });
      return Norms(sums.total(0), sums.total(1), std::isnan(sums.total(2)) ? 1.0 : 0.0);
    }, slots_, sums_);
    bool finite = true;
    for (const Norms& s : sums_) finite = finite && s(2) == 0.0;
    if (!this->accept_gradients(params, finite)) return false;

    const auto blocks = params.blocks();
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      const bool one_dimensional = blocks[b].rank() <= 1;
      const double lr = this->lr_ * blocks[b].options.lr_scale;
      const double wd = resolve(blocks[b].options.decay, !one_dimensional) ? options_.weight_decay : 0.0;
      double trust = 1.0;
      if (resolve(blocks[b].options.adapt, !one_dimensional)) {
        const double w_norm = std::sqrt(sums_[b](0)), g_norm = std::sqrt(sums_[b](1));
        if (w_norm > 0 && g_norm > 0)
          trust = options_.trust_coefficient * w_norm / (g_norm + wd * w_norm + options_.eps);
        if (options_.trust_clip && lr > 0) trust = std::min(trust / lr, 1.0);
      }
      coefficients_[b] = {static_cast<T>(lr), static_cast<T>(wd), static_cast<T>(trust)};
    }

    const detail::Momentum<T> momentum{.buffer = options_.momentum > 0 ? this->state_.data(0) : nullptr,
                                       .mu = static_cast<T>(options_.momentum),
                                       .keep = T(1),
                                       .first = this->state_.step() == 0,
                                       .nesterov = options_.nesterov};
    detail::for_each_item(this->work_, [&](const detail::WorkItem& item) {
      // Plain locals, not a structured binding: clang before 16 cannot capture those in a lambda.
      const T lr = coefficients_[item.block].lr, wd = coefficients_[item.block].weight_decay,
              trust = coefficients_[item.block].trust;
      detail::for_each_tile<T>(item, [&](std::ptrdiff_t i, auto width) {
        constexpr int n = decltype(width)::value;
        auto w = detail::tile<n>(w_data, i);
        const Eigen::Array<T, n, 1> d = trust * (detail::tile<n>(g_data, i) + wd * w);
        detail::momentum_step<n>(w, d, lr, momentum, i);
      });
    });
    this->state_.advance();
    return true;
  }

 private:
  static LarsOptions validate(const LarsOptions& o) {
    detail::check_lr("Lars", o.lr);
    require(std::isfinite(o.momentum) && o.momentum >= 0, "Lars: momentum must be >= 0, got ", o.momentum);
    require(std::isfinite(o.trust_coefficient) && o.trust_coefficient > 0,
            "Lars: trust_coefficient must be > 0, got ", o.trust_coefficient);
    require(std::isfinite(o.eps) && o.eps > 0, "Lars: eps must be > 0, got ", o.eps);
    require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "Lars: weight_decay must be >= 0, got ",
            o.weight_decay);
    require(!o.nesterov || o.momentum > 0, "Lars: nesterov needs momentum > 0, got momentum ", o.momentum);
    return o;
  }

  struct Coefficients {
    T lr;
    T weight_decay;
    T trust;
  };

  LarsOptions options_;
  std::vector<Coefficients> coefficients_;
  std::vector<Norms> slots_;
  std::vector<Norms> sums_;
};

}  // namespace distopt::optim

DISTOPT_PR105593_ON
