// Training runs. One loop, `train::run`, drives every run: epochs of a trainer (a centralized
// model and optimizer, CentralTrainer here, or a LocalTrainer through train/local_run.hpp),
// validation after each, records to the metrics sinks, and callbacks in the manner of ensmallen's
// (`Optimize(f, x, EarlyStopAtMinLoss(), ProgressBar())`): KeepBest, EarlyStopping, Checkpoints,
// StopAfter. `run_training` is a centralized run in one call, the study's run_training.
#pragma once

#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "distopt/core/archive.hpp"
#include "distopt/core/error.hpp"
#include "distopt/data/cache.hpp"
#include "distopt/data/loader.hpp"
#include "distopt/nn/model.hpp"
#include "distopt/optim/optimizer.hpp"
#include "distopt/optim/schedule.hpp"
#include "distopt/optim/step.hpp"
#include "distopt/train/checkpoint.hpp"
#include "distopt/train/interrupt.hpp"
#include "distopt/train/metrics.hpp"
#include "distopt/train/run_folder.hpp"
#include "distopt/train/status.hpp"

namespace distopt::train {

/// Loss and accuracies of a model over a set (the accuracies NaN where targets are real values).
struct Evaluation {
  double loss = std::nan("");
  double accuracy = std::nan("");  ///< top-1
  double top5 = std::nan("");
  std::int64_t count = 0;
};

/// Evaluates `model` on every sample of `set` (normalised as the Source says), in batches of
/// `batch_size`; the loss is the mean over samples. The same bits for any thread count.
template <class M>
[[nodiscard]] Evaluation evaluate(M& model, const data::Source& set, std::size_t batch_size = 1000) {
  static_assert(nn::check_model<M>());
  if (set.size() == 0) return {};
  data::Loader loader(set, {.batch_size = batch_size, .shuffle = false});
  double loss_sum = 0;
  std::int64_t correct1 = 0, correct5 = 0, count = 0;
  bool classified = true;
  while (const data::Batch* batch = loader.next()) {
    const nn::LossStats s = model.evaluate(batch->inputs(), batch->targets());
    loss_sum += s.loss * static_cast<double>(s.count);
    correct1 += s.correct1;
    correct5 += s.correct5;
    count += s.count;
    classified = s.classified;
  }
  const double n = static_cast<double>(count);
  if (!classified) return {loss_sum / n, std::nan(""), std::nan(""), count};
  return {loss_sum / n, static_cast<double>(correct1) / n, static_cast<double>(correct5) / n, count};
}

/// Evaluates `model` on uint8 images normalised per channel.
template <class M>
[[nodiscard]] Evaluation evaluate(M& model, const data::LabelledImages& set, const data::Normalizer& normalizer,
                                  std::size_t batch_size = 1000) {
  if (set.size() == 0) return {};
  return evaluate(model, data::Source(set, normalizer), batch_size);
}

/// How a training step is cut into micro-batches: `accumulation_steps` when given (> 0), else
/// automatic, ceil(batch / micro_batch_cap) (the study: batch / 4096 above 4096). Each step
/// adds the micro-batch gradients with weights n_k / N, so the update is the one of the whole batch.
struct StepOptions {
  std::size_t accumulation_steps = 0;
  std::size_t micro_batch_cap = 4096;
  std::size_t log_every = 50;  ///< a "step" record every this many steps (0: none)
};

/// Totals of one epoch of training (of several, when a LocalTrainer's round spans them).
struct EpochTotals {
  double loss = 0;
  double accuracy = 0;
  std::int64_t samples = 0;
  std::int64_t steps = 0;
  double seconds = 0;
  double lr = std::nan("");       ///< of the last step
  std::uint64_t epochs_done = 0;  ///< after this epoch
  bool interrupted = false;       ///< a stop request (train::stop_requested) ended it before its last batch
};

/// One epoch: every batch the loader hands out from its current position, each one optim::step
/// at lr = schedule(step). `step` is the global step count, advanced by each step. Throws
/// optim::Diverged on a non-finite loss or gradient. After each step a stop request
/// (train::stop_requested, a signal) ends the epoch early with `interrupted` set; `carry` (when
/// given) holds the sums the epoch starts from and, on return, those it reached, so an epoch
/// continued from a checkpoint taken at the stop reports what an uninterrupted one would.
template <class M, optim::Optimizer O>
EpochTotals train_epoch(M& model, O& optimizer, const optim::Schedule& schedule, data::Loader& loader, std::int64_t& step,
                        const StepOptions& options = {}, const Metrics* metrics = nullptr, EpochSums* carry = nullptr) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const std::size_t batch_size = loader.options().batch_size;
  const std::size_t cap = options.accumulation_steps > 0
                              ? (batch_size + options.accumulation_steps - 1) / options.accumulation_steps
                              : options.micro_batch_cap;
  require(cap > 0, "StepOptions.micro_batch_cap must be positive");
  EpochTotals totals;
  EpochSums sums = carry != nullptr ? *carry : EpochSums{};
  bool classified = true;
  auto window_start = clock::now();
  while (const data::Batch* batch = loader.next()) {
    const optim::StepStats s = optim::step(model, optimizer, batch->inputs(), batch->targets(), schedule(step),
                                           static_cast<std::int64_t>(cap), "", step + 1);
    ++step;
    ++sums.steps;
    sums.loss_sum += s.loss * static_cast<double>(s.count);
    sums.correct += s.correct;
    sums.samples += s.count;
    classified = s.classified;
    sums.window_loss += s.loss * static_cast<double>(s.count);
    sums.window_correct += s.correct;
    sums.window_samples += s.count;
    if (metrics != nullptr && options.log_every > 0 && step % static_cast<std::int64_t>(options.log_every) == 0) {
      const double seconds = std::chrono::duration<double>(clock::now() - window_start).count();
      const double ws = static_cast<double>(sums.window_samples);
      metrics->write(Record{.event = "step", .epoch = batch->position().epoch + 1, .step = step}
                         .set("loss", sums.window_loss / ws)
                         .set("accuracy", classified ? static_cast<double>(sums.window_correct) / ws : std::nan(""))
                         .set("lr", optimizer.lr())
                         .set("images_per_second", ws / seconds));
      sums.window_loss = 0, sums.window_correct = 0, sums.window_samples = 0;
      window_start = clock::now();
    }
    if (stop_requested() != 0) {
      totals.interrupted = true;
      break;
    }
  }
  sums.seconds += std::chrono::duration<double>(clock::now() - start).count();
  totals.steps = sums.steps;
  totals.samples = sums.samples;
  totals.seconds = sums.seconds;
  totals.lr = optimizer.lr();
  if (totals.samples > 0) {
    totals.loss = sums.loss_sum / static_cast<double>(totals.samples);
    totals.accuracy = classified ? static_cast<double>(sums.correct) / static_cast<double>(totals.samples) : std::nan("");
  }
  if (carry != nullptr) *carry = totals.interrupted ? sums : EpochSums{};
  return totals;
}

/// The sets a run uses: train (shuffled, augmented where the run asks), validation (best
/// weights, early stopping; may be absent) and test (evaluated once, at the end), each a
/// data::Source (any data set with its normalisation; the data must outlive the run).
struct RunData {
  std::optional<data::Source> train{};
  std::optional<data::Source> validation{};
  std::optional<data::Source> test{};

  RunData() = default;
  RunData(std::optional<data::Source> train_set, std::optional<data::Source> validation_set = std::nullopt,
          std::optional<data::Source> test_set = std::nullopt)
      : train(std::move(train_set)), validation(std::move(validation_set)), test(std::move(test_set)) {}
  /// uint8 image sets (null: absent) normalised per channel with `normalizer`.
  RunData(const data::LabelledImages* train_set, const data::LabelledImages* validation_set, const data::LabelledImages* test_set,
          const data::Normalizer& normalizer)
      : train(images(train_set, normalizer, "train")),
        validation(images(validation_set, normalizer, "validation")),
        test(images(test_set, normalizer, "test")) {}

  /// The sets of prepared data (data::prepare_data), normalised with its training statistics.
  static RunData from(const data::PreparedData& prepared) {
    return {&prepared.train, &prepared.validation, &prepared.test, data::Normalizer(prepared.stats)};
  }

 private:
  static std::optional<data::Source> images(const data::LabelledImages* set, const data::Normalizer& normalizer, const char* name) {
    if (set == nullptr) return std::nullopt;
    return data::Source(*set, normalizer, name);
  }
};

// --- the loop --------------------------------------------------------------------------------

/// What `run` drives: a trainer that takes one epoch at a time.
///
/// Contract: `train_epoch(schedule, planned_epochs, metrics)` trains to the next epoch boundary
/// (a LocalTrainer's round may cross several: the totals say how many are done) and throws
/// optim::Diverged when a loss or gradient stops being finite; `model()` is what is evaluated and
/// tested; `is_root()` says whether this process evaluates and writes (rank 0 of a multi-process
/// trainer) and `agree(b)` hands rank 0's decision to every rank (so all leave the loop
/// together); `describe(record)` adds the trainer's own fields to the epoch, test and summary
/// records; `save_checkpoint(file, fields)` writes its state beside `fields` (rank 0 writes; a
/// collective over the ranks), and `resume(file)` reads the checkpoint rank 0 names (none: a
/// fresh start), applies the trainer's part and returns the archive for the loop's part.
template <class T>
concept EpochTrainer = requires(T& trainer, const T& const_trainer, const optim::Schedule& schedule, std::uint64_t planned,
                                const Metrics& metrics, Record& record, const std::filesystem::path& file,
                                const Archive& fields, const std::optional<std::filesystem::path>& latest, bool decision) {
  { trainer.train_epoch(schedule, planned, metrics) } -> std::same_as<EpochTotals>;
  requires nn::check_model<std::remove_cvref_t<decltype(trainer.model())>>();
  { const_trainer.steps() } -> std::convertible_to<std::int64_t>;
  { const_trainer.is_root() } -> std::convertible_to<bool>;
  { trainer.agree(decision) } -> std::convertible_to<bool>;
  const_trainer.describe(record);
  trainer.save_checkpoint(file, fields);
  { trainer.resume(latest) } -> std::same_as<std::optional<Archive>>;
};

/// What the loop does besides training: the epochs, the evaluation batch, and what the run is
/// (labels on every record, values on its summary record).
struct LoopOptions {
  std::size_t epochs = 1;
  std::size_t eval_batch = 1000;
  std::vector<std::pair<std::string, std::string>> labels{};
  std::vector<std::pair<std::string, double>> values{};
};

/// What a run ended with.
struct RunResult {
  Status status = Status::completed;
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

/// What callbacks see of a run, and may change: its progress (epochs, the best validation so
/// far, history), whether this epoch improved on the best, the model's weights, and the
/// checkpoint machinery of the loop.
template <class Scalar>
struct RunState {
  Progress& progress;
  std::span<Scalar> weights;
  bool root = true;
  bool improved = false;
  Status status = Status::completed;
  std::filesystem::path checkpoints{};
  /// Writes a checkpoint of everything (trainer, loop, callbacks) to a file.
  std::function<void(const std::filesystem::path&)> save_checkpoint{};
  /// Resumes from the checkpoint rank 0 names (nothing: none); true when it did.
  std::function<bool(const std::optional<std::filesystem::path>&)> resume{};
};

/// The hooks a callback may have, all doing nothing: callbacks derive from it and hide what they
/// use. Called statically (no virtual functions), each hook of every callback in the order the
/// callbacks are passed (KeepBest before Checkpoints, so a checkpoint holds this epoch's best).
///   begin_run(state)          once, before the first epoch (resume happens here)
///   stop_before_epoch(state)  true: stop now with status "interrupted"
///   interrupted(state)        a stop request ended an epoch early (the run stops, "interrupted")
///   end_epoch(state)          after validation and the epoch record; true: stop early
///   end_run(state)            at the end of a finished run, before the test evaluation
///   save(archive, state) / load(archive, state): the callback's part of a checkpoint
struct Callback {
  template <class S>
  void begin_run(S&) {}
  template <class S>
  bool stop_before_epoch(S&) {
    return false;
  }
  template <class S>
  void interrupted(S&) {}
  template <class S>
  bool end_epoch(S&) {
    return false;
  }
  template <class S>
  void end_run(S&) {}
  template <class S>
  void save(Archive&, const S&) const {}
  template <class S>
  void load(const Archive&, S&) {}
};

/// Keeps the weights of the best validation epoch so far and puts them back at the end of a
/// finished run (the study's run_training tests those); they travel inside every checkpoint.
template <class Params>
class KeepBest : public Callback {
 public:
  explicit KeepBest(const Params& params) : params_(&params) {}
  template <class S>
  bool end_epoch(S& s) {
    if (s.improved) best_.assign(s.weights.begin(), s.weights.end());
    return false;
  }
  template <class S>
  void end_run(S& s) {
    if (!best_.empty()) std::copy(best_.begin(), best_.end(), s.weights.begin());
  }
  template <class S>
  void save(Archive& archive, const S&) const {
    detail::checkpoint::put_best(archive, *params_, std::span<const typename Params::scalar_type>(best_));
  }
  template <class S>
  void load(const Archive& archive, S&) {
    detail::checkpoint::get_best(archive, *params_, best_);
  }
  [[nodiscard]] const std::vector<typename Params::scalar_type>& weights() const noexcept { return best_; }

 private:
  const Params* params_;
  std::vector<typename Params::scalar_type> best_;
};

/// Stops a run after `patience` epochs without a better validation accuracy (0: never): the
/// study's n_epochs_stop.
class EarlyStopping : public Callback {
 public:
  explicit EarlyStopping(std::size_t patience) : patience_(patience) {}
  template <class S>
  bool end_epoch(S& s) {
    return patience_ > 0 && s.progress.epochs_without_improvement >= patience_;
  }

 private:
  std::size_t patience_;
};

/// A checkpoint after every epoch in `folder` (<epoch>.npz), pruned to the last `keep_last`
/// (and the best epoch's with `keep_best`), and one when a stop request ends an epoch early
/// (interrupted.npz); with `resume` the run continues from the newest intact one
/// (train::resume_point) and reaches the same bits as an uninterrupted one. The folder is opened
/// with train::open_run_folder: claimed under a lock for the run, checked against the run's
/// configuration, refused to a fresh run when it holds an earlier run's checkpoints unless
/// `overwrite` (they would interleave, and pruning keeps the highest epochs, the old ones). An
/// empty folder: no checkpoints.
class Checkpoints : public Callback {
 public:
  struct Options {
    std::size_t keep_last = 2;
    bool keep_best = true;
    bool resume = false;
    bool overwrite = false;
    std::optional<RunConfig> config{};  ///< checked against and kept in the folder's config.json
  };
  Checkpoints() = default;
  Checkpoints(CheckpointFolder folder, Options options) : folder_(std::move(folder)), options_(std::move(options)) {}

  template <class S>
  void begin_run(S& s) {
    if (!folder_) return;
    s.checkpoints = folder_->path();
    std::optional<std::filesystem::path> latest;
    if (s.root) {
      const FolderPolicy policy{.resume = options_.resume, .overwrite = options_.overwrite, .config = options_.config};
      claim_ = open_run_folder(*folder_, policy);
      if (options_.resume) latest = resume_point(*folder_, policy);
    }
    if (!options_.resume) return;
    s.resume(latest);
  }
  template <class S>
  void interrupted(S& s) {
    if (folder_) s.save_checkpoint(folder_->interrupted_file());
  }
  template <class S>
  bool end_epoch(S& s) {
    if (!folder_) return false;
    s.save_checkpoint(folder_->file(s.progress.epochs_done));
    if (s.root) {
      std::error_code ec;
      std::filesystem::remove(folder_->interrupted_file(), ec);  // this epoch's checkpoint is newer
      folder_->prune(options_.keep_last, options_.keep_best && s.progress.best_epoch > 0
                                             ? std::optional(static_cast<std::uint64_t>(s.progress.best_epoch))
                                             : std::nullopt);
    }
    return false;
  }

 private:
  std::optional<CheckpointFolder> folder_;
  Options options_;
  std::shared_ptr<const io::FileLock> claim_;
};

/// Ends this process's work after `epochs` epochs, as if it were killed there (status
/// "interrupted"): for resume tests. Nothing: never.
class StopAfter : public Callback {
 public:
  explicit StopAfter(std::optional<std::size_t> epochs = std::nullopt) : epochs_(epochs) {}
  template <class S>
  bool stop_before_epoch(S&) {
    return epochs_ && done_ >= *epochs_;
  }
  template <class S>
  bool end_epoch(S&) {
    ++done_;
    return false;
  }

 private:
  std::optional<std::size_t> epochs_;
  std::size_t done_ = 0;
};

/// Trains `trainer` for options.epochs epochs at lr = schedule(global step): after every epoch the
/// model is evaluated on the validation set (on rank 0) and the best accuracy tracked, an
/// "epoch" record written, and the callbacks' end_epoch called; at the end of a finished run the
/// callbacks' end_run, then the test set once and "test" and "summary" records. A non-finite loss
/// ends the run with status "diverged" (no exception).
template <EpochTrainer T, class... Callbacks>
RunResult run(T& trainer, const optim::Schedule& schedule, const RunData& sets, const LoopOptions& options,
              const Metrics& metrics, Callbacks&... callbacks) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  require(options.epochs > 0, "LoopOptions.epochs must be positive");
  auto& model = trainer.model();
  auto& params = model.parameters();
  using Scalar = typename std::remove_cvref_t<decltype(params)>::scalar_type;
  const bool root = trainer.is_root();
  const bool has_validation = sets.validation && sets.validation->size() > 0;

  Progress progress;
  RunResult result;
  RunState<Scalar> state{progress, std::span<Scalar>(params.values().data(), static_cast<std::size_t>(params.size())), root};
  state.save_checkpoint = [&](const std::filesystem::path& file) {
    Archive fields;
    fields.put_string("format", detail::checkpoint::format);
    detail::checkpoint::put_progress(fields, progress);
    (callbacks.save(fields, state), ...);
    trainer.save_checkpoint(file, fields);
  };
  state.resume = [&](const std::optional<std::filesystem::path>& latest) {
    const std::optional<Archive> archive = trainer.resume(latest);
    if (!archive) return false;
    detail::checkpoint::get_progress(*archive, progress);
    (callbacks.load(*archive, state), ...);
    return true;
  };
  const auto labelled = [&](Record r) {
    for (const auto& [name, text] : options.labels) r.label(name, text);
    trainer.describe(r);
    return r;
  };
  const auto write = [&](const Record& r) {
    if (root) metrics.write(r);
  };

  (callbacks.begin_run(state), ...);
  Status status = Status::completed;
  while (progress.epochs_done < options.epochs) {
    // Comma folds: every callback is asked, left to right (|| would stop at the first yes).
    bool stop = stop_requested() != 0;  // a signal between epochs (a local run honours it here)
    ((stop = callbacks.stop_before_epoch(state) || stop), ...);
    if (trainer.agree(stop)) {
      status = Status::interrupted;
      break;
    }
    EpochTotals totals;
    try {
      totals = trainer.train_epoch(schedule, options.epochs, metrics);
    } catch (const optim::Diverged& e) {
      status = Status::diverged;
      result.message = e.what();
      break;
    }
    if (totals.interrupted) {
      (callbacks.interrupted(state), ...);
      status = Status::interrupted;
      break;
    }
    // A round may have crossed several epochs: the epochs it skipped have the same metrics.
    while (progress.history.size() + 1 < totals.epochs_done) progress.history.push_back(EpochMetrics{});
    progress.epochs_done = totals.epochs_done;
    EpochMetrics epoch{.train_loss = totals.loss, .train_accuracy = totals.accuracy, .lr = totals.lr, .seconds = totals.seconds};
    state.improved = false;
    if (root && has_validation) {
      const Evaluation v = evaluate(model, *sets.validation, options.eval_batch);
      epoch.validation_loss = v.loss;
      epoch.validation_accuracy = v.accuracy;
      epoch.validation_top5 = v.top5;
      // Classes: the best accuracy; real-valued targets (accuracy NaN): the lowest loss.
      state.improved = std::isnan(v.accuracy) ? v.loss < progress.best_loss : v.accuracy > progress.best_accuracy;
      if (state.improved) {
        progress.best_accuracy = v.accuracy;
        progress.best_loss = v.loss;
        progress.best_epoch = static_cast<std::int64_t>(progress.epochs_done);
        progress.epochs_without_improvement = 0;
      } else {
        ++progress.epochs_without_improvement;
      }
    }
    progress.history.push_back(epoch);
    write(labelled(Record{.event = "epoch", .epoch = progress.epochs_done, .step = trainer.steps()}
                       .set("loss", epoch.train_loss)
                       .set("accuracy", epoch.train_accuracy)
                       .set("validation_loss", epoch.validation_loss)
                       .set("validation_accuracy", epoch.validation_accuracy)
                       .set("validation_top5", epoch.validation_top5)
                       .set("best_validation_accuracy",
                            has_validation && progress.best_epoch > 0 ? progress.best_accuracy : std::nan(""))
                       .set("lr", epoch.lr)
                       .set("seconds", epoch.seconds)
                       .set("images_per_second", static_cast<double>(totals.samples) / totals.seconds)));
    stop = false;
    ((stop = callbacks.end_epoch(state) || stop), ...);
    if (trainer.agree(stop)) {
      status = Status::early_stopped;
      break;
    }
  }

  state.status = status;
  result.status = status;
  result.epochs_done = progress.epochs_done;
  result.steps = trainer.steps();
  result.best_epoch = progress.best_epoch;
  result.best_validation_accuracy = has_validation && progress.best_epoch > 0 ? progress.best_accuracy : std::nan("");
  result.history = progress.history;
  result.checkpoints = state.checkpoints;
  if (finished(status)) {
    (callbacks.end_run(state), ...);
    if (root && sets.test && sets.test->size() > 0) result.test = evaluate(model, *sets.test, options.eval_batch);
    write(labelled(Record{.event = "test", .epoch = progress.epochs_done, .step = result.steps}
                       .set("loss", result.test.loss)
                       .set("accuracy", result.test.accuracy)
                       .set("top5", result.test.top5)));
  }
  result.seconds = std::chrono::duration<double>(clock::now() - start).count();
  Record summary = labelled(Record{.event = "summary", .epoch = progress.epochs_done, .step = result.steps});
  summary.label("status", std::string(to_string(status)));
  if (!result.message.empty()) summary.label("message", result.message);
  for (const auto& [name, value] : options.values) summary.set(name, value);
  summary.set("best_epoch", static_cast<double>(result.best_epoch))
      .set("best_validation_accuracy", result.best_validation_accuracy)
      .set("test_loss", result.test.loss)
      .set("test_accuracy", result.test.accuracy)
      .set("test_top5", result.test.top5)
      .set("seconds", result.seconds);
  write(summary);
  if (root) metrics.flush();
  return result;
}

// --- centralized runs ------------------------------------------------------------------------

/// A model and its optimizer trained on one loader: the trainer of a centralized run.
template <class M, optim::Optimizer O>
class CentralTrainer {
  static_assert(nn::check_model<M>(), "CentralTrainer: the model type does not meet nn::Model (see the message above)");

 public:
  struct Options {
    std::size_t batch_size = 64;
    StepOptions step{};
    std::uint64_t seed = 0;  ///< the loader's order and augmentation
    std::optional<data::Augmentation> augmentation{};  ///< none unless asked for
    bool prefetch = true;
  };

  /// `train`: any data set with its normalisation (it must outlive the trainer).
  CentralTrainer(M& model, O& optimizer, const data::Source& train, Options options)
      : model_(&model),
        optimizer_(&optimizer),
        options_(options),
        loader_(checked(model, train),
                {.batch_size = options.batch_size, .shuffle = true, .seed = options.seed, .augmentation = options.augmentation,
                 .prefetch = options.prefetch}) {
    require(train.size() > 0, "CentralTrainer: no training data");
    require(options.batch_size > 0, "CentralTrainer: batch_size must be positive");
    progress_.seed = options.seed;
  }
  /// uint8 images normalised per channel.
  CentralTrainer(M& model, O& optimizer, const data::LabelledImages& train, const data::Normalizer& normalizer, Options options)
      : CentralTrainer(model, optimizer, data::Source(train, normalizer, "train"), options) {}

  EpochTotals train_epoch(const optim::Schedule& schedule, std::uint64_t, const Metrics& metrics) {
    loader_.seek(progress_.loader);
    EpochTotals totals =
        train::train_epoch(*model_, *optimizer_, schedule, loader_, progress_.step, options_.step, &metrics, &progress_.partial);
    if (totals.interrupted) {
      // The checkpoint written now continues at the next batch, with the epoch's sums so far.
      progress_.loader = loader_.position();
      totals.epochs_done = progress_.epochs_done;
      return totals;
    }
    ++progress_.epochs_done;
    progress_.loader = {progress_.epochs_done, 0};
    totals.epochs_done = progress_.epochs_done;
    return totals;
  }
  [[nodiscard]] M& model() noexcept { return *model_; }
  [[nodiscard]] std::int64_t steps() const noexcept { return progress_.step; }
  [[nodiscard]] bool is_root() const noexcept { return true; }
  [[nodiscard]] bool agree(bool decision) const noexcept { return decision; }
  void describe(Record&) const {}

  void save_checkpoint(const std::filesystem::path& file, const Archive& fields) const {
    Archive archive = fields;
    detail::checkpoint::put_central(archive, model_->parameters(), *optimizer_, progress_);
    archive.save(file);
  }
  std::optional<Archive> resume(const std::optional<std::filesystem::path>& latest) {
    if (!latest) return std::nullopt;
    Archive archive = Archive::load(*latest);
    Progress loaded = progress_;
    detail::checkpoint::get_central(archive, model_->parameters(), *optimizer_, loaded);
    require(loaded.seed == options_.seed, "checkpoint '", latest->string(), "': field 'progress.seed' is ", loaded.seed,
            ", this run's seed is ", options_.seed);
    detail::checkpoint::require_field(archive, "progress.epochs_done");
    loaded.epochs_done = archive.get_scalar<std::uint64_t>("progress.epochs_done");
    progress_ = loaded;
    return archive;
  }

 private:
  static const data::Source& checked(const M& model, const data::Source& train) {
    nn::check_model_fits(model, train.sample_shape(), train.target_info().are_classes(),
                         static_cast<std::ptrdiff_t>(train.target_info().width), train.name(), "CentralTrainer");
    return train;
  }

  M* model_;
  O* optimizer_;
  Options options_;
  data::Loader loader_;
  Progress progress_;  // its step, loader position, seed and epochs
};

/// What a centralized run is, as its checkpoint folder and summary name it: the study's
/// train/<optimizer>/<batch_size>/<lr>/<weight_decay> key (lr and weight decay as the run was
/// configured, the peak of its schedule), and further values to report with it.
struct RunDescription {
  std::string optimizer = "sgdm";
  double lr = std::nan("");
  double weight_decay = std::nan("");
  std::vector<std::pair<std::string, double>> values{};
};

/// What run_training does besides stepping: the study's run_training arguments that are not
/// objects (num_epochs, accumulation_steps, n_epochs_stop, the run's description) and the
/// checkpoint policy.
struct RunOptions {
  std::size_t epochs = 10;
  std::size_t batch_size = 64;
  StepOptions step{};
  std::size_t patience = 0;  ///< n_epochs_stop: stop after this many epochs without a better validation accuracy (0: never)
  std::uint64_t seed = 0;    ///< the loader's order and augmentation
  std::optional<data::Augmentation> augmentation{};  ///< none unless asked for (a crop on a table is refused)
  bool prefetch = true;
  std::size_t eval_batch = 1000;
  RunDescription description{};
  std::filesystem::path out{};  ///< checkpoint root; empty: no checkpoints
  std::size_t keep_last = 2;    ///< checkpoints kept besides the best
  bool keep_best = true;
  bool resume = false;          ///< continue from the latest checkpoint in the run's folder, if any
  bool overwrite = false;       ///< without resume: delete an earlier run's checkpoints in the folder (else refuse)
  std::optional<std::size_t> stop_after{};  ///< end the process's work after this many epochs (as if killed): for resume tests
  /// What else identifies the run, beyond what run_training knows (the data, the model, the
  /// schedule, ...): kept with it in the run folder's config.json (see run_config).
  RunConfig config{};
};

/// The configuration run_training keeps in the run folder: what changes its result that it knows
/// of (the description, epochs, batch, accumulation, patience, seed, augmentation), then
/// `options.config`, the caller's part.
[[nodiscard]] inline RunConfig run_config(const RunOptions& options) {
  const RunDescription& d = options.description;
  RunConfig c;
  c.set("optimizer", d.optimizer).set("lr", d.lr).set("weight_decay", d.weight_decay);
  for (const auto& [name, value] : d.values) c.set(name, value);
  c.set("epochs", options.epochs).set("batch_size", options.batch_size);
  c.set("accumulation_steps", options.step.accumulation_steps).set("micro_batch_cap", options.step.micro_batch_cap);
  c.set("patience", options.patience).set("seed", options.seed);
  c.set("augmentation", options.augmentation ? message("crop ", options.augmentation->padding,
                                                       options.augmentation->horizontal_flip ? " flip" : "")
                                             : std::string("none"));
  for (const auto& [name, value] : options.config.entries()) c.set(name, value);
  return c;
}

/// Trains `model` with `optimizer` at lr = schedule(step) for options.epochs epochs, following the
/// study's run_training: validation after every epoch, the best weights kept and restored at the
/// end (KeepBest), early stopping with patience options.patience, the test set evaluated once at
/// the end; checkpoints after every epoch at
/// <out>/train/<optimizer>/<batch_size>/<lr>/<weight_decay>/<epoch>.npz (options.description
/// names them); `resume` continues from the latest and gives the same final bits as an
/// uninterrupted run. A non-finite loss ends the run with status "diverged" (no exception).
/// Records: "epoch" after each epoch, "test" and "summary" at the end, "step" every
/// options.step.log_every steps; the summary carries the description's optimizer, lr, weight
/// decay, batch size and values.
template <class M, optim::Optimizer O>
RunResult run_training(M& model, O& optimizer, const optim::Schedule& schedule, const RunData& sets, const RunOptions& options,
                       const Metrics& metrics = {}) {
  static_assert(nn::check_model<M>(), "run_training: the model type does not meet nn::Model (see the message above)");
  require(sets.train && sets.train->size() > 0, "run_training: no training data");
  require(options.epochs > 0, "RunOptions.epochs must be positive");
  require(options.batch_size > 0, "RunOptions.batch_size must be positive");
  const RunDescription& d = options.description;
  if (!options.out.empty())
    require(std::isfinite(d.lr) && std::isfinite(d.weight_decay), "RunOptions.description: lr (", d.lr, ") and weight_decay (",
            d.weight_decay, ") name the checkpoint folder and must be given");
  CentralTrainer<M, O> trainer(model, optimizer, *sets.train,
                               {.batch_size = options.batch_size, .step = options.step, .seed = options.seed,
                                .augmentation = options.augmentation, .prefetch = options.prefetch});
  KeepBest best(model.parameters());
  EarlyStopping early(options.patience);
  Checkpoints checkpoints;
  if (!options.out.empty())
    checkpoints = Checkpoints(CheckpointFolder(options.out, d.optimizer, options.batch_size, d.lr, d.weight_decay),
                              {.keep_last = options.keep_last, .keep_best = options.keep_best, .resume = options.resume,
                               .overwrite = options.overwrite, .config = run_config(options)});
  StopAfter stop(options.stop_after);
  LoopOptions loop{.epochs = options.epochs, .eval_batch = options.eval_batch, .labels = {{"optimizer", d.optimizer}}, .values = {}};
  loop.values = {{"lr", d.lr}, {"weight_decay", d.weight_decay}, {"batch_size", static_cast<double>(options.batch_size)}};
  loop.values.insert(loop.values.end(), d.values.begin(), d.values.end());
  return run(trainer, schedule, sets, loop, metrics, best, early, checkpoints, stop);
}

}  // namespace distopt::train
