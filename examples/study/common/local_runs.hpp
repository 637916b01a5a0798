// The runs stages 5 (LocalSGD) and 6 (SlowMo) share: the inner SGDM setting taken from stage 3,
// the inner learning-rate rule, and one LocalTrainer run per folder, resumable through
// study::RunFolder. Stage 6 finds stage 5's runs by their stamps, so both build them here.
//
// Every run of both stages, the one-worker batch-B run included, is a LocalTrainer run tested the
// same way: the final global model on the test set. run_training's best-weights rule is never
// mixed in, so that a difference between two methods is not a difference between test rules.
//
// The runs of a stage are one work list (study::Work): in one process one after another, under
// mpirun over the job's rank groups. Rank 0 decides what is finished (lookup); a group trains the
// rest, its ranks each hosting a share of the workers, and its first rank writes the run folder.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/central_runs.hpp"
#include "common/findings.hpp"
#include "common/runs.hpp"
#include "common/sinks.hpp"
#include "common/study.hpp"
#include "common/work.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/data/cache.hpp"
#include "distopt/data/shards.hpp"
#include "distopt/local/communicator.hpp"
#include "distopt/local/compression.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/local/outer.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/schedule.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/metrics.hpp"
#include "distopt/train/local_run.hpp"
#include "distopt/train/run.hpp"
#include "distopt/train/status.hpp"

namespace distopt::study {

/// The images per step of one worker, as in Hsu et al. 2020 (the course's batch B).
inline constexpr std::size_t local_batch_size = 64;

/// The inner optimizer of the local runs: SGDM as in Hsu et al. 2020, unless stage 3 found better.
struct SgdmSetting {
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 4e-4;
  std::string source = "the study's default (Hsu et al. 2020)";
};

/// Stage 3's best SGDM setting (study::stage3_best: its search row of the best validation
/// accuracy, or the study's default when stage 3 has not finished for this configuration).
[[nodiscard]] inline SgdmSetting stage3_best_sgdm(const Config& config) {
  const TunedSetting best = stage3_best(config, "sgdm");
  return {.lr = best.lr, .momentum = best.momentum, .weight_decay = best.weight_decay, .source = best.source};
}

/// Rank 0's `stage3_best_sgdm` on every rank of `comm` (the others may not see rank 0's results).
template <class Comm>
[[nodiscard]] SgdmSetting stage3_best_sgdm(const Config& config, Comm& comm) {
  const TunedSetting best = stage3_best(config, "sgdm", comm);
  return {.lr = best.lr, .momentum = best.momentum, .weight_decay = best.weight_decay, .source = best.source};
}

/// "reset", "maintain" or "average".
[[nodiscard]] inline std::string buffers_name(local::InnerBuffers b) {
  switch (b) {
    case local::InnerBuffers::reset: return "reset";
    case local::InnerBuffers::maintain: return "maintain";
    case local::InnerBuffers::average: return "average";
  }
  return "?";
}

/// The inner learning rate of a run with K workers. `scaled`: K x lr_B, the linear scaling rule
/// (Goyal et al. 2017) for the K x B samples a round's step averages over, with a linear warmup
/// because a K-times larger lr from the first step is what that rule warns against; `unscaled`:
/// lr_B as tuned for one worker at batch B, no warmup.
enum class LrRule { scaled, unscaled };

[[nodiscard]] inline std::string lr_rule_name(LrRule r) { return r == LrRule::scaled ? "scaled" : "unscaled"; }

/// The two lines stages 5 and 6 open with: the data and model, and the inner optimizer with its
/// source and lr rule.
inline void print_local_setup(const data::PreparedData& prepared, const SgdmSetting& inner, LrRule rule) {
  std::printf("data: %zu train, %zu validation, %zu test images; model %s\n", prepared.train.size(), prepared.validation.size(),
              prepared.test.size(), model_label(prepared.info).c_str());
  std::printf("inner optimizer: SGDM lr %s momentum %s weight decay %s, from %s; lr rule %s\n", exact(inner.lr).c_str(),
              exact(inner.momentum).c_str(), exact(inner.weight_decay).c_str(), inner.source.c_str(), lr_rule_name(rule).c_str());
}

[[nodiscard]] inline LrRule parse_lr_rule(const std::string& text) {
  require(text == "scaled" || text == "unscaled", "--local-lr must be 'scaled' or 'unscaled', got '", text, "'");
  return text == "scaled" ? LrRule::scaled : LrRule::unscaled;
}

/// The fraction of a run's steps the scaled rule warms up over, and the factor it starts from.
inline constexpr double warmup_fraction = 0.1;
inline constexpr double warmup_start = 0.1;

/// What the rule means, for tables.
[[nodiscard]] inline std::string lr_rule_label(LrRule r) {
  if (r == LrRule::scaled)
    return "scaled: K x lr_B (linear scaling, Goyal et al. 2017), linear warmup over the first 10% of the run's steps from "
           "0.1x, then cosine to 0 over the remaining steps";
  return "unscaled: lr_B whatever K, no warmup, cosine to 0 over the run's steps";
}

/// DiLoCo's outer step (Douillard et al. 2023): Nesterov SGD on the pseudo-gradient.
struct DilocoOptions {
  double lr = 0.7;
  double momentum = 0.9;
};

/// What one local run is. The stamp is made of these (and the stage's shared settings), never of
/// a role: the same run serves as a grid cell, a compared cell or a stage-6 reference.
struct LocalSpec {
  std::string id;  ///< its folder name and the `run` label of its records
  std::size_t k = 1;
  std::size_t h = 1;
  std::uint64_t seed = 0;
  LrRule rule = LrRule::scaled;
  /// Post-local SGD (Lin et al. 2020): average after every step for the first half of the run's
  /// steps, then every H.
  bool post_local = false;
  std::optional<local::SlowMoOptions> slowmo{};  ///< none: LocalSGD's plain average
  local::InnerBuffers buffers = local::InnerBuffers::maintain;
  /// DiLoCo: the inner optimizer is AdamW (LocalRuns::adamw) and the outer step Nesterov SGD.
  std::optional<DilocoOptions> diloco{};
  local::Compression compression{};
  /// Test accuracy, steps, rounds and compute time after every epoch (stage 7's time-to-accuracy).
  bool curve = false;
  /// Fewer planned rounds than this: not run (a cell that barely communicates says nothing about
  /// periodic averaging). Not part of the stamp: it decides whether to run, not what runs.
  std::size_t min_rounds = 0;
};

/// The outer step of a spec, for stamps and tables.
[[nodiscard]] inline std::string outer_name(const LocalSpec& s) {
  if (s.diloco) return message("diloco lr=", exact(s.diloco->lr), " momentum=", exact(s.diloco->momentum), " nesterov");
  if (!s.slowmo) return "localsgd";
  return message("slowmo alpha=", exact(s.slowmo->alpha), " beta=", exact(s.slowmo->beta));
}

/// A local run of a stage's work list: its spec, its folder, and other stages' folders where the
/// same run may have finished already (stage 6 reuses stage 5's).
struct LocalJob {
  LocalSpec spec;
  std::filesystem::path folder;
  std::vector<std::filesystem::path> earlier{};
};

/// The step counts a run will take, known once its trainer has sharded the data.
struct LocalPlan {
  std::int64_t steps = 0;                    ///< per worker, the run's global steps
  std::optional<std::int64_t> switch_step{};  ///< post-local SGD's
  std::int64_t warmup = 0;                   ///< steps of linear warmup (scaled rule)
  std::int64_t rounds = 0;
  double peak_lr = 0;
};

[[nodiscard]] inline LocalPlan plan_run(const LocalSpec& s, double lr_b, std::int64_t steps_per_epoch, std::size_t epochs) {
  LocalPlan p;
  p.steps = static_cast<std::int64_t>(epochs) * steps_per_epoch;
  const auto h = static_cast<std::int64_t>(s.h);
  if (s.post_local) p.switch_step = p.steps / 2;
  const std::int64_t every_step = p.switch_step.value_or(0);
  p.rounds = every_step + (p.steps - every_step + h - 1) / h;
  p.peak_lr = s.rule == LrRule::scaled ? static_cast<double>(s.k) * lr_b : lr_b;
  if (s.rule == LrRule::scaled)
    p.warmup = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::llround(warmup_fraction * static_cast<double>(p.steps))));
  return p;
}

[[nodiscard]] inline optim::Schedule make_local_schedule(const LocalPlan& p) {
  if (p.warmup == 0) return optim::Cosine{.lr = p.peak_lr, .t_max = std::max<std::int64_t>(1, p.steps)};
  return optim::warmup(p.warmup, warmup_start, optim::Cosine{.lr = p.peak_lr, .t_max = std::max<std::int64_t>(1, p.steps - p.warmup)});
}

/// The test accuracy of a finished local run, NaN when it did not complete (a diverged run has
/// no accuracy to average, and a skipped cell none at all).
[[nodiscard]] inline double completed_test_accuracy(const Row& r) {
  return has_status(r, train::Status::completed) ? r.number("test_accuracy") : std::nan("");
}

/// The test accuracies of `rows` (one per seed), as a finding's evidence.
[[nodiscard]] inline Evidence test_evidence(const std::string& cells, const std::vector<Row>& rows) {
  Evidence e{cells, {}};
  for (const Row& r : rows) e.values.push_back(completed_test_accuracy(r));
  return e;
}

/// "88.1 (87.9-88.3, 2 seeds)" of `column` over `rows` (completed runs only).
[[nodiscard]] inline std::string over_seeds(const std::vector<Row>& rows, const std::string& column) {
  Evidence e;
  for (const Row& r : rows) e.values.push_back(has_status(r, train::Status::completed) ? r.number(column) : std::nan(""));
  return e.summary();
}

/// Whether and what `rows` communicated: their rounds ("a-b" when the seeds differ), or "none"
/// for one worker (its "rounds" average a single model with itself and send nothing).
[[nodiscard]] inline std::string rounds_cell(const std::vector<Row>& rows) {
  if (rows.empty()) return "";
  if (rows.front().cell("K") == "1") return "none (1 worker)";
  double low = std::numeric_limits<double>::infinity(), high = -low;
  for (const Row& r : rows) low = std::min(low, r.number("rounds")), high = std::max(high, r.number("rounds"));
  if (!std::isfinite(low)) return "";
  return low == high ? io::format_number(low, 12) : message(io::format_number(low, 12), "-", io::format_number(high, 12));
}

/// The columns of every local run's result.csv (and the first of the stages' summaries).
inline const std::vector<std::string> local_result_header = {
    "run", "K", "H", "seed", "outer", "alpha", "beta", "inner_buffers", "lr_rule", "peak_lr", "warmup_steps", "switch_step",
    "lr", "momentum", "weight_decay", "batch_size", "status", "epochs", "steps", "rounds", "planned_rounds",
    "validation_accuracy", "best_validation_accuracy", "test_accuracy", "test_loss", "bytes_per_worker", "modelled_seconds",
    "sync_seconds", "allreduce_seconds", "ranks", "seconds", "message"};

/// The further columns of runs with a curve (stage 7): the inner optimizer, the compression, the
/// values one message carries, and per epoch (';'-separated) the test accuracy, the global steps,
/// the rounds and the compute seconds of one worker's step on one thread.
inline const std::vector<std::string> curve_header = {"inner", "compression", "values", "curve_test_accuracy", "curve_steps",
                                                      "curve_rounds", "step_seconds"};

/// After every epoch: the global model's test accuracy (rank 0), the steps and rounds so far, and
/// the compute time of one worker's step on one thread, from the epoch's training time less its
/// synchronisation (workers share the threads, `team` of them at once). Its lists are part of the
/// run's checkpoints, so a resumed run keeps its earlier points.
template <class Trainer>
class Curve : public train::Callback {
 public:
  Curve(Trainer& trainer, const data::LabelledImages& test, const data::Normalizer& normalizer, double team)
      : trainer_(&trainer), test_(&test), normalizer_(normalizer), team_(team) {}

  template <class S>
  bool end_epoch(S& state) {
    const double sync = trainer_->sync_seconds() - last_sync_;
    last_sync_ = trainer_->sync_seconds();
    const double epoch_seconds = state.progress.history.back().seconds;
    const auto steps = static_cast<double>(trainer_->step()) - (steps_.empty() ? 0.0 : steps_.back());
    const auto workers = static_cast<double>(trainer_->options().workers);
    step_seconds_.push_back(steps > 0 ? (epoch_seconds - sync) * team_ / (workers * steps) : std::nan(""));
    accuracy_.push_back(state.root ? train::evaluate(trainer_->global_model(), *test_, normalizer_, 1000).accuracy : std::nan(""));
    steps_.push_back(static_cast<double>(trainer_->step()));
    rounds_.push_back(static_cast<double>(trainer_->communication().rounds));
    return false;
  }
  template <class S>
  void save(Archive& archive, const S&) const {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      const std::vector<double>& values = this->*lists_[i];
      archive.put<double>(message("curve.", names_[i]), std::span<const double>(values), {static_cast<std::ptrdiff_t>(values.size())});
    }
  }
  template <class S>
  void load(const Archive& archive, S&) {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      const std::string field = message("curve.", names_[i]);
      require(archive.contains(field), "checkpoint '", archive.source(), "': field '", field, "' is missing");
      const auto v = archive.get<double>(field);
      (this->*lists_[i]).assign(v.begin(), v.end());
    }
  }

  /// The curve's cells of a result row.
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> cells() const {
    std::vector<double> finite;
    for (const double v : step_seconds_)
      if (std::isfinite(v)) finite.push_back(v);
    std::sort(finite.begin(), finite.end());
    // The median epoch: the first epoch pays for warm caches and page faults.
    const double step = finite.empty() ? std::nan("") : finite[finite.size() / 2];
    return {{"curve_test_accuracy", join_values(accuracy_)}, {"curve_steps", join_values(steps_)}, {"curve_rounds", join_values(rounds_)},
            {"step_seconds", exact(step)}};
  }

 private:
  Trainer* trainer_;
  const data::LabelledImages* test_;
  data::Normalizer normalizer_;
  double team_;
  double last_sync_ = 0;
  std::vector<double> accuracy_, steps_, rounds_, step_seconds_;

  // The lists a checkpoint keeps, under curve.<name>.
  static constexpr std::array<const char*, 4> names_ = {"test_accuracy", "steps", "rounds", "step_seconds"};
  static constexpr std::array<std::vector<double> Curve::*, 4> lists_ = {&Curve::accuracy_, &Curve::steps_, &Curve::rounds_,
                                                                          &Curve::step_seconds_};
};

/// What every local run of a stage shares.
struct LocalRuns {
  const Config& config;
  const data::PreparedData& prepared;
  data::Normalizer normalizer;
  SgdmSetting inner;
  std::size_t epochs;
  std::filesystem::path metrics;  ///< the stage's metrics.jsonl: every run's records, appended when the run ends
  int width = 16;                            ///< of the run id in progress lines
  TunedSetting adamw = default_setting("adamw");  ///< DiLoCo's inner optimizer

  /// The stamp of a run: everything it depends on.
  [[nodiscard]] std::string stamp(const LocalSpec& s) const {
    return message("local run\nmode ", config.mode(), "\ndata ", config.data_label(), "\nn_train ", prepared.train.size(),
                   "\nvalidation ", prepared.validation.size(), "\nmodel ", model_label(prepared.info), "\naugmentation ",
                   augmentation_label(augmentation_for(prepared.info)), "\nepochs ", epochs, "\nbatch_size ", local_batch_size,
                   "\ninner sgdm lr ", exact(inner.lr), " momentum ", exact(inner.momentum), " weight_decay ",
                   exact(inner.weight_decay), "\nlr_rule ", lr_rule_name(s.rule), "\nschedule ",
                   s.rule == LrRule::scaled ? "warmup 10% from 0.1x + cosine" : "cosine", "\nK ", s.k, "\nH ", s.h,
                   "\nswitch ", s.post_local ? "half of the steps" : "none", "\nouter ", outer_name(s), "\ninner_buffers ",
                   buffers_name(s.buffers), "\nseed ", s.seed, "\nshards iid\ntest final model\n",
                   // Only what the runs of stages 5 and 6 do not have, so their stamps stay as they were.
                   s.diloco ? message("inner adamw lr ", exact(adamw.lr), " weight_decay ", exact(adamw.weight_decay), "\n") : "",
                   s.compression.gathers() ? message("compression ", s.compression.label(), "\n") : "",
                   s.curve ? "curve per epoch\n" : "");
  }
  /// The run's records labelled into its folder's metrics.jsonl, and its epochs on stdout.
  [[nodiscard]] train::Metrics records(const std::string& run, const std::filesystem::path& folder) const {
    train::Metrics m;
    m.add(std::make_shared<RunLabel>(run, std::make_shared<train::JsonLinesSink>(folder / "metrics.jsonl", true)));
    m.add(std::make_shared<EpochLines>(run, epochs));
    return m;
  }
  /// The cells every row of `s` has, whether it ran or not.
  [[nodiscard]] Row spec_columns(const LocalSpec& s, const LocalPlan& p) const {
    Row row{{"run", s.id},
            {"K", message(s.k)},
            {"H", message(s.h)},
            {"seed", message(s.seed)},
            {"outer", s.slowmo ? "slowmo" : "localsgd"},
            {"alpha", s.slowmo ? exact(s.slowmo->alpha) : ""},
            {"beta", s.slowmo ? exact(s.slowmo->beta) : ""},
            {"inner_buffers", buffers_name(s.buffers)},
            {"lr_rule", lr_rule_name(s.rule)},
            {"peak_lr", exact(p.peak_lr)},
            {"warmup_steps", message(p.warmup)},
            {"switch_step", p.switch_step ? message(*p.switch_step) : ""},
            {"lr", exact(inner.lr)},
            {"momentum", exact(inner.momentum)},
            {"weight_decay", exact(inner.weight_decay)},
            {"batch_size", message(local_batch_size)},
            {"planned_rounds", message(p.rounds)}};
    if (s.diloco)
      row.set({{"outer", "diloco"}, {"alpha", exact(s.diloco->lr)}, {"beta", exact(s.diloco->momentum)}, {"lr", exact(adamw.lr)},
               {"momentum", ""}, {"weight_decay", exact(adamw.weight_decay)}});
    if (s.curve) row.set({{"inner", s.diloco ? "adamw" : "sgdm"}, {"compression", s.compression.label()}});
    return row;
  }
  /// The columns of `s`'s result.csv.
  [[nodiscard]] static std::vector<std::string> header_of(const LocalSpec& s) {
    std::vector<std::string> h = local_result_header;
    if (s.curve) h.insert(h.end(), curve_header.begin(), curve_header.end());
    return h;
  }

  /// The row of `job` without training: the finished run of the same stamp in one of its
  /// `earlier` folders (another stage's) or in its own folder, with a `source` cell saying where;
  /// or, for a spec with fewer planned rounds than its min_rounds, a row of status "skipped".
  /// Nothing when the run must train.
  [[nodiscard]] std::optional<Row> lookup(const LocalJob& job) const {
    const LocalSpec& s = job.spec;
    const std::string text = stamp(s);
    for (const auto& other : job.earlier)
      if (auto done = RunFolder(other, text).finished()) {
        std::printf("  %-*s found in %s: test acc %s%%\n", width, s.id.c_str(), other.c_str(),
                    percent(done->number("test_accuracy")).c_str());
        (*done)["source"] = other.string();
        return done;
      }
    if (auto done = RunFolder(job.folder, text).finished()) {
      std::printf("  %-*s done before: test acc %s%%\n", width, s.id.c_str(), percent(done->number("test_accuracy")).c_str());
      (*done)["source"] = job.folder.string();
      return done;
    }
    const LocalPlan plan = plan_run(s, s.diloco ? adamw.lr : inner.lr, shard(s).first, epochs);
    if (plan.rounds >= static_cast<std::int64_t>(s.min_rounds)) return std::nullopt;
    std::printf("  %-*s skipped: %lld rounds < %zu\n", width, s.id.c_str(), static_cast<long long>(plan.rounds), s.min_rounds);
    Row row = spec_columns(s, plan);
    row.set({status_cell(train::Status::skipped),
             {"steps", message(plan.steps)},
             {"source", "not run"},
             {"message", message(plan.rounds, " rounds < ", s.min_rounds)}});
    return row;
  }

  /// The rows of `jobs` in their order on every rank: each looked up (`lookup`), or trained by
  /// one of the job's rank groups (study::Work) with its workers spread over the group's ranks.
  /// A one-worker run cannot be spread: it trains in the group's first process alone.
  [[nodiscard]] std::vector<Row> run_all(Work& work, const std::vector<LocalJob>& jobs) const {
    std::vector<Job> list;
    for (const auto& j : jobs) list.push_back({j.folder});
    return work.run(
        list, [&](std::size_t i) { return lookup(jobs[i]); },
        [&](std::size_t i, GroupComm& group) {
          if (jobs[i].spec.k > 1 && group.ranks() > 1) return train(jobs[i].spec, jobs[i].folder, group);
          local::InProcess alone;
          return group.rank() == 0 ? train(jobs[i].spec, jobs[i].folder, alone) : Row();
        },
        metrics);
  }

  /// Trains `s` in `folder` (resuming a cut run of the same stamp), collectively over `comm`:
  /// every rank trains its share of the workers, rank 0 writes the folder; its row holds the results.
  template <local::Communicator Comm>
  [[nodiscard]] Row train(const LocalSpec& s, const std::filesystem::path& folder, Comm& comm) const {
    const RunFolder slot(folder, stamp(s));
    auto sharded = shard(s);
    const std::int64_t steps_per_epoch = sharded.first;
    data::Shards shards = std::move(sharded.second);
    const LocalPlan plan = plan_run(s, s.diloco ? adamw.lr : inner.lr, steps_per_epoch, epochs);
    Row row = spec_columns(s, plan);
    nn::LeNet5<float> model(model_options(prepared.info, s.seed));
    const optim::Sgdm optimizer(model.parameters(), {.lr = inner.lr, .momentum = inner.momentum, .weight_decay = inner.weight_decay});
    const local::LocalOptions options{.workers = s.k,
                                      .local_steps = s.h,
                                      .batch_size = local_batch_size,
                                      .switch_step = plan.switch_step,
                                      .inner_buffers = s.buffers,
                                      .seed = s.seed,
                                      .augmentation = augmentation_for(prepared.info),
                                      .threads = config.threads,
                                      .compression = s.compression};
    const auto train_with = [&](const auto& inner_optimizer, auto outer) {
      local::LocalTrainer trainer(model, inner_optimizer, std::move(outer), prepared.train, normalizer, options, std::move(shards), comm);
      require(trainer.steps_per_epoch() == steps_per_epoch, "run ", s.id, ": planned ", steps_per_epoch,
              " steps per epoch, the trainer takes ", trainer.steps_per_epoch());
      return train_and_report(s, slot, plan, std::move(row), trainer, comm);
    };
    if (s.diloco)
      return train_with(optim::AdamW(model.parameters(), {.lr = adamw.lr, .weight_decay = adamw.weight_decay}),
                        local::diloco_outer(model.parameters(), s.diloco->lr, s.diloco->momentum));
    if (s.slowmo) return train_with(optimizer, local::SlowMo(*s.slowmo));
    return train_with(optimizer, local::LocalSgd{});
  }

 private:
  /// The shards of `s` as LocalTrainer draws them, and the steps per epoch they give: they fix
  /// the rounds a cell would get, so a cell too sparse to run is known before it costs anything.
  [[nodiscard]] std::pair<std::int64_t, data::Shards> shard(const LocalSpec& s) const {
    data::Shards shards = data::iid_shards(prepared.train.fine, s.k, s.seed);
    std::size_t largest = 0;
    for (const auto& part : shards) largest = std::max(largest, part.size());
    return {static_cast<std::int64_t>((largest + local_batch_size - 1) / local_batch_size), std::move(shards)};
  }

  template <class Trainer, class Comm>
  [[nodiscard]] Row train_and_report(const LocalSpec& s, const RunFolder& slot, const LocalPlan& plan, Row row, Trainer& trainer,
                                     Comm& comm) const {
    const bool root = comm.rank() == 0;
    if (root) {
      const RunFolder::Start start = slot.claim();
      if (start == RunFolder::Start::replaced)
        std::printf("  %s holds another configuration's run: starting it again\n", slot.path().c_str());
      std::printf("  %-*s K=%zu H=%zu %s%s, %s lr %s, seed %llu, %lld steps, %lld rounds%s%s\n", width, s.id.c_str(), s.k, s.h,
                  outer_name(s).c_str(), s.post_local ? message(" post-local (switch at step ", *plan.switch_step, ")").c_str() : "",
                  lr_rule_name(s.rule).c_str(), exact(plan.peak_lr).c_str(), static_cast<unsigned long long>(s.seed),
                  static_cast<long long>(plan.steps), static_cast<long long>(plan.rounds),
                  comm.ranks() > 1 ? message(" (", comm.ranks(), " MPI ranks)").c_str() : "",
                  start == RunFolder::Start::resume ? " (resuming)" : "");
      std::fflush(stdout);
    }
    const int threads = config.threads > 0 ? config.threads : parallel::max_threads();
    Curve curve(trainer, prepared.test, normalizer, static_cast<double>(std::min<std::size_t>(static_cast<std::size_t>(threads), s.k)));
    const train::RunData sets{nullptr, &prepared.validation, &prepared.test, normalizer};
    const train::LocalRunOptions run_options{.epochs = epochs, .out = slot.path(), .resume = true};
    const train::Metrics sinks = root ? records(s.id, slot.path()) : train::Metrics();
    const train::RunResult result = s.curve ? train::run_local(trainer, make_local_schedule(plan), sets, run_options, sinks, curve)
                                            : train::run_local(trainer, make_local_schedule(plan), sets, run_options, sinks);
    stop_if_signalled(result.status);
    const local::CommunicationCost& communication = trainer.communication();
    row.set({status_cell(result.status),
             {"epochs", message(result.epochs_done)},
             {"steps", message(result.steps)},
             {"rounds", message(communication.rounds)},
             {"validation_accuracy", exact(result.history.empty() ? std::nan("") : result.history.back().validation_accuracy)},
             {"best_validation_accuracy", exact(result.best_validation_accuracy)},
             {"test_accuracy", exact(result.test.accuracy)},
             {"test_loss", exact(result.test.loss)},
             {"bytes_per_worker", exact(communication.bytes_per_worker)},
             {"modelled_seconds", exact(communication.modelled_seconds)},
             {"sync_seconds", exact(trainer.sync_seconds())},
             {"allreduce_seconds", exact(communication.allreduce_seconds)},
             {"ranks", message(comm.ranks())},
             {"seconds", io::format_number(result.seconds, 4)},
             {"message", result.message}});
    if (s.curve) {
      for (const auto& [name, value] : curve.cells()) row[name] = value;
      row["values"] = message(trainer.global_model().parameters().size());
    }
    if (root) slot.finish(header_of(s), row);
    row["source"] = "run here";
    return row;
  }
};

}  // namespace distopt::study
