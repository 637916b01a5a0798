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
#include <limits>
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
/// model through the all-reduce). `streaming` overlaps the exchanges with the inner steps
/// (Streaming DiLoCo; by default none).
struct LocalOptions;

/// Streaming DiLoCo (Douillard et al. 2025, "Streaming DiLoCo with overlapping communication",
/// arXiv 2501.18512). The model is split into P = `fragments` fragments of whole blocks
/// (split_fragments). Fragment p starts an exchange after every step s = o_p + m H, m >= 1,
/// o_p = floor(p H / P): each worker sends its values of the fragment (or its pseudo-gradient, per
/// the compression), whose average arrives while the workers take tau = `delay` more inner steps.
/// After step s + tau the fragment's outer step runs on the global x_p with the pseudo-gradient
/// delta = x_p - avg_k x_k,p(s), and every worker merges it into the fragment it kept training:
///   x_k,p <- alpha x_k,p + (1 - alpha) x_p,       alpha = `alpha`.
/// With P = 1, tau = 0 and alpha = 0 (the default) this is DiLoCo's round (or LocalSGD's and
/// SlowMo's, with their outer policies), bit for bit: the workers restart from x every round.
/// Anything else "overlaps": the workers keep their models across rounds, the inner buffers
/// are kept (InnerBuffers::maintain), the outer policy steps per fragment (FragmentedOuterPolicy)
/// and a post-local switch is refused. tau <= H: with tau = H an exchange overlaps a whole round.
struct Streaming {
  std::size_t fragments = 1;
  std::size_t delay = 0;
  double alpha = 0.0;

  [[nodiscard]] bool overlaps() const noexcept { return fragments != 1 || delay != 0 || alpha != 0.0; }
};

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
  Streaming streaming{};
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
    validate_streaming();
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
    comm_.require_same(options_.workers, "LocalOptions.workers (K)");
    comm_.require_same(options_.local_steps, "LocalOptions.local_steps (H)");
    comm_.require_same(options_.batch_size, "LocalOptions.batch_size");
    comm_.require_same(options_.seed, "LocalOptions.seed");
    comm_.require_same(static_cast<std::uint64_t>(options_.compression.codec), "LocalOptions.compression.codec");
    comm_.require_same(static_cast<std::uint64_t>(global_.parameters().size()), "the parameter count (model layout)");
    comm_.require_same(options_.streaming.fragments, "LocalOptions.streaming.fragments (P)");
    comm_.require_same(options_.streaming.delay, "LocalOptions.streaming.delay (tau)");
    // One initial model for all: rank 0's (the same already when every rank seeds alike).
    broadcast_values(comm_, global_values());
    fragments_ = split_fragments(global_.parameters(), options_.streaming.fragments);
    if (fragments_.size() > 1) {
      if constexpr (FragmentedOuterPolicy<Outer>)
        outer_.split(fragments_);
      else
        fail("LocalOptions.streaming.fragments: the outer policy '", outer_.name(), "' cannot step per fragment");
    }
    // Overlapping workers never restart from x: they start from it here.
    for (auto& w : workers_) std::copy_n(global_values().data(), global_values().size(), w->model.parameters().values().data());
  }

  LocalTrainer(LocalTrainer&&) = default;
  LocalTrainer& operator=(LocalTrainer&&) = default;
  LocalTrainer(const LocalTrainer&) = delete;
  LocalTrainer& operator=(const LocalTrainer&) = delete;
  /// Waits for the exchanges still in flight: every rank started them, so none is left waiting.
  ~LocalTrainer() {
    for (auto& exchange : in_flight_) try {
        if (!exchange->complete) (void)comm_.wait(exchange->pending);
      } catch (...) {
      }
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
  /// A wall clock of this run on `options().network`, K machines of one worker each: every step
  /// takes the compute time this rank measured (and each round the slowest rank's), and every
  /// exchange is a transfer of the bytes it really sends (the all-reduce of the workers' sums in
  /// double, or the codec's payloads) over one link the exchanges take in turn: it starts when
  /// the exchange starts or when the link frees, and the outer step waits for its end. Without overlap that is compute
  /// plus transfers; with it, only what the tau steps between start and outer step do not hide.
  /// (communication().modelled_seconds instead counts a float32 all-reduce, never overlapped.)
  [[nodiscard]] double simulated_seconds() const noexcept { return clock_.now; }
  /// The compute time of the steps so far, measured on this rank.
  [[nodiscard]] double compute_seconds() const noexcept { return clock_.compute; }
  /// The fragments of the model (one, the whole model, without streaming).
  [[nodiscard]] const std::vector<Fragment>& fragments() const noexcept { return fragments_; }
  /// Exchanges started and not yet applied (their outer steps come `streaming.delay` steps after).
  [[nodiscard]] std::size_t exchanges_in_flight() const noexcept { return in_flight_.size(); }
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
  /// worker's loss or gradient stops being finite; without streaming the global model is then
  /// left as it was (with it, the round's exchanges have run: resume from a checkpoint).
  /// Without streaming, the round ends with the synchronisation; with it, the round's steps run
  /// in segments between the steps at which exchanges start or end.
  RoundReport round(const optim::Schedule& schedule, std::optional<std::size_t> max_steps = std::nullopt) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const std::size_t h = next_round_steps(step_ + static_cast<std::int64_t>(max_steps.value_or(options_.local_steps)));
    require(h > 0, "LocalTrainer::round: no local steps to take");
    const std::int64_t first = step_, end = step_ + static_cast<std::int64_t>(h);
    const bool overlaps = options_.streaming.overlaps();
    if (!overlaps)
      for (auto& w : workers_) {
        std::copy_n(global_values().data(), global_values().size(), w->model.parameters().values().data());
        if (options_.inner_buffers == InnerBuffers::reset) w->optimizer.reset_state();
      }
    Tally tally(workers_.size());
    double totals[3] = {0, 0, 0};  // loss sum, correct, samples over all workers
    double sync_seconds = 0;
    CommunicationCost cost;
    while (step_ < end) {
      const std::int64_t until = std::min(end, next_event());
      take_steps(schedule, until, tally);
      step_ = until;
      // Without overlap the workers' failures are known before the synchronisation, which then
      // never touches x; with it, exchanges start mid-round on every rank alike whatever a worker
      // did, and a failure is reported at the round's end (one small blocking collective per
      // round, not one per segment queued behind the exchanges' bytes on a slow link).
      if (!overlaps && step_ == end) reduce(tally, totals);
      const auto sync_start = clock::now();
      cost += synchronise(schedule, step_ == end);
      sync_seconds += std::chrono::duration<double>(clock::now() - sync_start).count();
    }
    if (overlaps) reduce(tally, totals);
    cost.measured_seconds = sync_seconds;
    communication_ += cost;

    RoundReport report;
    report.first_step = first;
    report.local_steps = h;
    report.gamma = schedule(end - 1);
    report.samples = static_cast<std::int64_t>(totals[2]);
    report.loss = totals[0] / totals[2];
    report.accuracy = classified_ ? totals[1] / totals[2] : std::nan("");
    report.seconds = std::chrono::duration<double>(clock::now() - start).count();
    report.sync_seconds = sync_seconds;
    report.communication = cost;
    sync_seconds_ += sync_seconds;
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

  // An exchange of one fragment: started after step `started`, applied `streaming.delay` steps
  // later. `average` holds the workers' sum in flight (all-reduce), then their average.
  struct Exchange {
    std::size_t fragment = 0;
    std::int64_t started = 0;
    double gamma = 0;  // the inner lr of the step before the start (SlowMo's gamma)
    std::vector<double> average;
    typename Comm::Pending pending{};
    bool complete = false;
    double arrives = 0;  // on the simulated clock
  };

  struct Clock {
    double now = 0;        // simulated seconds
    double compute = 0;    // measured compute seconds
    double link_free = 0;  // when the simulated link has sent what it was given
  };

  void validate_streaming() const {
    const Streaming& s = options_.streaming;
    require(s.fragments >= 1, "LocalOptions.streaming.fragments (P) must be at least 1");
    require(s.delay <= options_.local_steps, "LocalOptions.streaming.delay (tau) must be at most H = ", options_.local_steps,
            ", got ", s.delay);
    require(std::isfinite(s.alpha) && s.alpha >= 0.0 && s.alpha <= 1.0, "LocalOptions.streaming.alpha must be in [0, 1], got ",
            s.alpha);
    if (!s.overlaps()) return;
    require(options_.inner_buffers == InnerBuffers::maintain,
            "LocalOptions.inner_buffers: overlapping exchanges (LocalOptions.streaming) keep the inner buffers (maintain)");
    require(!options_.switch_step, "LocalOptions.switch_step: a post-local switch does not overlap (LocalOptions.streaming)");
  }

  // The first step after the current one at which an exchange starts or is applied (rounds end
  // the segments without streaming: their last step is the synchronisation).
  [[nodiscard]] std::int64_t next_event() const {
    std::int64_t next = std::numeric_limits<std::int64_t>::max();
    const auto delay = static_cast<std::int64_t>(options_.streaming.delay);
    for (const auto& e : in_flight_) next = std::min(next, e->started + delay);
    if (fragments_.size() > 1)
      for (std::size_t p = 0; p < fragments_.size(); ++p) {
        const std::int64_t h = static_cast<std::int64_t>(options_.local_steps), offset = fragment_offset(p);
        const std::int64_t m = std::max<std::int64_t>(1, (step_ - offset) / h + 1);  // the first o_p + m H after step_
        next = std::min(next, offset + m * h);
      }
    return next;
  }

  [[nodiscard]] std::int64_t fragment_offset(std::size_t p) const {
    return static_cast<std::int64_t>(p * options_.local_steps / fragments_.size());
  }

  // What the hosted workers did in a round: a failure each, loss sums, correct answers, samples.
  struct Tally {
    explicit Tally(std::size_t n) : errors(n), loss(n, 0.0), correct(n, 0), samples(n, 0) {}
    std::vector<std::exception_ptr> errors;
    std::vector<double> loss;
    std::vector<std::int64_t> correct, samples;
    double compute = 0;  // seconds this rank took for the round's steps
  };

  // Every hosted worker takes the steps from step_ to `until` (each step's workers on the OpenMP
  // team), the exchanges in flight tested between steps: MPI moves a non-blocking collective on
  // only inside its calls, and a test between steps costs nothing a step would notice (within a
  // step, only MpiCommunicator's optional progress thread moves them on: it needs
  // MPI_THREAD_MULTIPLE, which the caller's MPI_Init decides). A worker that failed takes no more
  // steps. The segment's time goes on the simulated clock as compute.
  void take_steps(const optim::Schedule& schedule, std::int64_t until, Tally& tally) {
    const std::size_t n = workers_.size();
    const auto run_worker = [&](std::size_t w, std::int64_t t) {
      if (tally.errors[w]) return;
      try {
        Worker& worker = *workers_[w];
        const data::Batch* batch = worker.loader->next();
        if (batch == nullptr) {
          worker.loader->start_epoch(worker.loader->position().epoch + 1);
          batch = worker.loader->next();
        }
        const optim::StepStats stats = optim::step(worker.model, worker.optimizer, batch->inputs(), batch->targets(), schedule(t),
                                                   batch->inputs().count, message("worker ", worker.index, ": "), t + 1);
        tally.loss[w] += stats.loss * static_cast<double>(stats.count);
        tally.correct[w] += stats.correct;
        tally.samples[w] += stats.count;
      } catch (...) {
        tally.errors[w] = std::current_exception();
      }
    };
    const auto started = std::chrono::steady_clock::now();
    const int threads = options_.threads > 0 ? options_.threads : parallel::max_threads();
    const bool team = threads > 1 && n > 1 && !parallel::in_parallel();
    const int size = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(std::max(threads, 1)), n));
    if (in_flight_.empty()) {
      // Nothing to move on between steps: each worker takes all its steps in one go.
      if (team) {
#pragma omp parallel for num_threads(size) schedule(dynamic, 1)
        for (std::size_t w = 0; w < n; ++w)
          for (std::int64_t t = step_; t < until; ++t) run_worker(w, t);
      } else {
        parallel::ThreadCount all(threads);
        for (std::size_t w = 0; w < n; ++w)
          for (std::int64_t t = step_; t < until; ++t) run_worker(w, t);
      }
    } else {
      for (std::int64_t t = step_; t < until; ++t) {
        if (team) {
#pragma omp parallel for num_threads(size) schedule(dynamic, 1)
          for (std::size_t w = 0; w < n; ++w) run_worker(w, t);
        } else {
          parallel::ThreadCount all(threads);
          for (std::size_t w = 0; w < n; ++w) run_worker(w, t);
        }
        for (auto& e : in_flight_)
          if (!e->complete) (void)comm_.test(e->pending);
      }
    }
    const double compute = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    tally.compute += compute;
    clock_.compute += compute;
    clock_.now += compute;
  }

  // Every rank learns whether any worker anywhere failed, so all stop together (never one rank
  // waiting in a collective the others left); the round's statistics are added to `totals`.
  // The slowest rank's compute time of the round goes on the simulated clock too: the first
  // collective after it waits for that rank, on a real network as here.
  void reduce(const Tally& tally, double* totals) {
    std::vector<double> local_stats(4 + static_cast<std::size_t>(comm_.ranks()), 0.0);
    for (std::size_t w = 0; w < tally.errors.size(); ++w) {
      local_stats[0] += tally.errors[w] ? 1.0 : 0.0;
      local_stats[1] += tally.loss[w];
      local_stats[2] += static_cast<double>(tally.correct[w]);
      local_stats[3] += static_cast<double>(tally.samples[w]);
    }
    local_stats[4 + static_cast<std::size_t>(comm_.rank())] = tally.compute;
    comm_.allreduce_sum(std::span<double>(local_stats));
    for (const auto& error : tally.errors)
      if (error) std::rethrow_exception(error);
    if (local_stats[0] > 0) throw optim::Diverged(message("a worker on another rank failed (", local_stats[0], " workers in all)"));
    for (int i = 0; i < 3; ++i) totals[i] += local_stats[static_cast<std::size_t>(i) + 1];
    const double slowest = *std::max_element(local_stats.begin() + 4, local_stats.end());
    clock_.now += slowest - tally.compute;
  }

  // At step_: the outer steps of the exchanges due (started tau steps ago), then the exchanges
  // that start (each fragment at its offset; the whole model at `round_end` with one fragment),
  // then with tau = 0 their outer steps at once. An exchange due and one starting for the same
  // fragment (tau = H) come in that order: the new one's pseudo-gradient is taken from the
  // stepped x_p.
  CommunicationCost synchronise(const optim::Schedule& schedule, bool round_end) {
    CommunicationCost cost;
    apply_due(cost);
    const double gamma = schedule(step_ - 1);
    if (fragments_.size() == 1) {
      if (round_end) cost += start_exchange(0, gamma, cost);
    } else {
      for (std::size_t p = 0; p < fragments_.size(); ++p) {
        const std::int64_t since = step_ - fragment_offset(p), h = static_cast<std::int64_t>(options_.local_steps);
        if (since >= h && since % h == 0) cost += start_exchange(p, gamma, cost);
      }
    }
    apply_due(cost);
    return cost;
  }

  void apply_due(CommunicationCost& cost) {
    const auto delay = static_cast<std::int64_t>(options_.streaming.delay);
    while (!in_flight_.empty() && in_flight_.front()->started + delay == step_) {
      cost.allreduce_seconds += complete(*in_flight_.front());
      cost += apply_exchange(*in_flight_.front());
      in_flight_.erase(in_flight_.begin());
    }
  }

  // Sends every hosted worker's values of fragment p: their sum in double, workers added in index
  // order (then summed across ranks), or with compression each worker's encoded message (its
  // model for fp32, else its pseudo-gradient plus residual), gathered on every rank.
  CommunicationCost start_exchange(std::size_t p, double gamma, CommunicationCost& earlier) {
    // One exchange per fragment in flight: a round cut short (the last of a run) may start the
    // next before the last one is due; that one is completed and applied first.
    for (auto it = in_flight_.begin(); it != in_flight_.end();)
      if ((*it)->fragment == p) {
        earlier.allreduce_seconds += complete(**it);
        earlier += apply_exchange(**it);
        it = in_flight_.erase(it);
      } else {
        ++it;
      }
    const auto start = std::chrono::steady_clock::now();
    const Fragment& f = fragments_[p];
    auto exchange = std::make_unique<Exchange>();
    exchange->fragment = p;
    exchange->started = step_;
    exchange->gamma = gamma;
    exchange->average.assign(f.size(), 0.0);
    const Compression& c = options_.compression;
    if (c.gathers()) {
      exchange->pending = comm_.start_allgather_bytes(encode_messages(f));
    } else {
      std::vector<double>& sum = exchange->average;
      parallel::for_each_chunk(static_cast<std::ptrdiff_t>(f.size()), 1 << 14, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
        for (const auto& w : workers_) {
          const scalar_type* xk = w->model.parameters().values().data() + f.begin;
          for (auto i = static_cast<std::size_t>(begin); i < static_cast<std::size_t>(end); ++i) sum[i] += static_cast<double>(xk[i]);
        }
      });
      exchange->pending = comm_.start_allreduce_sum(std::span<double>(sum));
    }
    // The simulated transfer: what goes on the wire (doubles through the all-reduce).
    const double transfer = c.gathers() ? sync_cost(c, static_cast<std::int64_t>(f.size()), sizeof(scalar_type), options_.workers,
                                                    options_.network).modelled_seconds
                                        : options_.network.ring_allreduce_seconds(static_cast<double>(f.size() * sizeof(double)),
                                                                                  options_.workers);
    exchange->arrives = std::max(clock_.now, clock_.link_free) + transfer;
    clock_.link_free = exchange->arrives;
    in_flight_.push_back(std::move(exchange));
    CommunicationCost cost = sync_cost(c, static_cast<std::int64_t>(f.size()), sizeof(scalar_type), options_.workers, options_.network);
    cost.rounds = 1;
    cost.allreduce_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return cost;
  }

  std::vector<std::uint8_t> encode_messages(const Fragment& f) {
    const Compression& c = options_.compression;
    const std::span<const scalar_type> x = global_values().subspan(f.begin, f.size());
    const std::size_t n = f.size();
    std::vector<std::uint8_t> mine, payload;
    std::vector<double> values(n), sent(n);
    for (const auto& w : workers_) {
      const scalar_type* xk = w->model.parameters().values().data() + f.begin;
      double* residual = w->residual.empty() ? nullptr : w->residual.data() + f.begin;
      if (c.lossy()) {
        for (std::size_t i = 0; i < n; ++i) values[i] = static_cast<double>(xk[i]) - static_cast<double>(x[i]);
        if (residual != nullptr)
          for (std::size_t i = 0; i < n; ++i) values[i] += residual[i];
      } else {
        for (std::size_t i = 0; i < n; ++i) values[i] = static_cast<double>(xk[i]);
      }
      encode(c, values, payload);
      if (residual != nullptr) {
        decode(c, payload, sent);
        for (std::size_t i = 0; i < n; ++i) residual[i] = values[i] - sent[i];
      }
      const std::uint64_t size = payload.size();
      const auto* raw = reinterpret_cast<const std::uint8_t*>(&size);
      mine.insert(mine.end(), raw, raw + sizeof size);
      mine.insert(mine.end(), payload.begin(), payload.end());
    }
    return mine;
  }

  // Waits for the exchange and turns what arrived into the average: the all-reduced sum divided
  // by K, or every worker's message decoded (x_p + D(m_k) for a pseudo-gradient) and added in
  // worker order, which never depends on how the workers are spread over ranks. Returns the
  // seconds spent waiting.
  double complete(Exchange& e) {
    if (e.complete) return 0.0;
    const auto start = std::chrono::steady_clock::now();
    const auto parts = comm_.wait(e.pending);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const Compression& c = options_.compression;
    const Fragment& f = fragments_[e.fragment];
    if (c.gathers()) {
      const std::span<const scalar_type> x = global_values().subspan(f.begin, f.size());
      std::vector<double> sent(f.size());
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
            for (std::size_t i = 0; i < f.size(); ++i) e.average[i] += static_cast<double>(x[i]) + sent[i];
          else
            for (std::size_t i = 0; i < f.size(); ++i) e.average[i] += sent[i];
          ++received;
        }
      }
      require(received == options_.workers, "LocalTrainer: ", received, " messages for ", options_.workers, " workers");
    }
    const double inverse = 1.0 / static_cast<double>(options_.workers);
    for (auto& v : e.average) v *= inverse;
    e.complete = true;
    return waited;
  }

  // The fragment's outer step, then (overlapping) each worker's merge of it, or SlowMo's averaged
  // inner buffers.
  CommunicationCost apply_exchange(const Exchange& e) {
    const Fragment& f = fragments_[e.fragment];
    const std::span<scalar_type> x = global_values().subspan(f.begin, f.size());
    const std::span<const double> average(e.average);
    clock_.now = std::max(clock_.now, e.arrives);
    if (fragments_.size() == 1)
      outer_.apply(x, average, e.gamma);
    else if constexpr (FragmentedOuterPolicy<Outer>)
      outer_.apply(e.fragment, x, average, e.gamma);
    CommunicationCost cost;
    if (options_.inner_buffers == InnerBuffers::average) cost += average_inner_buffers();
    if (options_.streaming.overlaps()) {
      const double alpha = options_.streaming.alpha;
      for (auto& w : workers_) {
        scalar_type* xk = w->model.parameters().values().data() + f.begin;
        if (alpha == 0.0)
          std::copy(x.begin(), x.end(), xk);
        else
          for (std::size_t i = 0; i < x.size(); ++i)
            xk[i] = static_cast<scalar_type>(alpha * static_cast<double>(xk[i]) + (1.0 - alpha) * static_cast<double>(x[i]));
      }
    }
    cost.rounds = 0;
    return cost;
  }

  // Completes every exchange in flight (a checkpoint holds their averages, which are the same
  // bits whenever they arrive).
  void complete_exchanges() {
    for (auto& e : in_flight_) (void)complete(*e);
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
  std::vector<Fragment> fragments_;
  std::vector<std::unique_ptr<Exchange>> in_flight_;  // in the order they started
  Clock clock_;
  std::int64_t step_ = 0;
  std::uint64_t epochs_done_ = 0;
  bool classified_ = true;  // targets are classes: rounds report an accuracy
  double sync_seconds_ = 0;
  CommunicationCost communication_;
};

}  // namespace distopt::local
