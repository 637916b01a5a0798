// The Optimizer concept and what SGDM, AdamW, LARS and LAMB share: learning rate, state, the
// non-finite gradient policy and the work list.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "distopt/core/compiler.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/error.hpp"
#include "distopt/optim/detail/work.hpp"
#include "distopt/optim/state.hpp"

DISTOPT_PR105593_OFF

namespace distopt::optim {

/// An optimizer of the library, as the step kernel (optim/step.hpp), LocalTrainer and the
/// checkpoints use it.
///
/// Contract: constructed from the parameter container it will update (which fixes the layout its
/// state is sized for); `step(params)` reads `params.grads()` and updates `params.values()` and the
/// state in place, returning false when a non-finite gradient made it skip the step (or throwing
/// std::domain_error, by its policy); `set_lr` changes the learning rate from the next step on
/// (schedules call it once per step); copying an optimizer gives an independent replica of its
/// state (LocalTrainer's workers, and checkpoints load into a copy first); `state()` is that state,
/// its step count and named buffers (SlowMo's "average" strategy averages them across workers).
/// Saving it is SavesState's (core/block_archive.hpp), which the checkpoints ask for.
/// Hyperparameters stay the caller's: nothing here reads `options()`.
template <class O>
concept Optimizer = std::copy_constructible<O> && std::is_copy_assignable_v<O> &&
                    requires(O& opt, const O& const_opt, typename O::params_type& params, double lr, std::string_view prefix) {
  requires ParameterContainer<typename O::params_type>;
  { opt.step(params) } -> std::same_as<bool>;
  { const_opt.lr() } -> std::same_as<double>;
  opt.set_lr(lr);
  { const_opt.step_count() } -> std::same_as<std::int64_t>;
  opt.reset_state();
  opt.state().buffer_names();
  opt.state().buffer(prefix);
};

namespace detail {

/// Checks a learning rate the way every optimizer needs it.
inline void check_lr(const char* kind, double lr) {
  require(std::isfinite(lr) && lr >= 0.0, kind, ": lr must be finite and >= 0, got ", lr);
}

/// Adam-style moment decay rates live in [0, 1).
inline void check_betas(const char* kind, double beta1, double beta2) {
  require(std::isfinite(beta1) && beta1 >= 0.0 && beta1 < 1.0, kind, ": beta1 must be in [0, 1), got ", beta1);
  require(std::isfinite(beta2) && beta2 >= 0.0 && beta2 < 1.0, kind, ": beta2 must be in [0, 1), got ", beta2);
}

/// The members every optimizer has. Not virtual: each optimizer is a class template that inherits
/// these and adds its `step`.
template <ParameterContainer P>
class OptimizerBase {
 public:
  using params_type = P;
  using scalar_type = typename P::scalar_type;

  /// The learning rate of the next step (before per-block lr_scale).
  [[nodiscard]] double lr() const noexcept { return lr_; }
  void set_lr(double lr) {
    check_lr(state_.kind().c_str(), lr);
    lr_ = lr;
  }
  /// Steps applied (skipped steps excluded).
  [[nodiscard]] std::int64_t step_count() const noexcept { return state_.step(); }
  /// Steps refused because a gradient was not finite (with NonFinite::skip).
  [[nodiscard]] std::int64_t skipped_steps() const noexcept { return skipped_; }

  [[nodiscard]] OptimizerState<scalar_type>& state() noexcept { return state_; }
  [[nodiscard]] const OptimizerState<scalar_type>& state() const noexcept { return state_; }
  /// As freshly constructed: step 0, zero buffers; the learning rate is kept.
  void reset_state() noexcept { state_.reset(); }

  /// Saves the state (not the options, which belong to the caller's configuration).
  template <ArrayStore Store>
  void save_state(Store& archive, std::string_view prefix = "optimizer.") const {
    state_.save(archive, prefix);
  }
  /// Loads a state saved by the same kind of optimizer over the same layout; throws
  /// std::invalid_argument naming the field otherwise.
  template <ArrayStore Store>
  void load_state(const Store& archive, std::string_view prefix = "optimizer.") {
    state_.load(archive, prefix);
  }

 protected:
  OptimizerBase(const P& params, std::string kind, double lr, NonFinite policy, std::vector<std::string> buffers)
      : state_(std::move(kind), params.blocks(), static_cast<std::ptrdiff_t>(params.size()), std::move(buffers)),
        work_(make_work(params.blocks())),
        num_blocks_(params.blocks().size()),
        lr_(lr),
        policy_(policy) {}  // `lr` arrives checked: each optimizer validates its options first

  /// The params passed to `step` must be the layout the optimizer was built for.
  void check_layout(const P& params) const {
    require(static_cast<std::ptrdiff_t>(params.size()) == state_.size() &&
                params.blocks().size() == num_blocks_,
            state_.kind(), ": step on a parameter container of another layout (", params.size(), " elements in ",
            params.blocks().size(), " blocks; this optimizer was built for ", state_.size(), " in ", num_blocks_, ")");
  }

  /// Applies the policy when `finite` is false: throws naming the first non-finite block and the
  /// step, or counts a skipped step. Returns whether the step may go ahead.
  bool accept_gradients(P& params, bool finite) {
    if (finite) return true;
    if (policy_ == NonFinite::skip) {
      ++skipped_;
      return false;
    }
    const scalar_type* g = params.grads().data();
    for (const WorkItem& item : work_)
      if (!all_finite(g, item))
        fail<std::domain_error>(state_.kind(), ": non-finite gradient in block '", params.blocks()[item.block].name,
                                "' at step ", state_.step() + 1, " (element ",
                                item.begin - params.blocks()[item.block].offset, " or after)");
    fail<std::domain_error>(state_.kind(), ": non-finite gradient at step ", state_.step() + 1);
  }

  /// One pass over the gradients: true when all are finite.
  [[nodiscard]] bool gradients_finite(P& params) const {
    const scalar_type* g = params.grads().data();
    int bad = 0;
    const auto n = static_cast<std::ptrdiff_t>(work_.size());
#pragma omp parallel for schedule(static) reduction(+ : bad) if (n > 1 && !omp_in_parallel())
    for (std::ptrdiff_t i = 0; i < n; ++i) bad += all_finite(g, work_[static_cast<std::size_t>(i)]) ? 0 : 1;
    return bad == 0;
  }

  OptimizerState<scalar_type> state_;
  std::vector<WorkItem> work_;
  std::size_t num_blocks_;
  double lr_;
  NonFinite policy_;
  std::int64_t skipped_ = 0;
};

}  // namespace detail
}  // namespace distopt::optim

DISTOPT_PR105593_ON
