// Learning-rate schedules: the lr at step t as a pure function of t, so resuming needs only t.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <numbers>
#include <variant>
#include <vector>

#include "distopt/core/error.hpp"

namespace distopt::optim {

/// lr(t) = lr.
struct Constant {
  double lr;
};

/// StepLR: lr(t) = lr * gamma^floor(t / step_size).
struct StepDecay {
  double lr;
  std::int64_t step_size;
  double gamma = 0.1;
};

/// MultiStepLR: lr(t) = lr * gamma^(number of milestones <= t).
struct MultiStep {
  double lr;
  std::vector<std::int64_t> milestones;
  double gamma = 0.1;
};

/// CosineAnnealingLR (Loshchilov & Hutter, SGDR, ICLR 2017, without restarts):
/// lr(t) = eta_min + (lr - eta_min) * (1 + cos(pi * t / t_max)) / 2.
/// Past t_max the cosine goes on, as in PyTorch.
struct Cosine {
  double lr;
  std::int64_t t_max;
  double eta_min = 0.0;
};

/// PolynomialLR, the decay of the LARS paper: lr(t) = lr * (1 - min(t, total_steps) / total_steps)^power.
struct Polynomial {
  double lr;
  std::int64_t total_steps;
  double power = 1.0;
};

class Schedule;

/// Linear warmup composed with any schedule (PyTorch's LinearLR then SequentialLR):
/// for t < steps, lr(t) = then(0) * (start_factor + (1 - start_factor) * t / steps);
/// afterwards lr(t) = then(t - steps): the schedule after warmup starts from its own step 0
/// (Goyal et al. 2017, "Accurate, Large Minibatch SGD", gradual warmup).
struct Warmup {
  std::int64_t steps;
  double start_factor;
  std::shared_ptr<const Schedule> then;
};

/// A learning-rate schedule: any of the above, validated when built, evaluated as lr = s(t).
/// A value type: copying shares the immutable description.
class Schedule {
 public:
  using Spec = std::variant<Constant, StepDecay, MultiStep, Cosine, Polynomial, Warmup>;

  Schedule(Constant s) : spec_(check(s)) {}
  Schedule(StepDecay s) : spec_(check(s)) {}
  Schedule(MultiStep s) : spec_(check(std::move(s))) {}
  Schedule(Cosine s) : spec_(check(s)) {}
  Schedule(Polynomial s) : spec_(check(s)) {}
  Schedule(Warmup s) : spec_(check(std::move(s))) {}

  /// The learning rate at step `t` (t = 0 is the first step).
  [[nodiscard]] double operator()(std::int64_t t) const {
    require(t >= 0, "Schedule: step must be >= 0, got ", t);
    return std::visit([t](const auto& s) { return at(s, t); }, spec_);
  }

  [[nodiscard]] const Spec& spec() const noexcept { return spec_; }

 private:
  static double at(const Constant& s, std::int64_t) { return s.lr; }
  static double at(const StepDecay& s, std::int64_t t) {
    return s.lr * std::pow(s.gamma, static_cast<double>(t / s.step_size));
  }
  static double at(const MultiStep& s, std::int64_t t) {
    const auto passed = std::count_if(s.milestones.begin(), s.milestones.end(), [t](std::int64_t m) { return m <= t; });
    return s.lr * std::pow(s.gamma, static_cast<double>(passed));
  }
  static double at(const Cosine& s, std::int64_t t) {
    return s.eta_min + (s.lr - s.eta_min) *
                           (1 + std::cos(std::numbers::pi * static_cast<double>(t) / static_cast<double>(s.t_max))) / 2;
  }
  static double at(const Polynomial& s, std::int64_t t) {
    const double left = 1.0 - static_cast<double>(std::min(t, s.total_steps)) / static_cast<double>(s.total_steps);
    return s.lr * std::pow(left, s.power);
  }
  static double at(const Warmup& s, std::int64_t t) {
    if (t >= s.steps) return (*s.then)(t - s.steps);
    const double factor =
        s.start_factor + (1.0 - s.start_factor) * static_cast<double>(t) / static_cast<double>(s.steps);
    return (*s.then)(0) * factor;
  }

  static void check_lr(const char* kind, double lr) {
    require(std::isfinite(lr) && lr >= 0, kind, ": lr must be finite and >= 0, got ", lr);
  }
  static Constant check(Constant s) {
    check_lr("Constant", s.lr);
    return s;
  }
  static StepDecay check(StepDecay s) {
    check_lr("StepDecay", s.lr);
    require(s.step_size > 0, "StepDecay: step_size must be > 0, got ", s.step_size);
    require(std::isfinite(s.gamma) && s.gamma >= 0, "StepDecay: gamma must be >= 0, got ", s.gamma);
    return s;
  }
  static MultiStep check(MultiStep s) {
    check_lr("MultiStep", s.lr);
    require(std::isfinite(s.gamma) && s.gamma >= 0, "MultiStep: gamma must be >= 0, got ", s.gamma);
    for (std::size_t i = 0; i < s.milestones.size(); ++i) {
      require(s.milestones[i] > 0, "MultiStep: milestone ", i, " must be > 0, got ", s.milestones[i]);
      require(i == 0 || s.milestones[i] > s.milestones[i - 1], "MultiStep: milestones must increase, got ",
              s.milestones);
    }
    return s;
  }
  static Cosine check(Cosine s) {
    check_lr("Cosine", s.lr);
    require(s.t_max > 0, "Cosine: t_max must be > 0, got ", s.t_max);
    require(std::isfinite(s.eta_min) && s.eta_min >= 0, "Cosine: eta_min must be >= 0, got ", s.eta_min);
    return s;
  }
  static Polynomial check(Polynomial s) {
    check_lr("Polynomial", s.lr);
    require(s.total_steps > 0, "Polynomial: total_steps must be > 0, got ", s.total_steps);
    require(std::isfinite(s.power) && s.power >= 0, "Polynomial: power must be >= 0, got ", s.power);
    return s;
  }
  static Warmup check(Warmup s) {
    require(s.steps > 0, "Warmup: steps must be > 0, got ", s.steps);
    require(std::isfinite(s.start_factor) && s.start_factor >= 0 && s.start_factor <= 1,
            "Warmup: start_factor must be in [0, 1], got ", s.start_factor);
    require(s.then != nullptr, "Warmup: needs the schedule that follows it ('then')");
    return s;
  }

  Spec spec_;
};

/// Warmup for `steps` steps from `start_factor` of the following schedule's initial lr, then it.
[[nodiscard]] inline Schedule warmup(std::int64_t steps, double start_factor, Schedule then) {
  return Warmup{.steps = steps, .start_factor = start_factor, .then = std::make_shared<const Schedule>(std::move(then))};
}

/// Linear scaling rule (Goyal et al. 2017): lr = base_lr * batch / base_batch.
[[nodiscard]] inline double linear_scaling(double base_lr, std::int64_t base_batch, std::int64_t batch) {
  require(base_batch > 0 && batch > 0, "linear_scaling: batch sizes must be > 0, got ", base_batch, " and ", batch);
  return base_lr * static_cast<double>(batch) / static_cast<double>(base_batch);
}

/// Square-root scaling rule (Krizhevsky 2014; Hoffer et al. 2017): lr = base_lr * sqrt(batch / base_batch).
[[nodiscard]] inline double sqrt_scaling(double base_lr, std::int64_t base_batch, std::int64_t batch) {
  require(base_batch > 0 && batch > 0, "sqrt_scaling: batch sizes must be > 0, got ", base_batch, " and ", batch);
  return base_lr * std::sqrt(static_cast<double>(batch) / static_cast<double>(base_batch));
}

}  // namespace distopt::optim
