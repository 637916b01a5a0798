// LocalTrainer<Model, Inner, Outer, Comm>: K workers taking H local steps of an inner optimizer
// between averages, combined by an outer policy (LocalSGD, post-local SGD, SlowMo), hosted on any
// number of OpenMP threads and processes, with the same bits for any. The epochs, evaluation and
// checkpoints of a run are train::run's (train/local_run.hpp); the checkpoint layout is
// local/checkpoint.hpp's.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <exception>
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

#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/data/loader.hpp"
#include "distopt/data/shards.hpp"
#include "distopt/local/communicator.hpp"
#include "distopt/local/compression.hpp"
#include "distopt/local/outer.hpp"
#include "distopt/nn/model.hpp"
#include "distopt/optim/optimizer.hpp"
#include "distopt/optim/schedule.hpp"
#include "distopt/optim/step.hpp"

namespace distopt::local {

/// What a LocalTrainer does. K = `workers` replicas each take H = `local_steps` steps of the inner
/// optimizer on `batch_size` samples of their own shard, then the outer policy combines them.
/// Post-local SGD (Lin et al. 2020): with `switch_step`, the workers average after every step
/// until that global step, then every H. `seed` fixes the shards (when not given), each worker's
/// loader order and augmentation; without `shuffle` each worker reads its shard in the order
/// given, epoch after epoch (what a reference implementation can replay). `augmentation` is
/// none unless asked for (the study asks for crop and flip on its images; a crop on a table is
/// refused, naming both). `threads` hosts the workers (0: all of OpenMP's). `compression` is
/// what each worker sends at a synchronisation (local/compression.hpp; by default its float32
/// model through the all-reduce).
struct LocalOptions {
  std::size_t workers = 4;
  std::size_t local_steps = 8;
  std::size_t batch_size = 64;
  std::optional<std::int64_t> switch_step{};
  InnerBuffers inner_buffers = InnerBuffers::maintain;
  std::uint64_t seed = 0;
  std::optional<data::Augmentation> augmentation{};
  bool shuffle = true;
  int threads = 0;
  NetworkModel network{};
  Compression compression{};
};

/// The seed of worker k's loader, derived from the run's seed: a centralized run with this seed
/// over the same samples sees exactly worker k's batches.
[[nodiscard]] inline std::uint64_t worker_seed(std::uint64_t seed, std::size_t worker) {
  return Rng(seed).split({0x10CA1, static_cast<std::uint64_t>(worker)}).next_u64();
}

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
template <class Model, optim::Optimizer Inner, OuterPolicy Outer, Communicator Comm = InProcess>
class LocalTrainer {
  static_assert(nn::check_model<Model>(), "LocalTrainer: the model type does not meet nn::Model (see the message above)");

 public:
  using scalar_type = typename std::remove_cvref_t<decltype(std::declval<Model&>().parameters())>::scalar_type;

  /// `model` is the initial global model, `inner` an inner optimizer over its parameters (each
  /// worker gets a copy, options and state), `outer` the outer policy, `train` the data the
  /// workers share out (any data set with its normalisation, data::Source; it must outlive the
  /// trainer), with `shards` one index list per worker (IID by default: class-balanced where the
  /// targets are classes). Throws std::invalid_argument naming the field for K = 0, H = 0,
  /// batch_size = 0, more workers than samples, shards that do not match K, or a model whose
  /// input or output size does not match the data's samples or targets.
  LocalTrainer(const Model& model, const Inner& inner, Outer outer, data::Source train, LocalOptions options,
               std::optional<data::Shards> shards = std::nullopt, Comm comm = Comm{})
      : global_(model), outer_(std::move(outer)), options_(options), comm_(std::move(comm)) {
    nn::check_model_fits(model, train.sample_shape(), train.target_info().are_classes(),
                         static_cast<std::ptrdiff_t>(train.target_info().width), train.name(), "LocalTrainer");
    classified_ = train.target_info().are_classes();
    require(options_.workers > 0, "LocalOptions.workers (K) must be positive");
    require(options_.local_steps > 0, "LocalOptions.local_steps (H) must be positive");
    require(options_.batch_size > 0, "LocalOptions.batch_size must be positive");
    require(options_.workers <= train.size(), "LocalOptions.workers: ", options_.workers, " workers for ",
            train.size(), " samples leaves a worker without data");
    require(options_.threads >= 0, "LocalOptions.threads must be >= 0, got ", options_.threads);
    if (options_.switch_step) require(*options_.switch_step >= 0, "LocalOptions.switch_step must be >= 0");
    options_.compression.validate();
    shards_ = shards ? std::move(*shards) : data::iid_shards(train, options_.workers, options_.seed);
    require(shards_.size() == options_.workers, "LocalTrainer: ", shards_.size(), " shards for LocalOptions.workers = ",
            options_.workers);
    const std::size_t first = comm_.first_worker(options_.workers), count = comm_.local_workers(options_.workers);
    require(count > 0 && first + count <= options_.workers, "LocalTrainer: the communicator hosts workers [", first, ", ",
            first + count, ") of ", options_.workers);
    for (std::size_t k = first; k < first + count; ++k) {
      require(!shards_[k].empty(), "LocalTrainer: the shard of worker ", k, " is empty");
      auto worker = std::make_unique<Worker>(Worker{k, model, inner, nullptr, {}});
      if (options_.compression.error_feedback && options_.compression.lossy())
        worker->residual.assign(static_cast<std::size_t>(model.parameters().size()), 0.0);
      worker->loader = std::make_unique<data::Loader>(
          train,
          data::LoaderOptions{.batch_size = options_.batch_size, .shuffle = options_.shuffle,
                              .seed = worker_seed(options_.seed, k), .augmentation = options_.augmentation},
          shards_[k]);
      workers_.push_back(std::move(worker));
    }
    average_.assign(static_cast<std::size_t>(global_.parameters().size()), 0.0);
    comm_.require_same(options_.workers, "LocalOptions.workers (K)");
    comm_.require_same(options_.local_steps, "LocalOptions.local_steps (H)");
    comm_.require_same(options_.batch_size, "LocalOptions.batch_size");
    comm_.require_same(options_.seed, "LocalOptions.seed");
    comm_.require_same(static_cast<std::uint64_t>(options_.compression.codec), "LocalOptions.compression.codec");
    comm_.require_same(static_cast<std::uint64_t>(global_.parameters().size()), "the parameter count (model layout)");
    // One initial model for all: rank 0's (the same already when every rank seeds alike).
    broadcast_values(comm_, global_values());
  }

  /// The study's form: uint8 images normalised per channel.
  LocalTrainer(const Model& model, const Inner& inner, Outer outer, const data::LabelledImages& train,
               data::Normalizer normalizer, LocalOptions options, std::optional<data::Shards> shards = std::nullopt,
               Comm comm = Comm{})
      : LocalTrainer(model, inner, std::move(outer), data::Source(train, std::move(normalizer)), options, std::move(shards),
                     std::move(comm)) {}

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
  /// Worker k's error-feedback residual (empty without error feedback).
  [[nodiscard]] std::span<const double> worker_residual(std::size_t k) const { return workers_.at(k)->residual; }

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

  /// One round of at most `max_steps` local steps (H by default). Throws optim::Diverged when a
  /// worker's loss or gradient stops being finite; the global model is then left as it was.
  RoundReport round(const optim::Schedule& schedule, std::optional<std::size_t> max_steps = std::nullopt) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const std::size_t h = next_round_steps(step_ + static_cast<std::int64_t>(max_steps.value_or(options_.local_steps)));
    require(h > 0, "LocalTrainer::round: no local steps to take");
    const std::span<scalar_type> x = global_values();
    const std::size_t n = workers_.size();
    std::vector<std::exception_ptr> errors(n);
    std::vector<double> loss(n, 0.0);
    std::vector<std::int64_t> correct(n, 0), samples(n, 0);

    const auto run_worker = [&](std::size_t w) {
      try {
        Worker& worker = *workers_[w];
        auto& params = worker.model.parameters();
        std::copy_n(x.data(), x.size(), params.values().data());
        if (options_.inner_buffers == InnerBuffers::reset) worker.optimizer.reset_state();
        for (std::size_t s = 0; s < h; ++s) {
          const data::Batch* batch = worker.loader->next();
          if (batch == nullptr) {
            worker.loader->start_epoch(worker.loader->position().epoch + 1);
            batch = worker.loader->next();
          }
          const auto t = step_ + static_cast<std::int64_t>(s);
          const optim::StepStats stats =
              optim::step(worker.model, worker.optimizer, batch->inputs(), batch->targets(), schedule(t), batch->inputs().count,
                          message("worker ", worker.index, ": "), t + 1);
          loss[w] += stats.loss * static_cast<double>(stats.count);
          correct[w] += stats.correct;
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
    if (local_stats[0] > 0) throw optim::Diverged(message("a worker on another rank failed (", local_stats[0], " workers in all)"));

    const auto sync_start = clock::now();
    const double gamma = schedule(step_ + static_cast<std::int64_t>(h) - 1);
    const double allreduce_seconds = options_.compression.gathers() ? compressed_average(x) : average_values(static_cast<std::ptrdiff_t>(x.size()));
    outer_.apply(x, std::span<const double>(average_), gamma);
    CommunicationCost cost =
        sync_cost(options_.compression, static_cast<std::int64_t>(x.size()), sizeof(scalar_type), options_.workers, options_.network);
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
    report.accuracy = classified_ ? local_stats[2] / local_stats[3] : std::nan("");
    report.seconds = std::chrono::duration<double>(end - start).count();
    report.sync_seconds = std::chrono::duration<double>(end - sync_start).count();
    report.communication = cost;
    step_ += static_cast<std::int64_t>(h);
    sync_seconds_ += report.sync_seconds;
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

  /// What an epoch of rounds did (epochs_done counts whole epochs since the start of the run).
  struct EpochReport {
    double loss = 0;
    double accuracy = 0;
    std::int64_t samples = 0;
    std::int64_t steps = 0;
    double seconds = 0;
    double gamma = 0;              ///< the inner lr of the last step
    std::uint64_t epochs_done = 0;
  };

  /// Rounds until the next epoch boundary of a run of `planned_epochs` epochs (the first
  /// synchronisation at or after an epoch's last step, so rounds keep H steps; a round of more
  /// than an epoch's steps crosses several), calling `on_round` after each. Throws
  /// optim::Diverged as round does.
  EpochReport train_epoch(const optim::Schedule& schedule, std::uint64_t planned_epochs,
                          const std::function<void(const RoundReport&)>& on_round = {}) {
    const std::int64_t per_epoch = steps_per_epoch();
    const std::int64_t total = static_cast<std::int64_t>(planned_epochs) * per_epoch;
    require(step_ < total, "LocalTrainer::train_epoch: the run's ", planned_epochs, " epochs are done");
    EpochReport e;
    double loss = 0, correct = 0;
    const std::int64_t first = step_;
    do {
      const RoundReport r = round(schedule, static_cast<std::size_t>(total - step_));
      loss += r.loss * static_cast<double>(r.samples);
      correct += r.accuracy * static_cast<double>(r.samples);
      e.samples += r.samples;
      e.seconds += r.seconds;
      e.gamma = r.gamma;
      if (on_round) on_round(r);
    } while (step_ < static_cast<std::int64_t>(epochs_done_ + 1) * per_epoch && step_ < total);
    epochs_done_ = std::min<std::uint64_t>(static_cast<std::uint64_t>(step_ / per_epoch), planned_epochs);
    e.steps = step_ - first;
    e.epochs_done = epochs_done_;
    e.loss = loss / static_cast<double>(e.samples);
    e.accuracy = correct / static_cast<double>(e.samples);
    return e;
  }

  /// Epochs done (whole passes over the shards) and the seconds this process spent
  /// synchronising (averaging, all-reduce, outer step) since it started or resumed.
  [[nodiscard]] std::uint64_t epochs_done() const noexcept { return epochs_done_; }
  [[nodiscard]] double sync_seconds() const noexcept { return sync_seconds_; }
  [[nodiscard]] Comm& communicator() noexcept { return comm_; }

 private:
  friend struct LocalCheckpoint;

  // The global model's values, through what ParameterContainer promises (data() and size()).
  [[nodiscard]] std::span<scalar_type> global_values() {
    auto& p = global_.parameters();
    return {p.values().data(), static_cast<std::size_t>(p.size())};
  }

  struct Worker {
    std::size_t index;
    Model model;
    Inner optimizer;
    std::unique_ptr<data::Loader> loader;
    std::vector<double> residual;  // error feedback: what compression has not sent yet
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

  // x_avg from compressed messages: every worker encodes its message (its model for fp32, else
  // its pseudo-gradient plus residual), rank 0 gathers them all, rebuilds each worker's model in
  // double and adds them in worker order, and every rank receives the average. The sum never
  // depends on how workers are spread over ranks, so in-process and MPI agree to the bit.
  // Returns the seconds spent in the communicator.
  double compressed_average(std::span<const scalar_type> x) {
    const Compression& c = options_.compression;
    const std::size_t n = x.size();
    std::vector<std::uint8_t> mine;
    std::vector<double> values(n), sent(n);
    std::vector<std::uint8_t> payload;
    for (const auto& w : workers_) {
      const scalar_type* xk = w->model.parameters().values().data();
      if (c.lossy()) {
        for (std::size_t i = 0; i < n; ++i) values[i] = static_cast<double>(xk[i]) - static_cast<double>(x[i]);
        if (!w->residual.empty())
          for (std::size_t i = 0; i < n; ++i) values[i] += w->residual[i];
      } else {
        for (std::size_t i = 0; i < n; ++i) values[i] = static_cast<double>(xk[i]);
      }
      encode(c, values, payload);
      if (!w->residual.empty()) {
        decode(c, payload, sent);
        for (std::size_t i = 0; i < n; ++i) w->residual[i] = values[i] - sent[i];
      }
      const std::uint64_t size = payload.size();
      const auto* raw = reinterpret_cast<const std::uint8_t*>(&size);
      mine.insert(mine.end(), raw, raw + sizeof size);
      mine.insert(mine.end(), payload.begin(), payload.end());
    }
    const auto start = std::chrono::steady_clock::now();
    const auto parts = comm_.gather_bytes(mine);
    if (comm_.rank() == 0) {
      std::fill(average_.begin(), average_.end(), 0.0);
      std::size_t received = 0;
      for (std::size_t r = 0; r < parts.size(); ++r) {
        const std::span<const std::uint8_t> part(parts[r]);
        for (std::size_t at = 0; at < part.size();) {
          require(part.size() - at >= sizeof(std::uint64_t), "LocalTrainer: the messages of rank ", r, " end inside a size field");
          std::uint64_t size = 0;
          std::memcpy(&size, part.data() + at, sizeof size);
          at += sizeof size;
          require(size <= part.size() - at, "LocalTrainer: a message of rank ", r, " claims ", size, " bytes past its end");
          decode(c, part.subspan(at, static_cast<std::size_t>(size)), sent);
          at += static_cast<std::size_t>(size);
          if (c.lossy())
            for (std::size_t i = 0; i < n; ++i) average_[i] += static_cast<double>(x[i]) + sent[i];
          else
            for (std::size_t i = 0; i < n; ++i) average_[i] += sent[i];
          ++received;
        }
      }
      require(received == options_.workers, "LocalTrainer: ", received, " messages for ", options_.workers, " workers");
      const double inverse = 1.0 / static_cast<double>(options_.workers);
      for (auto& v : average_) v *= inverse;
    }
    broadcast_values(comm_, std::span<double>(average_));
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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
  std::uint64_t epochs_done_ = 0;
  bool classified_ = true;  // targets are classes: rounds report an accuracy
  double sync_seconds_ = 0;
  CommunicationCost communication_;
};

}  // namespace distopt::local
