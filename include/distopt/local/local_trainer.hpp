// LocalTrainer<Model, Outer>: K workers taking H local steps between averages (LocalSGD,
// post-local SGD, SlowMo), hosted on any number of OpenMP threads, with the same bits for any.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <omp.h>

#include "distopt/core/archive.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/data/loader.hpp"
#include "distopt/data/shards.hpp"
#include "distopt/local/communicator.hpp"
#include "distopt/local/outer.hpp"
#include "distopt/nn/model.hpp"
#include "distopt/optim/optimizer.hpp"
#include "distopt/optim/schedule.hpp"
#include "distopt/train/checkpoint.hpp"
#include "distopt/train/metrics.hpp"
#include "distopt/train/run.hpp"

namespace distopt::local {

/// What a LocalTrainer does. K = `workers` replicas each take H = `local_steps` steps of the inner
/// optimizer on `batch_size` samples of their own shard, then the outer policy combines them.
/// Post-local SGD (Lin et al. 2020): with `switch_step`, the workers average after every step
/// until that global step, then every H. `seed` fixes the shards (when not given), each worker's
/// loader order and augmentation; without `shuffle` each worker reads its shard in the order
/// given, epoch after epoch (what a reference implementation can replay). `threads` hosts the
/// workers (0: all of OpenMP's).
struct LocalOptions {
  std::size_t workers = 4;
  std::size_t local_steps = 8;
  std::size_t batch_size = 64;
  std::optional<std::int64_t> switch_step{};
  InnerBuffers inner_buffers = InnerBuffers::maintain;
  std::uint64_t seed = 0;
  std::optional<data::Augmentation> augmentation = data::Augmentation{};
  bool shuffle = true;
  int threads = 0;
  NetworkModel network{};
};

/// The seed of worker k's loader, derived from the run's seed: a centralized run with this seed
/// over the same samples sees exactly worker k's batches.
[[nodiscard]] inline std::uint64_t worker_seed(std::uint64_t seed, std::size_t worker) {
  return Rng(seed).split({0x10CA1, static_cast<std::uint64_t>(worker)}).next_u64();
}

namespace detail {

/// Copies every array of `from` into `into` (the workers of the other ranks, on rank 0).
inline void merge_into(Archive& into, const Archive& from) {
  for (const std::string& name : from.names()) {
    const std::string_view dtype = from.dtype(name);
    const auto copy = [&]<class T>(std::type_identity<T>) { into.put<T>(name, from.get<T>(name), from.shape(name)); };
    if (dtype == npy_dtype<float>) copy(std::type_identity<float>{});
    else if (dtype == npy_dtype<double>) copy(std::type_identity<double>{});
    else if (dtype == npy_dtype<std::int32_t>) copy(std::type_identity<std::int32_t>{});
    else if (dtype == npy_dtype<std::int64_t>) copy(std::type_identity<std::int64_t>{});
    else if (dtype == npy_dtype<std::uint8_t>) copy(std::type_identity<std::uint8_t>{});
    else if (dtype == npy_dtype<std::uint32_t>) copy(std::type_identity<std::uint32_t>{});
    else if (dtype == npy_dtype<std::uint64_t>) copy(std::type_identity<std::uint64_t>{});
    else fail("merge_into: array '", name, "' of ", from.source(), " has dtype ", dtype);
  }
}

}  // namespace detail

/// What one round did.
struct RoundReport {
  std::int64_t first_step = 0;  ///< global step of the round's first local step
  std::size_t local_steps = 0;  ///< steps each worker took (H, 1 before a post-local switch, fewer at the end)
  double loss = 0;              ///< mean training loss over the workers' steps
  double accuracy = 0;          ///< mean training accuracy
  std::int64_t samples = 0;     ///< sample-gradients computed, all workers
  double gamma = 0;             ///< inner lr of the last step (SlowMo's gamma)
  double seconds = 0;           ///< wall time of the round
  double sync_seconds = 0;      ///< of which averaging and the outer step
  CommunicationCost communication;
};

/// K workers training one model by periodic averaging.
///
/// A round: every worker starts from the global model x, takes H steps of its own copy of the
/// inner optimizer on its own shard (step t of the round at lr = schedule(t) on the global step
/// count), then x_avg = (1/K) sum_k x_k is computed in double, adding the workers in index order,
/// and the outer policy sets x from x and x_avg (LocalSgd: x = x_avg; SlowMo: slow momentum). The
/// inner buffers are then reset, kept or averaged (LocalOptions::inner_buffers). Weight decay is
/// the inner optimizer's only: the outer step never decays again.
///
/// Workers run on min(threads, K) OpenMP threads, each worker's model single-threaded inside
/// the team, or one after another with all threads each when there is one thread or one worker.
/// Either way every worker computes the same bits, and the average is taken in a fixed order,
/// so a run gives the same bits for any thread count.
template <nn::Model Model, OuterPolicy Outer, optim::Optimizer Inner, Communicator Comm = InProcess>
class LocalTrainer {
 public:
  using scalar_type = typename std::remove_cvref_t<decltype(std::declval<Model&>().parameters())>::scalar_type;

  /// `model` is the initial global model, `inner` an inner optimizer over its parameters (each
  /// worker gets a copy, options and state), `outer` the outer policy, `train` the data the
  /// workers share out (with `shards`, one index list per worker; IID class-balanced by default).
  /// Throws std::invalid_argument naming the field for K = 0, H = 0, batch_size = 0, more workers
  /// than samples, or shards that do not match K.
  LocalTrainer(const Model& model, const Inner& inner, Outer outer, const data::LabelledImages& train,
               data::Normalizer normalizer, LocalOptions options, std::optional<data::Shards> shards = std::nullopt,
               Comm comm = Comm{})
      : global_(model), outer_(std::move(outer)), options_(options), comm_(std::move(comm)) {
    require(options_.workers > 0, "LocalOptions.workers (K) must be positive");
    require(options_.local_steps > 0, "LocalOptions.local_steps (H) must be positive");
    require(options_.batch_size > 0, "LocalOptions.batch_size must be positive");
    require(options_.workers <= train.size(), "LocalOptions.workers: ", options_.workers, " workers for ",
            train.size(), " samples leaves a worker without data");
    require(options_.threads >= 0, "LocalOptions.threads must be >= 0, got ", options_.threads);
    if (options_.switch_step) require(*options_.switch_step >= 0, "LocalOptions.switch_step must be >= 0");
    shards_ = shards ? std::move(*shards) : data::iid_shards(train.fine, options_.workers, options_.seed);
    require(shards_.size() == options_.workers, "LocalTrainer: ", shards_.size(), " shards for LocalOptions.workers = ",
            options_.workers);
    const std::size_t first = comm_.first_worker(options_.workers), count = comm_.local_workers(options_.workers);
    require(count > 0 && first + count <= options_.workers, "LocalTrainer: the communicator hosts workers [", first, ", ",
            first + count, ") of ", options_.workers);
    for (std::size_t k = first; k < first + count; ++k) {
      require(!shards_[k].empty(), "LocalTrainer: the shard of worker ", k, " is empty");
      auto worker = std::make_unique<Worker>(Worker{k, model, inner, nullptr});
      worker->loader = std::make_unique<data::Loader>(
          train, normalizer,
          data::LoaderOptions{.batch_size = options_.batch_size, .shuffle = options_.shuffle,
                              .seed = worker_seed(options_.seed, k), .augmentation = options_.augmentation},
          shards_[k]);
      workers_.push_back(std::move(worker));
    }
    average_.assign(static_cast<std::size_t>(global_.parameters().size()), 0.0);
    if constexpr (requires { comm_.require_same(std::uint64_t{}, std::string_view{}); }) {
      comm_.require_same(options_.workers, "LocalOptions.workers (K)");
      comm_.require_same(options_.local_steps, "LocalOptions.local_steps (H)");
      comm_.require_same(options_.batch_size, "LocalOptions.batch_size");
      comm_.require_same(options_.seed, "LocalOptions.seed");
      comm_.require_same(static_cast<std::uint64_t>(global_.parameters().size()), "the parameter count (model layout)");
    }
    // One initial model for all: rank 0's (the same already when every rank seeds alike).
    if constexpr (requires { comm_.broadcast(std::span<scalar_type>{}); }) {
      auto x = global_.parameters().values();
      comm_.broadcast(std::span<scalar_type>(x.data(), static_cast<std::size_t>(x.size())));
    }
  }

  /// This process's rank among the communicator's (0 in process): only rank 0 evaluates and
  /// writes metrics and checkpoints.
  [[nodiscard]] int rank() const { return comm_.rank(); }

  [[nodiscard]] Model& global_model() noexcept { return global_; }
  [[nodiscard]] const Model& global_model() const noexcept { return global_; }
  [[nodiscard]] const LocalOptions& options() const noexcept { return options_; }
  [[nodiscard]] const Outer& outer() const noexcept { return outer_; }
  [[nodiscard]] const data::Shards& shards() const noexcept { return shards_; }
  /// Global steps taken so far (each worker has taken as many local steps).
  [[nodiscard]] std::int64_t step() const noexcept { return step_; }
  [[nodiscard]] const CommunicationCost& communication() const noexcept { return communication_; }
  /// Worker k's model and inner optimizer (for tests and inspection; k counts this rank's workers).
  [[nodiscard]] Model& worker_model(std::size_t k) { return workers_.at(k)->model; }
  [[nodiscard]] Inner& worker_optimizer(std::size_t k) { return workers_.at(k)->optimizer; }

  /// Steps a worker takes to see its shard once: one epoch of the whole set across the K workers.
  [[nodiscard]] std::int64_t steps_per_epoch() const {
    std::size_t most = 0;
    for (const auto& shard : shards_) most = std::max(most, shard.size());
    return static_cast<std::int64_t>((most + options_.batch_size - 1) / options_.batch_size);
  }

  /// Local steps of the next round: H, or 1 before the post-local switch, capped at `limit`.
  [[nodiscard]] std::size_t next_round_steps(std::int64_t limit) const {
    std::size_t h = options_.local_steps;
    if (options_.switch_step && step_ < *options_.switch_step) h = 1;
    return static_cast<std::size_t>(std::min<std::int64_t>(static_cast<std::int64_t>(h), limit - step_));
  }

  /// One round of at most `max_steps` local steps (H by default). Throws train::Diverged when a
  /// worker's loss or gradient stops being finite; the global model is then left as it was.
  RoundReport round(const optim::Schedule& schedule, std::optional<std::size_t> max_steps = std::nullopt) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const std::size_t h = next_round_steps(step_ + static_cast<std::int64_t>(max_steps.value_or(options_.local_steps)));
    require(h > 0, "LocalTrainer::round: no local steps to take");
    auto x = global_.parameters().values();
    const std::size_t n = workers_.size();
    std::vector<std::exception_ptr> errors(n);
    std::vector<double> loss(n, 0.0);
    std::vector<std::int64_t> correct(n, 0), samples(n, 0);

    const auto run_worker = [&](std::size_t w) {
      try {
        Worker& worker = *workers_[w];
        auto& params = worker.model.parameters();
        params.values() = x;
        if (options_.inner_buffers == InnerBuffers::reset) worker.optimizer.reset_state();
        for (std::size_t s = 0; s < h; ++s) {
          const data::Batch* batch = worker.loader->next();
          if (batch == nullptr) {
            worker.loader->start_epoch(worker.loader->position().epoch + 1);
            batch = worker.loader->next();
          }
          params.grads().setZero();
          const nn::LossStats stats = worker.model.loss_and_gradient(batch->images(), batch->labels(), 1.0);
          if (!std::isfinite(stats.loss))
            throw train::Diverged(message("worker ", worker.index, ": loss is ", stats.loss, " at step ",
                                          step_ + static_cast<std::int64_t>(s) + 1));
          worker.optimizer.set_lr(schedule(step_ + static_cast<std::int64_t>(s)));
          try {
            worker.optimizer.step(params);
          } catch (const std::domain_error& e) {
            throw train::Diverged(message("worker ", worker.index, ": ", e.what()));
          }
          loss[w] += stats.loss * static_cast<double>(stats.count);
          correct[w] += stats.correct1;
          samples[w] += stats.count;
        }
      } catch (...) {
        errors[w] = std::current_exception();
      }
    };
    const int threads = options_.threads > 0 ? options_.threads : parallel::max_threads();
    if (threads > 1 && n > 1 && !parallel::in_parallel()) {
      const int team = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(threads), n));
#pragma omp parallel for num_threads(team) schedule(dynamic, 1)
      for (std::size_t w = 0; w < n; ++w) run_worker(w);
    } else {
      parallel::ThreadCount all(threads);
      for (std::size_t w = 0; w < n; ++w) run_worker(w);
    }
    // Every rank learns whether any worker anywhere failed, so all stop together (never one rank
    // waiting in an all-reduce the others left).
    double local_stats[4] = {0, 0, 0, 0};
    for (std::size_t w = 0; w < n; ++w) {
      local_stats[0] += errors[w] ? 1.0 : 0.0;
      local_stats[1] += loss[w];
      local_stats[2] += static_cast<double>(correct[w]);
      local_stats[3] += static_cast<double>(samples[w]);
    }
    comm_.allreduce_sum(std::span<double>(local_stats, 4));
    for (const auto& error : errors)
      if (error) std::rethrow_exception(error);
    if (local_stats[0] > 0) throw train::Diverged(message("a worker on another rank failed (", local_stats[0], " workers in all)"));

    const auto sync_start = clock::now();
    const double gamma = schedule(step_ + static_cast<std::int64_t>(h) - 1);
    const double allreduce_seconds = average_values(x.size());
    outer_.apply(std::span<scalar_type>(x.data(), static_cast<std::size_t>(x.size())), std::span<const double>(average_), gamma);
    CommunicationCost cost = allreduce_cost(x.size(), sizeof(scalar_type), options_.workers, options_.network);
    if (options_.inner_buffers == InnerBuffers::average) cost += average_inner_buffers();
    cost.rounds = 1;
    const auto end = clock::now();
    cost.measured_seconds = std::chrono::duration<double>(end - sync_start).count();
    cost.allreduce_seconds += allreduce_seconds;
    communication_ += cost;

    RoundReport report;
    report.first_step = step_;
    report.local_steps = h;
    report.gamma = gamma;
    report.samples = static_cast<std::int64_t>(local_stats[3]);
    report.loss = local_stats[1] / local_stats[3];
    report.accuracy = local_stats[2] / local_stats[3];
    report.seconds = std::chrono::duration<double>(end - start).count();
    report.sync_seconds = std::chrono::duration<double>(end - sync_start).count();
    report.communication = cost;
    step_ += static_cast<std::int64_t>(h);
    return report;
  }

  /// Trains until `total_steps` global steps (every worker takes that many local steps).
  void run_steps(const optim::Schedule& schedule, std::int64_t total_steps,
                 const std::function<void(const RoundReport&)>& on_round = {}) {
    while (step_ < total_steps) {
      const RoundReport r = round(schedule, static_cast<std::size_t>(total_steps - step_));
      if (on_round) on_round(r);
    }
  }

  /// What `run` does: `epochs` passes over the data (each worker over its shard), the global
  /// model evaluated on validation after every epoch (at the first synchronisation at or after
  /// the epoch's last step, so rounds keep H steps) and on test at the end; with `out`, a
  /// checkpoint after every epoch at <out>/<epoch>.npz, and `resume` continues from the latest.
  struct RunOptions {
    std::size_t epochs = 1;
    std::filesystem::path out{};
    bool resume = false;
    std::size_t keep_last = 2;
    std::size_t eval_batch = 1000;
    std::optional<std::size_t> stop_after{};  ///< end after this many epochs in this process (resume tests)
  };

  /// What a run ended with: as train::RunResult, plus the communication it took.
  struct RunResult {
    std::string status;
    std::uint64_t epochs_done = 0;
    std::int64_t steps = 0;
    std::vector<train::EpochMetrics> history;
    train::Evaluation test;
    CommunicationCost communication;
    double seconds = 0;
    double sync_seconds = 0;
    std::string message;
  };

  /// Trains for options.epochs epochs with lr = schedule(global step), reporting "round",
  /// "epoch", "test" and "summary" records to `metrics`. A non-finite loss ends the run with
  /// status "diverged" (no exception).
  RunResult run(const optim::Schedule& schedule, const data::LabelledImages* validation, const data::LabelledImages* test,
                const data::Normalizer& normalizer, const RunOptions& options, const train::Metrics& metrics = {}) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    require(options.epochs > 0, "LocalTrainer::RunOptions.epochs must be positive");
    const std::int64_t per_epoch = steps_per_epoch();
    const std::int64_t total = static_cast<std::int64_t>(options.epochs) * per_epoch;
    std::optional<train::CheckpointFolder> folder;
    RunResult result;
    result.status = "completed";
    std::uint64_t epochs_done = 0;
    const bool root = comm_.rank() == 0;
    if (!options.out.empty()) {
      folder.emplace(options.out);
      if (root) folder->prepare();
      if (options.resume) epochs_done = resume_from(*folder);
    }
    const auto label = [&](train::Record r) {
      r.label("outer", outer_.name());
      r.set("workers", static_cast<double>(options_.workers)).set("local_steps", static_cast<double>(options_.local_steps));
      return r;
    };
    std::uint64_t epochs_this_process = 0;
    double epoch_loss = 0, epoch_correct = 0, epoch_samples = 0, epoch_seconds = 0;
    while (step_ < total) {
      if (options.stop_after && epochs_this_process >= *options.stop_after) {
        result.status = "interrupted";
        break;
      }
      RoundReport r;
      try {
        r = round(schedule, static_cast<std::size_t>(total - step_));
      } catch (const train::Diverged& e) {
        result.status = "diverged";
        result.message = e.what();
        break;
      }
      result.sync_seconds += r.sync_seconds;
      epoch_loss += r.loss * static_cast<double>(r.samples);
      epoch_correct += r.accuracy * static_cast<double>(r.samples);
      epoch_samples += static_cast<double>(r.samples);
      epoch_seconds += r.seconds;
      if (root) metrics.write(label(train::Record{.event = "round", .epoch = epochs_done + 1, .step = step_}
                              .set("loss", r.loss)
                              .set("accuracy", r.accuracy)
                              .set("lr", r.gamma)
                              .set("images_per_second", static_cast<double>(r.samples) / r.seconds)
                              .set("sync_seconds", r.sync_seconds)
                              .set("allreduce_seconds", r.communication.allreduce_seconds)
                              .set("bytes_per_worker", r.communication.bytes_per_worker)
                              .set("modelled_seconds", r.communication.modelled_seconds)));
      if (step_ < static_cast<std::int64_t>(epochs_done + 1) * per_epoch && step_ < total) continue;
      // An epoch (or more, with H above an epoch's steps) ended in this round.
      epochs_done = std::min<std::uint64_t>(static_cast<std::uint64_t>(step_ / per_epoch), options.epochs);
      ++epochs_this_process;
      train::EpochMetrics epoch{.train_loss = epoch_loss / epoch_samples, .train_accuracy = epoch_correct / epoch_samples,
                                .lr = r.gamma, .seconds = epoch_seconds};
      if (root && validation != nullptr && validation->size() > 0) {
        const train::Evaluation v = train::evaluate(global_, *validation, normalizer, options.eval_batch);
        epoch.validation_loss = v.loss;
        epoch.validation_accuracy = v.accuracy;
        epoch.validation_top5 = v.top5;
      }
      result.history.push_back(epoch);
      if (root) metrics.write(label(train::Record{.event = "epoch", .epoch = epochs_done, .step = step_}
                              .set("loss", epoch.train_loss)
                              .set("accuracy", epoch.train_accuracy)
                              .set("validation_loss", epoch.validation_loss)
                              .set("validation_accuracy", epoch.validation_accuracy)
                              .set("validation_top5", epoch.validation_top5)
                              .set("lr", epoch.lr)
                              .set("seconds", epoch.seconds)
                              .set("images_per_second", epoch_samples / epoch_seconds)
                              .set("rounds", static_cast<double>(communication_.rounds))));
      epoch_loss = epoch_correct = epoch_samples = epoch_seconds = 0;
      if (folder) {
        train::Progress progress;
        progress.epochs_done = epochs_done;
        save(folder->file(epochs_done), progress);
        if (root) folder->prune(options.keep_last);
      }
    }
    result.epochs_done = epochs_done;
    result.steps = step_;
    result.communication = communication_;
    if (root && result.status == "completed" && test != nullptr && test->size() > 0) {
      result.test = train::evaluate(global_, *test, normalizer, options.eval_batch);
      metrics.write(label(train::Record{.event = "test", .epoch = epochs_done, .step = step_}
                              .set("loss", result.test.loss)
                              .set("accuracy", result.test.accuracy)
                              .set("top5", result.test.top5)));
    }
    result.seconds = std::chrono::duration<double>(clock::now() - start).count();
    train::Record summary = label(train::Record{.event = "summary", .epoch = epochs_done, .step = step_});
    summary.label("status", result.status);
    if (!result.message.empty()) summary.label("message", result.message);
    summary.set("test_loss", result.test.loss)
        .set("test_accuracy", result.test.accuracy)
        .set("test_top5", result.test.top5)
        .set("rounds", static_cast<double>(communication_.rounds))
        .set("bytes_per_worker", communication_.bytes_per_worker)
        .set("modelled_communication_seconds", communication_.modelled_seconds)
        .set("sync_seconds", result.sync_seconds)
        .set("allreduce_seconds", communication_.allreduce_seconds)
        .set("seconds", result.seconds);
    if (root) {
      metrics.write(summary);
      metrics.flush();
    }
    return result;
  }

  // --- checkpoints: global model, outer state, every worker's optimizer and loader ---------------

  /// Writes everything a resumed trainer needs to continue to the same bits (atomically, .npz).
  /// With several ranks it is collective: every rank's workers go to rank 0, which writes the file.
  void save(const std::filesystem::path& file, const train::Progress& progress = {}) {
    Archive archive;
    archive.put_string("format", "distopt-local-checkpoint 1");
    archive.put_string("outer.kind", outer_.name());
    train::detail::checkpoint::put_values(archive, global_.parameters(), global_.parameters().values().data(), "model.");
    outer_.save(archive, "outer.");
    archive.put_scalar<std::int64_t>("local.step", step_);
    archive.put_scalar<std::uint64_t>("local.workers", options_.workers);
    archive.put_scalar<std::uint64_t>("local.local_steps", options_.local_steps);
    archive.put_scalar<std::uint64_t>("local.seed", options_.seed);
    archive.put_scalar<std::uint64_t>("progress.epochs_done", progress.epochs_done);
    archive.put_scalar<std::int64_t>("communication.rounds", communication_.rounds);
    archive.put_scalar<std::int64_t>("communication.allreduce_values", communication_.allreduce_values);
    archive.put_scalar<double>("communication.bytes_per_worker", communication_.bytes_per_worker);
    archive.put_scalar<double>("communication.modelled_seconds", communication_.modelled_seconds);
    archive.put_scalar<double>("communication.measured_seconds", communication_.measured_seconds);
    archive.put_scalar<double>("communication.allreduce_seconds", communication_.allreduce_seconds);
    for (const auto& w : workers_) {
      const std::string prefix = message("worker.", w->index, ".");
      w->optimizer.save_state(archive, prefix + "optimizer.");
      archive.put_scalar<std::uint64_t>(prefix + "loader_epoch", w->loader->position().epoch);
      archive.put_scalar<std::uint64_t>(prefix + "loader_batch", w->loader->position().batch);
      if (options_.inner_buffers != InnerBuffers::reset)
        train::detail::checkpoint::put_values(archive, w->model.parameters(), w->model.parameters().values().data(),
                                              prefix + "model.");
    }
    if constexpr (requires { comm_.gather_bytes(std::vector<std::uint8_t>{}); }) {
      if (comm_.ranks() > 1) {
        const auto parts = comm_.gather_bytes(archive.to_bytes());
        if (comm_.rank() != 0) return;
        for (std::size_t r = 1; r < parts.size(); ++r) detail::merge_into(archive, Archive::from_bytes(parts[r], message("rank ", r)));
      }
    }
    archive.save(file);
  }

  /// Reads what `save` wrote. Everything is checked first (std::invalid_argument naming the file
  /// and field for another model, outer policy, K, H or seed); on failure nothing changes.
  /// Returns the epochs done recorded with it.
  std::uint64_t load(const std::filesystem::path& file) { return load(Archive::load(file), file); }

  /// `load` from an archive in memory; `file` names it in errors.
  std::uint64_t load(const Archive& archive, const std::filesystem::path& file) {
    const auto field_is = [&](const char* name, std::uint64_t expected) {
      require(archive.contains(name), "checkpoint '", file.string(), "': field '", name, "' is missing");
      const auto v = archive.get_scalar<std::uint64_t>(name);
      require(v == expected, "checkpoint '", file.string(), "': field '", name, "' is ", v, ", this trainer has ", expected);
    };
    require(archive.contains("format") && archive.get_string("format") == "distopt-local-checkpoint 1", "checkpoint '",
            file.string(), "': field 'format' is not 'distopt-local-checkpoint 1'");
    require(archive.get_string("outer.kind") == outer_.name(), "checkpoint '", file.string(), "': field 'outer.kind' is '",
            archive.get_string("outer.kind"), "', this trainer's outer policy is '", outer_.name(), "'");
    field_is("local.workers", options_.workers);
    field_is("local.local_steps", options_.local_steps);
    field_is("local.seed", options_.seed);
    train::detail::checkpoint::check_layout(archive, global_.parameters(), "model.");
    Outer outer = outer_;
    outer.load(archive, "outer.");
    std::vector<Inner> optimizers;
    for (const auto& w : workers_) {
      const std::string prefix = message("worker.", w->index, ".");
      Inner candidate = w->optimizer;
      try {
        candidate.load_state(archive, prefix + "optimizer.");
      } catch (const std::invalid_argument& e) {
        fail("checkpoint '", file.string(), "': ", e.what());
      }
      optimizers.push_back(std::move(candidate));
      if (options_.inner_buffers != InnerBuffers::reset)
        train::detail::checkpoint::check_layout(archive, w->model.parameters(), prefix + "model.");
    }
    // Checked: now apply.
    train::detail::checkpoint::get_values(archive, global_.parameters(), global_.parameters().values().data(), "model.");
    outer_ = std::move(outer);
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      Worker& w = *workers_[i];
      const std::string prefix = message("worker.", w.index, ".");
      w.optimizer = std::move(optimizers[i]);
      w.loader->seek({archive.get_scalar<std::uint64_t>(prefix + "loader_epoch"),
                      archive.get_scalar<std::uint64_t>(prefix + "loader_batch")});
      if (options_.inner_buffers != InnerBuffers::reset)
        train::detail::checkpoint::get_values(archive, w.model.parameters(), w.model.parameters().values().data(), prefix + "model.");
    }
    step_ = archive.get_scalar<std::int64_t>("local.step");
    communication_.rounds = archive.get_scalar<std::int64_t>("communication.rounds");
    communication_.allreduce_values = archive.get_scalar<std::int64_t>("communication.allreduce_values");
    communication_.bytes_per_worker = archive.get_scalar<double>("communication.bytes_per_worker");
    communication_.modelled_seconds = archive.get_scalar<double>("communication.modelled_seconds");
    communication_.measured_seconds = archive.get_scalar<double>("communication.measured_seconds");
    // Checkpoints from before the all-reduce was timed apart resume with that time unknown (0).
    communication_.allreduce_seconds =
        archive.contains("communication.allreduce_seconds") ? archive.get_scalar<double>("communication.allreduce_seconds") : 0.0;
    return archive.get_scalar<std::uint64_t>("progress.epochs_done");
  }

 private:
  // The latest checkpoint of `folder`, loaded; its epochs done (0 when there is none). With
  // several ranks, rank 0 alone looks and reads, and broadcasts the bytes: the ranks then agree
  // on where to resume even when they do not share a file system, or see it at different times.
  // A checkpoint rank 0 cannot read is broadcast as its error, so every rank throws it (none is
  // left waiting in the next collective).
  std::uint64_t resume_from(const train::CheckpointFolder& folder) {
    if constexpr (requires(std::vector<std::uint8_t>& b) { comm_.broadcast_bytes(b); }) {
      if (comm_.ranks() > 1) {
        enum : std::uint8_t { none, checkpoint, error };
        std::vector<std::uint8_t> bytes{none};
        std::filesystem::path file = message("rank 0's checkpoint in ", folder.path().string());
        std::exception_ptr failure;
        if (comm_.rank() == 0) try {
            if (const auto latest = folder.latest()) {
              file = folder.file(*latest);
              bytes = Archive::load(file).to_bytes();
              bytes.insert(bytes.begin(), checkpoint);
            }
          } catch (const std::exception& e) {
            failure = std::current_exception();
            const std::string what = e.what();
            bytes.assign(1, error);
            bytes.insert(bytes.end(), what.begin(), what.end());
          }
        comm_.broadcast_bytes(bytes);
        if (failure) std::rethrow_exception(failure);
        if (bytes.front() == error) fail<std::runtime_error>("rank 0: ", std::string(bytes.begin() + 1, bytes.end()));
        if (bytes.front() == none) return 0;
        return load(Archive::from_bytes(std::span<const std::uint8_t>(bytes).subspan(1), file.string()), file);
      }
    }
    const auto latest = folder.latest();
    return latest ? load(folder.file(*latest)) : 0;
  }

  struct Worker {
    std::size_t index;
    Model model;
    Inner optimizer;
    std::unique_ptr<data::Loader> loader;
  };

  // x_avg = (1/K) sum_k x_k in double, workers added in index order, then summed across ranks.
  // Returns the seconds inside the all-reduce: the round's statistics were reduced just before,
  // so every rank arrives here within its share of the summation and the time is the transfer's.
  double average_values(std::ptrdiff_t size) {
    std::fill(average_.begin(), average_.end(), 0.0);
    const auto total = static_cast<std::size_t>(size);
    parallel::for_each_chunk(size, 1 << 14, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (const auto& w : workers_) {
        const scalar_type* xk = w->model.parameters().values().data();
        for (auto i = static_cast<std::size_t>(begin); i < static_cast<std::size_t>(end); ++i) average_[i] += static_cast<double>(xk[i]);
      }
    });
    const double seconds = timed_allreduce(std::span<double>(average_.data(), total));
    const double inverse = 1.0 / static_cast<double>(options_.workers);
    for (auto& v : average_) v *= inverse;
    return seconds;
  }

  double timed_allreduce(std::span<double> buffer) {
    const auto start = std::chrono::steady_clock::now();
    comm_.allreduce_sum(buffer);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  // SlowMo's "average" strategy: every inner buffer becomes the workers' mean, like the weights.
  CommunicationCost average_inner_buffers() {
    auto& first = workers_.front()->optimizer.state();
    const auto names = first.buffer_names();
    const auto size = static_cast<std::size_t>(first.size());
    std::vector<double> sum(size);
    double seconds = 0;
    for (std::size_t b = 0; b < names.size(); ++b) {
      std::fill(sum.begin(), sum.end(), 0.0);
      for (const auto& w : workers_) {
        const auto buffer = w->optimizer.state().buffer(names[b]);
        for (std::size_t i = 0; i < size; ++i) sum[i] += static_cast<double>(buffer[i]);
      }
      seconds += timed_allreduce(std::span<double>(sum));
      const double inverse = 1.0 / static_cast<double>(options_.workers);
      for (const auto& w : workers_) {
        auto buffer = w->optimizer.state().buffer(names[b]);
        for (std::size_t i = 0; i < size; ++i) buffer[i] = static_cast<scalar_type>(sum[i] * inverse);
      }
    }
    CommunicationCost c = allreduce_cost(static_cast<std::int64_t>(size * names.size()), sizeof(scalar_type), options_.workers,
                                         options_.network);
    c.rounds = 0;  // part of the same synchronisation
    c.allreduce_seconds = seconds;
    return c;
  }

  Model global_;
  Outer outer_;
  LocalOptions options_;
  Comm comm_;
  data::Shards shards_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<double> average_;
  std::int64_t step_ = 0;
  CommunicationCost communication_;
};

}  // namespace distopt::local
