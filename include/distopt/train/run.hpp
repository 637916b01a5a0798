// Training runs: train_epoch, evaluate and run_training, with gradient
// accumulation, early stopping, checkpoints, bit-exact resume and metrics.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/data/cache.hpp"
#include "distopt/data/loader.hpp"
#include "distopt/nn/model.hpp"
#include "distopt/optim/accumulation.hpp"
#include "distopt/optim/optimizer.hpp"
#include "distopt/optim/schedule.hpp"
#include "distopt/train/checkpoint.hpp"
#include "distopt/train/metrics.hpp"

namespace distopt::train {

/// Loss and accuracies of a model over a set.
struct Evaluation {
  double loss = std::nan("");
  double accuracy = std::nan("");  ///< top-1
  double top5 = std::nan("");
  std::int64_t count = 0;
};

/// Evaluates `model` on every sample of `set`, normalised, in batches of `batch_size`; the loss
/// is the mean over samples. The same bits for any thread count.
template <nn::Model M>
[[nodiscard]] Evaluation evaluate(M& model, const data::LabelledImages& set, const data::Normalizer& normalizer,
                                  std::size_t batch_size = 1000) {
  if (set.size() == 0) return {};
  data::Loader loader(set, normalizer, {.batch_size = batch_size, .shuffle = false});
  double loss_sum = 0;
  std::int64_t correct1 = 0, correct5 = 0, count = 0;
  while (const data::Batch* batch = loader.next()) {
    const nn::LossStats s = model.evaluate(batch->images(), batch->labels());
    loss_sum += s.loss * static_cast<double>(s.count);
    correct1 += s.correct1;
    correct5 += s.correct5;
    count += s.count;
  }
  const double n = static_cast<double>(count);
  return {loss_sum / n, static_cast<double>(correct1) / n, static_cast<double>(correct5) / n, count};
}

/// Thrown inside a run when the loss or a gradient stops being finite; run_training turns it into
/// a "diverged" summary instead of an error.
struct Diverged : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// How a training step is cut into micro-batches: `accumulation_steps` when given (> 0), else
/// automatic, ceil(batch / micro_batch_cap) (the study: batch / 4096 above 4096). Each step
/// adds the micro-batch gradients with weights n_k / N, so the update is the one of the whole batch.
struct StepOptions {
  std::size_t accumulation_steps = 0;
  std::size_t micro_batch_cap = 4096;
  std::size_t log_every = 50;  ///< a "step" record every this many steps (0: none)
};

/// Totals of one epoch of training.
struct EpochTotals {
  double loss = 0;
  double accuracy = 0;
  std::int64_t samples = 0;
  std::int64_t steps = 0;
  double seconds = 0;
};

/// One epoch: every batch the loader hands out from its current position, each one optimizer
/// step at lr = schedule(step). `step` is the global step count, advanced by each step.
/// Throws Diverged on a non-finite loss or gradient.
template <nn::Model M, optim::Optimizer O>
EpochTotals train_epoch(M& model, O& optimizer, const optim::Schedule& schedule, data::Loader& loader, std::int64_t& step,
                        const StepOptions& options = {}, const Metrics* metrics = nullptr) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto& params = model.parameters();
  const std::size_t batch_size = loader.options().batch_size;
  const std::size_t cap = options.accumulation_steps > 0
                              ? (batch_size + options.accumulation_steps - 1) / options.accumulation_steps
                              : options.micro_batch_cap;
  require(cap > 0, "StepOptions.micro_batch_cap must be positive");
  EpochTotals totals;
  double loss_sum = 0, window_loss = 0;
  std::int64_t correct = 0, window_correct = 0, window_samples = 0;
  auto window_start = clock::now();
  while (const data::Batch* batch = loader.next()) {
    params.grads().setZero();
    const auto n = static_cast<std::int64_t>(batch->size());
    const nn::Images<float> images = batch->images();
    nn::LossStats stats_sum;
    double batch_loss = 0;
    for (const optim::MicroBatch& micro : optim::split_batch(n, static_cast<std::int64_t>(cap))) {
      const auto labels = batch->labels().subspan(static_cast<std::size_t>(micro.begin),
                                                  static_cast<std::size_t>(micro.end - micro.begin));
      const nn::LossStats s = model.loss_and_gradient(images.slice(micro.begin, micro.end), labels, micro.weight);
      batch_loss += s.loss * micro.weight;
      stats_sum.correct1 += s.correct1;
    }
    if (!std::isfinite(batch_loss))
      throw Diverged(message("loss is ", batch_loss, " at step ", step + 1, " (epoch ", batch->position().epoch + 1, ")"));
    optimizer.set_lr(schedule(step));
    try {
      optimizer.step(params);
    } catch (const std::domain_error& e) {
      throw Diverged(e.what());
    }
    ++step;
    ++totals.steps;
    loss_sum += batch_loss * static_cast<double>(n);
    correct += stats_sum.correct1;
    totals.samples += n;
    window_loss += batch_loss * static_cast<double>(n);
    window_correct += stats_sum.correct1;
    window_samples += n;
    if (metrics != nullptr && options.log_every > 0 && step % static_cast<std::int64_t>(options.log_every) == 0) {
      const double seconds = std::chrono::duration<double>(clock::now() - window_start).count();
      const double ws = static_cast<double>(window_samples);
      metrics->write(Record{.event = "step", .epoch = batch->position().epoch + 1, .step = step}
                         .set("loss", window_loss / ws)
                         .set("accuracy", static_cast<double>(window_correct) / ws)
                         .set("lr", optimizer.lr())
                         .set("images_per_second", ws / seconds));
      window_loss = 0, window_correct = 0, window_samples = 0;
      window_start = clock::now();
    }
  }
  totals.seconds = std::chrono::duration<double>(clock::now() - start).count();
  if (totals.samples > 0) {
    totals.loss = loss_sum / static_cast<double>(totals.samples);
    totals.accuracy = static_cast<double>(correct) / static_cast<double>(totals.samples);
  }
  return totals;
}

/// The sets a run uses: train (shuffled, augmented), validation (early stopping; may be empty)
/// and test (evaluated once, at the end), normalised with the same statistics.
struct RunData {
  const data::LabelledImages* train = nullptr;
  const data::LabelledImages* validation = nullptr;
  const data::LabelledImages* test = nullptr;
  data::Normalizer normalizer;

  /// The sets of prepared data (data::prepare_data), normalised with its training statistics.
  static RunData from(const data::PreparedData& prepared) {
    return {&prepared.train, &prepared.validation, &prepared.test, data::Normalizer(prepared.stats)};
  }
};

/// What run_training does besides stepping: the study's run_training arguments that are not
/// objects (num_epochs, accumulation_steps, n_epochs_stop, optimizer_name, hyperparameters) and
/// the checkpoint policy.
struct RunOptions {
  std::size_t epochs = 10;
  std::size_t batch_size = 64;
  StepOptions step{};
  std::size_t patience = 0;  ///< n_epochs_stop: stop after this many epochs without a better validation accuracy (0: never)
  std::uint64_t seed = 0;    ///< the loader's order and augmentation
  std::optional<data::Augmentation> augmentation = data::Augmentation{};
  bool prefetch = true;
  std::size_t eval_batch = 1000;
  std::string optimizer_name = "sgdm";
  std::vector<std::pair<std::string, double>> hyperparameters{};  ///< reported with every summary
  std::filesystem::path out{};  ///< checkpoint root; empty: no checkpoints
  std::size_t keep_last = 2;    ///< checkpoints kept besides the best
  bool keep_best = true;
  bool resume = false;          ///< continue from the latest checkpoint in the run's folder, if any
  bool overwrite = false;       ///< without resume: delete an earlier run's checkpoints in the folder (else refuse)
  std::optional<std::size_t> stop_after{};  ///< end the process's work after this many epochs (as if killed): for resume tests
};

/// What a run ended with.
struct RunResult {
  std::string status;  ///< "completed", "early_stopped", "diverged" or "interrupted"
  std::uint64_t epochs_done = 0;
  std::int64_t steps = 0;
  std::int64_t best_epoch = -1;
  double best_validation_accuracy = std::nan("");
  Evaluation test;
  double seconds = 0;
  std::string message;  ///< why it diverged
  std::vector<EpochMetrics> history;
  std::filesystem::path checkpoints;
};

/// Trains `model` with `optimizer` at lr = schedule(step) for options.epochs epochs, following the
/// study's run_training: validation after every epoch, early stopping with patience
/// options.patience on validation accuracy keeping the best weights (restored at the end), the
/// test set evaluated once at the end; checkpoints after every epoch at
/// <out>/train/<optimizer>/<batch_size>/<lr>/<weight_decay>/<epoch>.npz; `resume` continues from
/// the latest one and gives the same final bits as an uninterrupted run. A non-finite loss ends the
/// run with status "diverged" (no exception). Records: "epoch" after each epoch, "test" and
/// "summary" at the end, "step" every options.step.log_every steps.
template <nn::Model M, optim::Optimizer O>
RunResult run_training(M& model, O& optimizer, const optim::Schedule& schedule, const RunData& sets,
                       const RunOptions& options, const Metrics& metrics = {}) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  require(sets.train != nullptr && sets.train->size() > 0, "run_training: no training data");
  require(options.epochs > 0, "RunOptions.epochs must be positive");
  require(options.batch_size > 0, "RunOptions.batch_size must be positive");
  for (const auto& [name, value] : options.hyperparameters)
    for (const char* reserved : {"loss", "accuracy", "validation_loss", "validation_accuracy", "validation_top5",
                                 "best_validation_accuracy", "lr", "seconds", "images_per_second", "top5", "best_epoch",
                                 "test_loss", "test_accuracy", "test_top5"})
      require(name != reserved, "RunOptions.hyperparameters: '", name, "' is a name the records already use (e.g. base_lr instead)");
  auto& params = model.parameters();
  using T = typename std::remove_cvref_t<decltype(params)>::scalar_type;

  std::optional<CheckpointFolder> folder;
  if (!options.out.empty()) {
    folder.emplace(options.out, options.optimizer_name, options.batch_size, optimizer.options().lr,
                   optimizer.options().weight_decay);
    folder->prepare();
    // A fresh run into a folder holding an earlier run's checkpoints would interleave the two
    // (and pruning keeps the highest epochs, the old ones): refuse unless told what to do.
    if (!options.resume && !folder->epochs().empty()) {
      require(options.overwrite, "run_training: '", folder->path().string(), "' holds checkpoints of an earlier run (epochs up to ",
              folder->epochs().back(), "); set RunOptions.resume to continue it or RunOptions.overwrite to replace it");
      for (const auto epoch : folder->epochs()) std::filesystem::remove(folder->file(epoch));
    }
  }

  data::Loader loader(*sets.train, sets.normalizer,
                      {.batch_size = options.batch_size, .shuffle = true, .seed = options.seed,
                       .augmentation = options.augmentation, .prefetch = options.prefetch});
  Progress progress;
  progress.seed = options.seed;
  std::vector<T> best;
  if (folder && options.resume) {
    if (const auto latest = folder->latest()) {
      load_checkpoint(folder->file(*latest), params, best, optimizer, progress);
      require(progress.seed == options.seed, "checkpoint '", folder->file(*latest).string(), "': field 'progress.seed' is ",
              progress.seed, ", this run's seed is ", options.seed);
    }
  }

  RunResult result;
  result.checkpoints = folder ? folder->path() : std::filesystem::path();
  const bool has_validation = sets.validation != nullptr && sets.validation->size() > 0;
  const auto labelled = [&](Record r) {
    r.label("optimizer", options.optimizer_name);
    for (const auto& [name, value] : options.hyperparameters) r.set(name, value);
    return r;
  };

  std::string status = "completed";
  std::uint64_t epochs_this_process = 0;
  while (progress.epochs_done < options.epochs) {
    if (options.stop_after && epochs_this_process >= *options.stop_after) {
      status = "interrupted";
      break;
    }
    loader.seek(progress.loader);
    EpochTotals totals;
    try {
      totals = train_epoch(model, optimizer, schedule, loader, progress.step, options.step, &metrics);
    } catch (const Diverged& e) {
      status = "diverged";
      result.message = e.what();
      break;
    }
    ++progress.epochs_done;
    ++epochs_this_process;
    progress.loader = {progress.epochs_done, 0};
    EpochMetrics epoch{.train_loss = totals.loss, .train_accuracy = totals.accuracy, .lr = optimizer.lr(), .seconds = totals.seconds};
    bool improved = false;
    if (has_validation) {
      const Evaluation v = evaluate(model, *sets.validation, sets.normalizer, options.eval_batch);
      epoch.validation_loss = v.loss;
      epoch.validation_accuracy = v.accuracy;
      epoch.validation_top5 = v.top5;
      improved = v.accuracy > progress.best_accuracy;
      if (improved) {
        progress.best_accuracy = v.accuracy;
        progress.best_loss = v.loss;
        progress.best_epoch = static_cast<std::int64_t>(progress.epochs_done);
        progress.epochs_without_improvement = 0;
        best.assign(params.values().data(), params.values().data() + params.size());
      } else {
        ++progress.epochs_without_improvement;
      }
    }
    progress.history.push_back(epoch);
    metrics.write(labelled(Record{.event = "epoch", .epoch = progress.epochs_done, .step = progress.step}
                               .set("loss", epoch.train_loss)
                               .set("accuracy", epoch.train_accuracy)
                               .set("validation_loss", epoch.validation_loss)
                               .set("validation_accuracy", epoch.validation_accuracy)
                               .set("validation_top5", epoch.validation_top5)
                               .set("best_validation_accuracy", has_validation && progress.best_epoch > 0 ? progress.best_accuracy : std::nan(""))
                               .set("lr", epoch.lr)
                               .set("seconds", epoch.seconds)
                               .set("images_per_second", static_cast<double>(totals.samples) / totals.seconds)));
    if (folder) {
      save_checkpoint(folder->file(progress.epochs_done), params, std::span<const T>(best), optimizer, progress);
      folder->prune(options.keep_last,
                    options.keep_best && progress.best_epoch > 0 ? std::optional(static_cast<std::uint64_t>(progress.best_epoch))
                                                                  : std::nullopt);
    }
    if (options.patience > 0 && progress.epochs_without_improvement >= options.patience) {
      status = "early_stopped";
      break;
    }
  }

  result.status = status;
  result.epochs_done = progress.epochs_done;
  result.steps = progress.step;
  result.best_epoch = progress.best_epoch;
  result.best_validation_accuracy = has_validation && progress.best_epoch > 0 ? progress.best_accuracy : std::nan("");
  result.history = progress.history;
  if (status == "completed" || status == "early_stopped") {
    if (!best.empty()) std::copy(best.begin(), best.end(), params.values().data());
    if (sets.test != nullptr && sets.test->size() > 0) result.test = evaluate(model, *sets.test, sets.normalizer, options.eval_batch);
    metrics.write(labelled(Record{.event = "test", .epoch = progress.epochs_done, .step = progress.step}
                               .set("loss", result.test.loss)
                               .set("accuracy", result.test.accuracy)
                               .set("top5", result.test.top5)));
  }
  result.seconds = std::chrono::duration<double>(clock::now() - start).count();
  Record summary = labelled(Record{.event = "summary", .epoch = progress.epochs_done, .step = progress.step});
  summary.label("status", status);
  if (!result.message.empty()) summary.label("message", result.message);
  summary.set("best_epoch", static_cast<double>(result.best_epoch))
      .set("best_validation_accuracy", result.best_validation_accuracy)
      .set("test_loss", result.test.loss)
      .set("test_accuracy", result.test.accuracy)
      .set("test_top5", result.test.top5)
      .set("seconds", result.seconds);
  metrics.write(summary);
  metrics.flush();
  return result;
}

}  // namespace distopt::train
