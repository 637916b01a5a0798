// LAMB: Adam moments with a layer-wise trust ratio.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "distopt/core/compiler.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/optim/optimizer.hpp"

DISTOPT_PR105593_OFF

namespace distopt::optim {

/// Hyperparameters of Lamb (defaults as in You et al. 2020 and NVIDIA's FusedLAMB).
struct LambOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-6;
  double weight_decay = 1e-2;
  bool bias_correction = true;
  double phi_min = 0.0;  ///< gamma_l: phi(||w||) = clamp(||w||, phi_min, phi_max)
  double phi_max = std::numeric_limits<double>::infinity();  ///< gamma_u
  double max_grad_norm = 0.0;  ///< global gradient-norm clipping before the moments; 0 = off
  NonFinite on_non_finite = NonFinite::raise;
};

/// LAMB (You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
/// ICLR 2020, Algorithm 2), at step t = 1, 2, ...:
///   g <- g * min(1, max_grad_norm / ||g||_all)          (optional, over all blocks)
///   m <- b1 * m + (1 - b1) * g,  v <- b2 * v + (1 - b2) * g^2
///   r = m^ / (sqrt(v^) + eps)   with m^ = m / (1 - b1^t), v^ = v / (1 - b2^t) (bias_correction)
///   u = r + wd * w
///   w <- w - lr * phi(||w||) / ||u|| * u   per block (ratio 1 when a norm is 0)
/// Blocks whose `adapt` is off have ratio 1, whose `decay` is off have wd 0; both default to off
/// for 1-D blocks. Passes: the gradient norm (only when clipping), then the norms of w and u
/// without writing anything, then one fused update of m, v and w.
template <ParameterContainer P>
class Lamb : public detail::OptimizerBase<P> {
  using Base = detail::OptimizerBase<P>;
  using T = typename P::scalar_type;
  using Sums = Eigen::Array<double, 3, 1>;  // pass 0: ||g||^2, non-finite; pass 1: ||w||^2, ||u||^2, non-finite

 public:
  using options_type = LambOptions;

  Lamb(const P& params, LambOptions options = {})
      : Base(params, "Lamb", validate(options).lr, options.on_non_finite, {"exp_avg", "exp_avg_sq"}),
        options_(options),
        coefficients_(params.blocks().size()),
        sums_(params.blocks().size()) {}

  [[nodiscard]] const LambOptions& options() const noexcept { return options_; }

  bool step(P& params) {
    this->check_layout(params);
    T* w_data = params.values().data();
    const T* g_data = params.grads().data();
    T* m_data = this->state_.data(0);
    T* v_data = this->state_.data(1);

    // Pass 0: the global gradient norm, when clipping asks for it.
    double clip = 1;
    if (options_.max_grad_norm > 0) {
      detail::block_sums<3>(this->work_, [&](const detail::WorkItem& item) {
        detail::TileSums<T, 2> sums;
        detail::for_each_tile<T>(item, [&](std::ptrdiff_t i, auto width) {
          constexpr int n = decltype(width)::value;
          using Tile = Eigen::Array<T, n, 1>;
          const Tile g = detail::tile<n>(g_data, i);
          sums.add(0, Tile(g.square()));
          sums.add(1, Tile(g * T(0)));
        });
        return Sums(sums.total(0), std::isnan(sums.total(1)) ? 1.0 : 0.0, 0.0);
      }, slots_, sums_);
      double total = 0, bad = 0;
      for (const Sums& s : sums_) {
        total += s(0);
        bad += s(1);
      }
      if (!this->accept_gradients(params, bad == 0)) return false;
      const double norm = std::sqrt(total);
      if (norm > options_.max_grad_norm) clip = options_.max_grad_norm / norm;
    }

    const auto t = static_cast<double>(this->state_.step() + 1);
    // 1 - beta in double, then rounded (see AdamW), with the clipping factor folded in.
    const T b1 = static_cast<T>(options_.beta1), b2 = static_cast<T>(options_.beta2);
    const T g_weight = static_cast<T>((1 - options_.beta1) * clip);
    const T g2_weight = static_cast<T>((1 - options_.beta2) * clip * clip);
    const T eps = static_cast<T>(options_.eps);
    const T c1 = options_.bias_correction ? static_cast<T>(1 / (1 - std::pow(options_.beta1, t))) : T(1);
    const T c2 = options_.bias_correction ? static_cast<T>(1 / (1 - std::pow(options_.beta2, t))) : T(1);
    const auto blocks = params.blocks();
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      const bool decay = resolve(blocks[b].options.decay, blocks[b].rank() > 1);
      coefficients_[b].weight_decay = decay ? static_cast<T>(options_.weight_decay) : T(0);
    }
    // u = m^ / (sqrt(v^) + eps) + wd * w, written once and used by both passes.
    auto update = [=](const auto& m, const auto& v, const auto& w, T wd) {
      return (m * c1) / ((v * c2).sqrt() + eps) + wd * w;
    };

    // Pass 1: ||w|| and ||u|| per block, from the moments as they will be, writing nothing; and
    // 0 * g, NaN exactly when some gradient is not finite.
    detail::block_sums<3>(this->work_, [&](const detail::WorkItem& item) {
      const T wd = coefficients_[item.block].weight_decay;
      detail::TileSums<T, 3> sums;
      detail::for_each_tile<T>(item, [&](std::ptrdiff_t i, auto width) {
        constexpr int n = decltype(width)::value;
        using Tile = Eigen::Array<T, n, 1>;
        const Tile w = detail::tile<n>(static_cast<const T*>(w_data), i);
        const Tile g = detail::tile<n>(g_data, i);
        const Tile m = b1 * detail::tile<n>(static_cast<const T*>(m_data), i) + g_weight * g;
        const Tile v = b2 * detail::tile<n>(static_cast<const T*>(v_data), i) + g2_weight * g.square();
        sums.add(0, Tile(w.square()));
        sums.add(1, Tile(update(m, v, w, wd).square()));
        sums.add(2, Tile(g * T(0)));
      });
      return Sums(sums.total(0), sums.total(1), std::isnan(sums.total(2)) ? 1.0 : 0.0);
    }, slots_, sums_);
    if (options_.max_grad_norm <= 0) {
      double bad = 0;
      for (const Sums& s : sums_) bad += s(2);
      if (!this->accept_gradients(params, bad == 0)) return false;
    }

    for (std::size_t b = 0; b < blocks.size(); ++b) {
      double ratio = 1.0;
      if (resolve(blocks[b].options.adapt, blocks[b].rank() > 1)) {
        const double w_norm = std::sqrt(sums_[b](0)), u_norm = std::sqrt(sums_[b](1));
        if (w_norm > 0 && u_norm > 0) ratio = std::clamp(w_norm, options_.phi_min, options_.phi_max) / u_norm;
      }
      coefficients_[b].step_size = static_cast<T>(this->lr_ * blocks[b].options.lr_scale * ratio);
    }

    // Pass 2: the moments and the weights, in one fused pass.
    detail::for_each_item(this->work_, [&](const detail::WorkItem& item) {
      // Plain locals, not a structured binding: clang before 16 cannot capture those in a lambda.
      const T wd = coefficients_[item.block].weight_decay, step_size = coefficients_[item.block].step_size;
      detail::for_each_tile<T>(item, [&](std::ptrdiff_t i, auto width) {
        constexpr int n = decltype(width)::value;
        using Tile = Eigen::Array<T, n, 1>;
        auto w = detail::tile<n>(w_data, i);
        auto m = detail::tile<n>(m_data, i);
        auto v = detail::tile<n>(v_data, i);
        const Tile g = detail::tile<n>(g_data, i);
        const Tile m_new = b1 * m + g_weight * g;
        const Tile v_new = b2 * v + g2_weight * g.square();
        m = m_new;
        v = v_new;
        w -= step_size * update(m_new, v_new, Tile(w), wd);
      });
    });
    this->state_.advance();
    return true;
  }

 private:
  static LambOptions validate(const LambOptions& o) {
    detail::check_lr("Lamb", o.lr);
    detail::check_betas("Lamb", o.beta1, o.beta2);
    require(std::isfinite(o.eps) && o.eps > 0, "Lamb: eps must be > 0, got ", o.eps);
    require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "Lamb: weight_decay must be >= 0, got ",
            o.weight_decay);
    require(o.phi_min >= 0 && !std::isnan(o.phi_max), "Lamb: phi_min must be >= 0, got ", o.phi_min);
    require(o.phi_min <= o.phi_max, "Lamb: phi bounds reversed: phi_min ", o.phi_min, " > phi_max ", o.phi_max);
    require(std::isfinite(o.max_grad_norm) && o.max_grad_norm >= 0, "Lamb: max_grad_norm must be >= 0, got ",
            o.max_grad_norm);
    return o;
  }

  struct Coefficients {
    T weight_decay;
    T step_size;  // lr * lr_scale * trust ratio
  };

  LambOptions options_;
  std::vector<Coefficients> coefficients_;
  std::vector<Sums> slots_;
  std::vector<Sums> sums_;
};

}  // namespace distopt::optim

DISTOPT_PR105593_ON
