// What a scale costs before it runs: the runs of every stage, the images they train on and
// evaluate, and the wall time on this machine from a short throughput probe of the model the data
// calls for, on one group of ranks and on N (study::Work hands each stage's runs to the groups in
// list order, each group taking the next run when it finishes one; a stage's second work list
// waits for its first, and stages run one after another). An upper bound: early stopping, skipped
// LocalSGD cells and runs finished earlier only shorten it. The counts follow the stage programs'
// own work lists (stages 2 to 7).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/local_runs.hpp"
#include "common/study.hpp"
#include "distopt/data/images.hpp"
#include "distopt/nn/lenet5.hpp"

namespace distopt::study {

/// The methods stage 7 compares (sync, LocalSGD, SlowMo and DiLoCo, each with and without
/// compressed messages), each run with every seed.
inline constexpr std::size_t stage7_methods = 10;

/// One run's images: through a training step (forward and backward) and through evaluation.
struct RunImages {
  double train = 0, eval = 0;
};

/// One stage's share of the study.
struct StagePlan {
  std::string stage;
  std::size_t runs = 0;
  double train_images = 0;  ///< images through a training step (forward and backward)
  double eval_images = 0;   ///< images through evaluation (validation every epoch, test once per run)
  /// The runs of each of the stage's work lists, in list order (a list waits for the one before).
  std::vector<std::vector<RunImages>> lists{{}};
  /// Starts the stage's next work list.
  void next_list() { lists.emplace_back(); }
};

/// The sizes a plan needs: the prepared splits.
struct SplitSizes {
  std::size_t train = 0, validation = 0, test = 0;
};

[[nodiscard]] inline std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

/// The plan of every stage of `scale` on splits of `sizes`.
[[nodiscard]] inline std::vector<StagePlan> plan_study(const Scale& scale, const SplitSizes& sizes) {
  const auto n = static_cast<double>(sizes.train);
  const auto run_cost = [&](StagePlan& p, std::size_t runs, std::size_t epochs, double extra_eval = 0) {
    const RunImages one{.train = static_cast<double>(epochs) * n,
                        .eval = static_cast<double>(epochs * sizes.validation) + static_cast<double>(sizes.test) + extra_eval};
    p.runs += runs;
    p.train_images += static_cast<double>(runs) * one.train;
    p.eval_images += static_cast<double>(runs) * one.eval;
    p.lists.back().insert(p.lists.back().end(), runs, one);
  };
  std::vector<StagePlan> plans;

  StagePlan s2{.stage = "stage2_lenet"};
  run_cost(s2, 1, scale.scaled(scale.epochs_lenet));
  plans.push_back(s2);

  StagePlan s3{.stage = "stage3_centralized"};
  run_cost(s3, (scale.sgdm_lrs.size() + scale.adamw_lrs.size()) * scale.weight_decays.size(), scale.scaled(scale.epochs_search));
  s3.next_list();
  run_cost(s3, 2 * scale.seeds, scale.scaled(scale.epochs_final));
  plans.push_back(s3);

  StagePlan s4{.stage = "stage4_large_batch"};
  if (!scale.batch_sizes.empty()) {
    const std::size_t largest = *std::max_element(scale.batch_sizes.begin(), scale.batch_sizes.end());
    const std::size_t per_epoch = ceil_div(sizes.train, largest);
    const std::size_t epochs = std::max(scale.scaled(scale.epochs_large), ceil_div(scale.min_steps, per_epoch));
    run_cost(s4, scale.batch_sizes.size() * (2 + scale.lars_lrs.size() + scale.lamb_lrs.size()), epochs);
    s4.next_list();
    run_cost(s4, 4 * (scale.seeds - 1), epochs);  // the chosen settings' further seeds at the largest batch
  }
  plans.push_back(s4);

  const std::size_t epochs_local = scale.scaled(scale.epochs_local);
  const auto rounds = [&](std::size_t k, std::size_t h) {
    return ceil_div(epochs_local * ceil_div(ceil_div(sizes.train, k), local_batch_size), h);
  };
  StagePlan s5{.stage = "stage5_localsgd"};
  for (const std::size_t k : scale.workers)
    for (const std::size_t h : scale.local_steps)
      if ((k == scale.compare_workers && h == scale.compare_steps) || rounds(k, h) >= scale.min_rounds) run_cost(s5, 1, epochs_local);
  run_cost(s5, (scale.seeds - 1) + 3 * scale.seeds, epochs_local);  // LocalSGD's other seeds, sync, post-local, batch-B
  plans.push_back(s5);

  StagePlan s6{.stage = "stage6_slowmo"};
  std::size_t grid_runs = scale.slowmo_alphas.size() * scale.slowmo_betas.size();
  for (const double a : scale.slowmo_alphas)
    for (const double b : scale.slowmo_betas)
      if (a == 1.0 && b == 0.0) --grid_runs;  // SlowMo(1, 0) is LocalSGD: not run again
  run_cost(s6, grid_runs, epochs_local);  // stage 5 ran the references
  s6.next_list();
  run_cost(s6, (scale.seeds - 1) + 2, epochs_local);  // the best setting's further seeds, two more buffer strategies
  plans.push_back(s6);

  StagePlan s7{.stage = "stage7_diloco"};
  // And the test set after every epoch besides.
  run_cost(s7, stage7_methods * scale.seeds, epochs_local, static_cast<double>(epochs_local * sizes.test));
  plans.push_back(s7);
  return plans;
}

/// Measured throughput of the model of `info` on this machine: training images per second at batch
/// 64 and evaluation images per second at batch 1000 (the study's evaluation batch), each over
/// about `seconds` of random images.
struct Throughput {
  double train = 0, eval = 0;
};

[[nodiscard]] inline Throughput probe_throughput(const data::DatasetInfo& info, double seconds = 1.0) {
  using clock = std::chrono::steady_clock;
  nn::LeNet5<float> model(model_options(info, 0));
  const auto measure = [&](std::ptrdiff_t batch, bool train) {
    const auto size = static_cast<std::size_t>(batch) * info.shape.pixels();
    std::vector<float> pixels(size);
    std::mt19937 rng(0);
    std::normal_distribution<float> normal;
    for (float& p : pixels) p = normal(rng);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int32_t>(i % info.classes);
    const nn::Images<float> images{pixels.data(), batch, static_cast<std::ptrdiff_t>(info.shape.channels),
                                   static_cast<std::ptrdiff_t>(info.shape.height), static_cast<std::ptrdiff_t>(info.shape.width)};
    const auto step = [&] {
      if (train) (void)model.loss_and_gradient(images, labels, 1.0);
      else (void)model.evaluate(images, labels);
    };
    step();  // warm caches and the thread pool
    const auto start = clock::now();
    std::size_t done = 0;
    double elapsed = 0;
    while (elapsed < seconds) {
      step();
      done += static_cast<std::size_t>(batch);
      elapsed = std::chrono::duration<double>(clock::now() - start).count();
    }
    return static_cast<double>(done) / elapsed;
  };
  return {.train = measure(64, true), .eval = measure(1000, false)};
}

/// Estimated seconds of `p` at `t` on `groups` groups of ranks, each as fast as this machine: each
/// work list's runs taken in order by the group free first (study::Work's rule), the list done when
/// its last run is.
[[nodiscard]] inline double estimated_seconds(const StagePlan& p, const Throughput& t, std::size_t groups = 1) {
  double total = 0;
  for (const auto& list : p.lists) {
    std::vector<double> free_at(std::max<std::size_t>(1, groups), 0.0);
    for (const RunImages& run : list) {
      const auto first = std::min_element(free_at.begin(), free_at.end());
      *first += run.train / t.train + run.eval / t.eval;
    }
    total += *std::max_element(free_at.begin(), free_at.end());
  }
  return total;
}

}  // namespace distopt::study
