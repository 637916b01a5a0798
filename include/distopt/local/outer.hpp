// Outer policies of LocalTrainer: what the global model becomes once the K workers are averaged.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "distopt/core/archive.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/parameter_set.hpp"
#include "distopt/optim/optimizer.hpp"
#include "distopt/optim/sgdm.hpp"

namespace distopt::local {

/// What happens to the workers' inner optimizer buffers (momentum, Adam moments) at the start of
/// each round (Wang et al. 2020, Section 3): `reset` to zero, `maintain` each worker's own, or
/// `average` them across workers at each synchronisation, like the weights.
enum class InnerBuffers { reset, maintain, average };

/// An outer policy: `apply(x, x_avg, gamma)` turns the global model x (float or double values)
/// and the exact average of the workers' models x_avg (double) into the next global model, gamma
/// being the inner learning rate of the round's last step; `save`/`load` keep its state in a
/// checkpoint under a prefix; `name()` labels reports.
template <class P>
concept OuterPolicy = requires(P& p, const P& cp, std::span<float> x, std::span<const double> avg, double gamma,
                               Archive& out, const Archive& in) {
  p.apply(x, avg, gamma);
  cp.save(out, std::string_view("outer."));
  p.load(in, std::string_view("outer."));
  { cp.name() } -> std::convertible_to<std::string>;
};

/// LocalSGD (Lin, Stich, Patel, Jaggi 2020, "Don't use large mini-batches, use local SGD"):
/// after H local steps the global model is the workers' average, x <- (1/K) sum_k x_k.
struct LocalSgd {
  template <class T>
  void apply(std::span<T> x, std::span<const double> x_avg, double /*gamma*/) const {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(x_avg[i]);
  }
  void save(Archive&, std::string_view) const {}
  void load(const Archive&, std::string_view) {}
  [[nodiscard]] std::string name() const { return "localsgd"; }
};

/// Options of SlowMo: slow learning rate alpha > 0 and slow momentum beta in [0, 1).
struct SlowMoOptions {
  double alpha = 1.0;
  double beta = 0.0;
};

/// SlowMo (Wang, Tantia, Ballas, Rabbat 2020, "SlowMo: improving communication-efficient
/// distributed SGD with slow momentum", Algorithm 1), after the exact average x_avg:
///   u <- beta u + (x - x_avg) / gamma,    x <- x - alpha gamma u,
/// gamma the inner learning rate. Dividing by gamma makes u a momentum of gradients (the local
/// steps moved x by about gamma times a gradient sum), so beta means the same whatever the
/// schedule does to gamma; multiplying back turns it into a step again.
/// The update is computed in double in the expanded, equal form
///   x <- (1 - alpha) x + alpha x_avg - alpha gamma beta u_old,
/// which gives x_avg exactly when alpha = 1 and beta = 0: SlowMo(1, 0) is LocalSGD bit for bit.
/// With gamma = 0 (the end of a schedule decaying to zero) the (x - x_avg) / gamma term is
/// dropped: u <- beta u, x <- (1 - alpha) x + alpha x_avg.
class SlowMo {
 public:
  explicit SlowMo(SlowMoOptions options = {}) : options_(options) {
    require(std::isfinite(options.alpha) && options.alpha > 0.0, "SlowMoOptions.alpha must be positive, got ", options.alpha);
    require(std::isfinite(options.beta) && options.beta >= 0.0 && options.beta < 1.0,
            "SlowMoOptions.beta must be in [0, 1), got ", options.beta);
  }

  [[nodiscard]] const SlowMoOptions& options() const noexcept { return options_; }
  /// The slow momentum buffer u (empty before the first round).
  [[nodiscard]] std::span<const double> momentum() const noexcept { return u_; }

  template <class T>
  void apply(std::span<T> x, std::span<const double> x_avg, double gamma) {
    require(std::isfinite(gamma) && gamma >= 0.0, "SlowMo: inner learning rate gamma must be finite and >= 0, got ", gamma);
    if (u_.size() != x.size()) u_.assign(x.size(), 0.0);
    const double alpha = options_.alpha, beta = options_.beta;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double xi = static_cast<double>(x[i]);
      const double u_old = u_[i];
      u_[i] = beta * u_old + (gamma > 0.0 ? (xi - x_avg[i]) / gamma : 0.0);
      x[i] = static_cast<T>((1.0 - alpha) * xi + alpha * x_avg[i] - alpha * gamma * beta * u_old);
    }
  }

  void save(Archive& archive, std::string_view prefix) const {
    archive.put<double>(std::string(prefix) + "slow_momentum", std::span<const double>(u_),
                        {static_cast<std::ptrdiff_t>(u_.size())});
  }
  void load(const Archive& archive, std::string_view prefix) {
    const std::string field = std::string(prefix) + "slow_momentum";
    require(archive.contains(field), "checkpoint '", archive.source(), "': field '", field, "' is missing (not a SlowMo run?)");
    const auto u = archive.get<double>(field);
    u_.assign(u.begin(), u.end());
  }
  [[nodiscard]] std::string name() const { return "slowmo"; }

 private:
  SlowMoOptions options_;
  std::vector<double> u_;
};

/// Any of the library's optimizers as the outer step, applied to the pseudo-gradient
///   delta = x - x_avg,     x <- opt.step(x, delta)
/// (Douillard et al. 2023, "DiLoCo: distributed low-communication training of language models",
/// Algorithm 1; Sun et al. 2024 and torchft make the outer optimizer a parameter). The step runs in
/// double on a copy of x (`Params`, ParameterSetD by default, with the global model's blocks, so
/// per-block lr scales and decay switches apply), then x takes its values rounded to the model's
/// scalar. delta points away from the average: a plain step with lr 1 lands on x_avg.
///   LocalSGD      = OuterOptimizer<Sgdm>(lr 1, no momentum)            (x - (x - x_avg) = x_avg)
///   SlowMo(a, b)  = OuterOptimizer<Sgdm>(lr a, momentum b) when the inner lr gamma is constant:
///                   SlowMo's u is b u + delta / gamma and its step a gamma u, so gamma u is this
///                   momentum buffer; with a changing gamma they differ (SlowMo rescales its
///                   buffer by the ratio of gammas, this one does not)
///   DiLoCo        = inner AdamW, OuterOptimizer<Sgdm>(lr 0.7, momentum 0.9, Nesterov)
/// The outer optimizer's lr is its own (not the inner schedule's), and its weight decay should be
/// 0: the inner optimizer already decays, once.
template <optim::Optimizer O>
class OuterOptimizer {
 public:
  using optimizer_type = O;
  using params_type = typename O::params_type;

  /// `layout` is the global model's parameters (its blocks and their options), `options` the outer
  /// optimizer's; `label` names the policy in reports and checkpoints ("diloco", "outer-sgdm", ...).
  template <class Layout>
  OuterOptimizer(const Layout& layout, typename O::options_type options, std::string label)
      : params_(copy_layout(layout)), optimizer_(params_, options), label_(std::move(label)),
        model_size_(static_cast<std::size_t>(layout.size())) {
    const auto blocks = layout.blocks();
    for (std::size_t b = 0; b < blocks.size(); ++b)
      spans_.push_back({static_cast<std::size_t>(blocks[b].offset), static_cast<std::size_t>(params_.blocks()[b].offset),
                        static_cast<std::size_t>(blocks[b].size)});
  }

  [[nodiscard]] const O& optimizer() const noexcept { return optimizer_; }

  /// x and x_avg are the global model's flat buffers (padding included, which stays as it is).
  template <class T>
  void apply(std::span<T> x, std::span<const double> x_avg, double /*gamma*/) {
    require(x.size() == model_size_ && x_avg.size() == x.size(), "OuterOptimizer '", label_, "': ", x.size(),
            " values for a model of ", model_size_);
    using S = typename params_type::scalar_type;
    S* w = params_.values().data();
    S* g = params_.grads().data();
    for (const Span& span : spans_)
      for (std::size_t i = 0; i < span.size; ++i) {
        w[span.to + i] = static_cast<S>(x[span.from + i]);
        g[span.to + i] = static_cast<S>(static_cast<double>(x[span.from + i]) - x_avg[span.from + i]);
      }
    optimizer_.step(params_);
    for (const Span& span : spans_)
      for (std::size_t i = 0; i < span.size; ++i) x[span.from + i] = static_cast<T>(w[span.to + i]);
  }

  void save(Archive& archive, std::string_view prefix) const { optimizer_.save_state(archive, std::string(prefix) + "optimizer."); }
  void load(const Archive& archive, std::string_view prefix) {
    O candidate = optimizer_;
    candidate.load_state(archive, std::string(prefix) + "optimizer.");
    optimizer_ = std::move(candidate);
  }
  [[nodiscard]] std::string name() const { return label_; }

 private:
  struct Span {
    std::size_t from, to, size;  // a block's first element in the model's buffer and in params_
  };

  template <class Layout>
  static params_type copy_layout(const Layout& layout) {
    params_type p;
    for (const auto& block : layout.blocks()) p.add(block.name, block.shape, block.options);
    return p;
  }

  params_type params_;  // x and delta in the outer optimizer's precision; only the step keeps state
  O optimizer_;
  std::string label_;
  std::size_t model_size_;
  std::vector<Span> spans_;
};

/// DiLoCo's outer step (Douillard et al. 2023): SGD with Nesterov momentum on the pseudo-gradient,
/// lr 0.7 and momentum 0.9 by default, in double.
template <class Layout>
[[nodiscard]] OuterOptimizer<optim::Sgdm<ParameterSetD>> diloco_outer(const Layout& layout, double lr = 0.7, double momentum = 0.9) {
  return {layout, {.lr = lr, .momentum = momentum, .nesterov = true}, "diloco"};
}

static_assert(OuterPolicy<LocalSgd>);
static_assert(OuterPolicy<SlowMo>);

}  // namespace distopt::local
