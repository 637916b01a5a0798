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

/// A fragment of the model (Streaming DiLoCo, Douillard et al. 2025): blocks [first_block,
/// end_block) of the parameter table, which hold the values [begin, end) of the flat buffer (the
/// alignment padding between them included, averaged like the rest: it stays zero).
struct Fragment {
  std::size_t first_block = 0, end_block = 0;
  std::size_t begin = 0, end = 0;
  [[nodiscard]] std::size_t size() const noexcept { return end - begin; }
  friend bool operator==(const Fragment&, const Fragment&) = default;
};

/// `count` fragments of consecutive whole blocks of `layout` (blocks are never cut: an outer
/// optimizer's per-block rules, LARS's and LAMB's trust ratios, need them whole). Fragment p
/// starts at the first block with at least p/count of the values before it, moved on so that
/// every fragment keeps at least one block. Throws std::invalid_argument naming the field when
/// there are fewer blocks than fragments.
template <class Layout>
[[nodiscard]] std::vector<Fragment> split_fragments(const Layout& layout, std::size_t count) {
  const auto blocks = layout.blocks();
  const std::size_t n = blocks.size();
  require(count >= 1, "Streaming.fragments must be at least 1");
  require(count <= n, "Streaming.fragments: ", count, " fragments of a model of ", n, " blocks (blocks are never cut)");
  std::vector<double> before(n + 1, 0.0);
  for (std::size_t b = 0; b < n; ++b) before[b + 1] = before[b] + static_cast<double>(blocks[b].size);
  std::vector<std::size_t> cut(count + 1, 0);
  cut[count] = n;
  for (std::size_t p = 1; p < count; ++p) {
    const double target = before[n] * static_cast<double>(p) / static_cast<double>(count);
    std::size_t b = 0;
    while (b < n && before[b] < target) ++b;
    cut[p] = std::min(std::max(b, cut[p - 1] + 1), n - (count - p));
  }
  std::vector<Fragment> fragments;
  for (std::size_t p = 0; p < count; ++p) {
    Fragment f{cut[p], cut[p + 1], static_cast<std::size_t>(blocks[cut[p]].offset), 0};
    f.end = p + 1 < count ? static_cast<std::size_t>(blocks[cut[p + 1]].offset) : static_cast<std::size_t>(layout.size());
    fragments.push_back(f);
  }
  return fragments;
}

/// An outer policy that can run once per fragment (Streaming DiLoCo): `split(fragments)` before
/// its first step, then `apply(p, x, x_avg, gamma)` with the values of fragment p alone.
template <class P>
concept FragmentedOuterPolicy = OuterPolicy<P> && requires(P& p, std::span<const Fragment> fragments, std::size_t index,
                                                           std::span<float> x, std::span<const double> avg, double gamma) {
  p.split(fragments);
  p.apply(index, x, avg, gamma);
};

/// LocalSGD (Lin, Stich, Patel, Jaggi 2020, "Don't use large mini-batches, use local SGD"):
/// after H local steps the global model is the workers' average, x <- (1/K) sum_k x_k.
struct LocalSgd {
  template <class T>
  void apply(std::span<T> x, std::span<const double> x_avg, double /*gamma*/) const {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(x_avg[i]);
  }
  void split(std::span<const Fragment>) const noexcept {}
  template <class T>
  void apply(std::size_t /*fragment*/, std::span<T> x, std::span<const double> x_avg, double gamma) const {
    apply(x, x_avg, gamma);
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
    if (u_.size() != x.size()) u_.assign(x.size(), 0.0);
    update(x, x_avg, gamma, std::span<double>(u_));
  }

  /// Fragments share one buffer u: each fragment's step reads and writes its own values of it.
  void split(std::span<const Fragment> fragments) { fragments_.assign(fragments.begin(), fragments.end()); }
  template <class T>
  void apply(std::size_t fragment, std::span<T> x, std::span<const double> x_avg, double gamma) {
    require(fragment < fragments_.size() && fragments_[fragment].size() == x.size(), "SlowMo: fragment ", fragment,
            " is not one of the ", fragments_.size(), " it was split into");
    if (u_.size() != fragments_.back().end) u_.assign(fragments_.back().end, 0.0);
    update(x, x_avg, gamma, std::span<double>(u_).subspan(fragments_[fragment].begin, x.size()));
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
  template <class T>
  void update(std::span<T> x, std::span<const double> x_avg, double gamma, std::span<double> u) const {
    require(std::isfinite(gamma) && gamma >= 0.0, "SlowMo: inner learning rate gamma must be finite and >= 0, got ", gamma);
    const double alpha = options_.alpha, beta = options_.beta;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double xi = static_cast<double>(x[i]);
      const double u_old = u[i];
      u[i] = beta * u_old + (gamma > 0.0 ? (xi - x_avg[i]) / gamma : 0.0);
      x[i] = static_cast<T>((1.0 - alpha) * xi + alpha * x_avg[i] - alpha * gamma * beta * u_old);
    }
  }

  SlowMoOptions options_;
  std::vector<double> u_;
  std::vector<Fragment> fragments_;
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
      : options_(options), label_(std::move(label)), model_size_(static_cast<std::size_t>(layout.size())) {
    for (const auto& block : layout.blocks()) blocks_.push_back(block);
    parts_.push_back(make_part(0, blocks_.size(), 0));
  }

  /// The outer optimizer (of fragment `fragment` once split).
  [[nodiscard]] const O& optimizer(std::size_t fragment = 0) const { return parts_.at(fragment).optimizer; }

  /// x and x_avg are the global model's flat buffers (padding included, which stays as it is).
  template <class T>
  void apply(std::span<T> x, std::span<const double> x_avg, double /*gamma*/) {
    require(parts_.size() == 1, "OuterOptimizer '", label_, "': split into ", parts_.size(), " fragments, stepped whole");
    require(x.size() == model_size_ && x_avg.size() == x.size(), "OuterOptimizer '", label_, "': ", x.size(),
            " values for a model of ", model_size_);
    step(parts_.front(), x, x_avg);
  }

  /// One optimizer per fragment from now on (Streaming DiLoCo: each fragment's outer state is its
  /// own, as its steps come at their own times). Before the first step only.
  void split(std::span<const Fragment> fragments) {
    require(!stepped_, "OuterOptimizer '", label_, "': split after a step");
    std::vector<Part> parts;
    for (const Fragment& f : fragments) {
      require(f.first_block < f.end_block && f.end_block <= blocks_.size() &&
                  f.begin == static_cast<std::size_t>(blocks_[f.first_block].offset),
              "OuterOptimizer '", label_, "': fragment of blocks [", f.first_block, ", ", f.end_block, ") does not fit the model");
      parts.push_back(make_part(f.first_block, f.end_block, f.begin));
      parts.back().size = f.size();
    }
    parts_ = std::move(parts);
  }

  /// The outer step of fragment `fragment`: x and x_avg hold that fragment's values alone.
  template <class T>
  void apply(std::size_t fragment, std::span<T> x, std::span<const double> x_avg, double /*gamma*/) {
    require(fragment < parts_.size() && x.size() == parts_[fragment].size && x_avg.size() == x.size(), "OuterOptimizer '",
            label_, "': ", x.size(), " values for fragment ", fragment, " of ", parts_.size());
    step(parts_[fragment], x, x_avg);
  }

  /// Under `prefix`: "optimizer." whole, "fragment.<p>.optimizer." once split.
  void save(Archive& archive, std::string_view prefix) const {
    for (std::size_t p = 0; p < parts_.size(); ++p) parts_[p].optimizer.save_state(archive, part_prefix(prefix, p));
  }
  void load(const Archive& archive, std::string_view prefix) {
    std::vector<O> loaded;
    for (std::size_t p = 0; p < parts_.size(); ++p) {
      loaded.push_back(parts_[p].optimizer);
      loaded.back().load_state(archive, part_prefix(prefix, p));
    }
    for (std::size_t p = 0; p < parts_.size(); ++p) parts_[p].optimizer = std::move(loaded[p]);
    stepped_ = true;
  }
  [[nodiscard]] std::string name() const { return label_; }

 private:
  struct Span {
    std::size_t from, to, size;  // a block's first element in the values given to apply and in params
  };
  struct Part {
    params_type params;  // x and delta in the outer optimizer's precision; only the step keeps state
    O optimizer;
    std::vector<Span> spans;
    std::size_t size = 0;  // values given to apply
  };

  Part make_part(std::size_t first, std::size_t end, std::size_t begin) const {
    params_type params;
    for (std::size_t b = first; b < end; ++b) params.add(blocks_[b].name, blocks_[b].shape, blocks_[b].options);
    O optimizer(params, options_);
    std::vector<Span> spans;
    for (std::size_t b = first; b < end; ++b)
      spans.push_back({static_cast<std::size_t>(blocks_[b].offset) - begin, static_cast<std::size_t>(params.blocks()[b - first].offset),
                       static_cast<std::size_t>(blocks_[b].size)});
    return {std::move(params), std::move(optimizer), std::move(spans), model_size_};
  }

  std::string part_prefix(std::string_view prefix, std::size_t p) const {
    return parts_.size() == 1 ? std::string(prefix) + "optimizer." : message(prefix, "fragment.", p, ".optimizer.");
  }

  template <class T>
  void step(Part& part, std::span<T> x, std::span<const double> x_avg) {
    using S = typename params_type::scalar_type;
    S* w = part.params.values().data();
    S* g = part.params.grads().data();
    for (const Span& span : part.spans)
      for (std::size_t i = 0; i < span.size; ++i) {
        w[span.to + i] = static_cast<S>(x[span.from + i]);
        g[span.to + i] = static_cast<S>(static_cast<double>(x[span.from + i]) - x_avg[span.from + i]);
      }
    part.optimizer.step(part.params);
    for (const Span& span : part.spans)
      for (std::size_t i = 0; i < span.size; ++i) x[span.from + i] = static_cast<T>(w[span.to + i]);
    stepped_ = true;
  }

  typename O::options_type options_;
  std::string label_;
  std::size_t model_size_;
  std::vector<Block> blocks_;  // the global model's table (offsets in its flat buffer)
  std::vector<Part> parts_;    // one per fragment; one for the whole model until split
  bool stepped_ = false;
};

/// DiLoCo's outer step (Douillard et al. 2023): SGD with Nesterov momentum on the pseudo-gradient,
/// lr 0.7 and momentum 0.9 by default, in double.
template <class Layout>
[[nodiscard]] OuterOptimizer<optim::Sgdm<ParameterSetD>> diloco_outer(const Layout& layout, double lr = 0.7, double momentum = 0.9) {
  return {layout, {.lr = lr, .momentum = momentum, .nesterov = true}, "diloco"};
}

static_assert(FragmentedOuterPolicy<LocalSgd>);
static_assert(FragmentedOuterPolicy<SlowMo>);

}  // namespace distopt::local
