// One centralized training run of the study (stages 2 to 4): any of the four optimizers, any batch,
// one of two schedules, a seed, early stopping; resumable through a RunFolder, and described by a
// result row with the same columns whichever stage ran it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/findings.hpp"
#include "common/runs.hpp"
#include "common/sinks.hpp"
#include "common/study.hpp"
#include "common/work.hpp"
#include "distopt/local/communicator.hpp"
#include "distopt/core/error.hpp"
#include "distopt/data/cache.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/lamb.hpp"
#include "distopt/optim/lars.hpp"
#include "distopt/optim/schedule.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/metrics.hpp"
#include "distopt/train/run.hpp"

namespace distopt::study {

/// The learning-rate schedule of a run: cosine annealing to 0 over the run (stages 2 and 3), or the
/// large-batch schedule (stage 4): linear warmup over 10% of the steps from a tenth of the peak
/// (Goyal et al. 2017), then polynomial decay with power 2 to 0 (You, Gitman, Ginsburg 2017).
enum class ScheduleKind { constant, cosine, warmup_poly };

[[nodiscard]] inline std::string schedule_name(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::constant: return "constant";
    case ScheduleKind::cosine: return "cosine";
    case ScheduleKind::warmup_poly: return "warmup 10% + poly(2)";
  }
  return "?";
}

/// Warmup steps of the large-batch schedule for a run of `total` steps.
[[nodiscard]] inline std::int64_t warmup_steps(std::int64_t total) {
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::llround(0.1 * static_cast<double>(total))));
}

[[nodiscard]] inline optim::Schedule make_schedule(ScheduleKind kind, double lr, std::int64_t total) {
  switch (kind) {
    case ScheduleKind::constant: return optim::Constant{.lr = lr};
    case ScheduleKind::cosine: return optim::Cosine{.lr = lr, .t_max = total};
    case ScheduleKind::warmup_poly: {
      const std::int64_t warm = warmup_steps(total);
      return optim::warmup(warm, 0.1, optim::Polynomial{.lr = lr, .total_steps = std::max<std::int64_t>(1, total - warm), .power = 2.0});
    }
  }
  fail("make_schedule: unknown schedule");
}

/// What one centralized run is. `momentum` is SGDM's and LARS's momentum, AdamW's and LAMB's beta1.
struct CentralSpec {
  std::string id;         ///< unique within the stage: its folder name and the `run` label of its records
  std::string optimizer;  ///< "sgdm", "adamw", "lars" or "lamb"
  double lr = 0;
  double weight_decay = 0;
  double momentum = 0.9;
  std::size_t batch_size = 64;
  std::size_t epochs = 1;
  std::size_t patience = 0;  ///< early stopping on validation accuracy (0: none)
  ScheduleKind schedule = ScheduleKind::cosine;
  std::uint64_t seed = 0;
};

/// The display name of an optimizer: "SGDM", "AdamW", "LARS", "LAMB".
[[nodiscard]] inline std::string optimizer_label(const std::string& optimizer) {
  if (optimizer == "sgdm") return "SGDM";
  if (optimizer == "adamw") return "AdamW";
  if (optimizer == "lars") return "LARS";
  if (optimizer == "lamb") return "LAMB";
  return optimizer;
}

/// The data and the output every centralized run of a stage shares.
struct CentralRuns {
  const Config& config;
  const data::PreparedData& prepared;
  std::filesystem::path work;     ///< <work>/<stage>: one folder per run
  std::filesystem::path metrics;  ///< the stage's metrics.jsonl: every run's records, appended when the run ends
  const data::LabelledImages* train_set = nullptr;  ///< default: prepared.train

  [[nodiscard]] const data::LabelledImages& train() const { return train_set ? *train_set : prepared.train; }

  [[nodiscard]] std::size_t steps_per_epoch(std::size_t batch) const { return (train().size() + batch - 1) / batch; }

  /// Micro-batches per step: batch_size // micro_batch above the scale's micro-batch (the study's rule).
  [[nodiscard]] std::size_t accumulation(std::size_t batch) const {
    return batch > config.scale.micro_batch ? (batch + config.scale.micro_batch - 1) / config.scale.micro_batch : 1;
  }

  /// Everything the run depends on.
  [[nodiscard]] std::string stamp(const CentralSpec& s) const {
    return message("central run\n", config.data_label(), "\nmode ", config.mode(), "\nn_train ", train().size(), "\nvalidation ",
                   prepared.validation.size(), "\noptimizer ", s.optimizer, "\nlr ", io::format_number(s.lr, 17), "\nweight_decay ",
                   io::format_number(s.weight_decay, 17), "\nmomentum ", io::format_number(s.momentum, 17), "\nbatch ",
                   s.batch_size, "\nmicro_batch ", config.scale.micro_batch, "\nepochs ", s.epochs, "\npatience ", s.patience,
                   "\nschedule ", schedule_name(s.schedule), "\nseed ", s.seed, "\naugmentation ",
                   augmentation_label(augmentation_for(prepared.info)), "\n");
  }

  /// The run folder of `spec`.
  [[nodiscard]] RunFolder folder(const CentralSpec& spec) const { return RunFolder(work / spec.id, stamp(spec)); }

  /// The finished run of `spec`'s configuration, when its folder holds one.
  [[nodiscard]] std::optional<Row> finished(const CentralSpec& spec) const {
    auto done = folder(spec).finished();
    if (done) std::printf("  %-28s done before: test %s%%\n", spec.id.c_str(), percent(done->number("test_accuracy")).c_str());
    return done;
  }

  /// The rows of `specs` in their order on every rank: each finished run reused, the others
  /// trained (a cut one resumed) by the job's rank groups (study::Work), one group each.
  [[nodiscard]] std::vector<Row> run_all(Work& work_list, const std::vector<CentralSpec>& specs) const {
    std::vector<Job> jobs;
    for (const auto& s : specs) jobs.push_back({work / s.id});
    return work_list.run(
        jobs, [&](std::size_t i) { return finished(specs[i]); },
        [&](std::size_t i, GroupComm& group) {
          // A centralized run takes one process: the group's other ranks wait for it.
          return group.rank() == 0 ? train(specs[i]) : Row();
        },
        metrics);
  }

  /// Trains `spec` in its folder (resuming a cut run of the same configuration) and returns its
  /// result row; its records go to the folder's metrics.jsonl.
  [[nodiscard]] Row train(const CentralSpec& spec) const {
    const RunFolder slot = folder(spec);
    const bool resume = slot.claim() == RunFolder::Start::resume;
    const std::size_t per_epoch = steps_per_epoch(spec.batch_size);
    const auto total = static_cast<std::int64_t>(per_epoch * spec.epochs);
    std::printf("  %-28s %s lr %s wd %s, batch %zu (%zu micro-batch(es)), %zu epochs of %zu steps, %s, seed %llu%s\n",
                spec.id.c_str(), optimizer_label(spec.optimizer).c_str(), io::format_number(spec.lr, 4).c_str(),
                io::format_number(spec.weight_decay, 4).c_str(), spec.batch_size, accumulation(spec.batch_size), spec.epochs,
                per_epoch, schedule_name(spec.schedule).c_str(), static_cast<unsigned long long>(spec.seed),
                resume ? " (resuming)" : "");
    std::fflush(stdout);

    train::Metrics records;
    records.add(std::make_shared<RunLabel>(spec.id, std::make_shared<train::JsonLinesSink>(slot.path() / "metrics.jsonl", true)));
    records.add(std::make_shared<EpochLines>(spec.id, spec.epochs));
    const train::RunOptions options{
        .epochs = spec.epochs,
        .batch_size = spec.batch_size,
        .step = {.micro_batch_cap = config.scale.micro_batch, .log_every = 0},
        .patience = spec.patience,
        .seed = spec.seed,
        .augmentation = augmentation_for(prepared.info),
        .description = {.optimizer = spec.optimizer, .lr = spec.lr, .weight_decay = spec.weight_decay},
        .out = slot.path(),
        .keep_last = 1,
        .keep_best = false,  // the best weights travel inside every checkpoint
        .resume = resume,
        .overwrite = !resume,
    };
    const train::RunData sets{&train(), &prepared.validation, &prepared.test, data::Normalizer(prepared.stats)};
    const optim::Schedule schedule = make_schedule(spec.schedule, spec.lr, total);
    nn::LeNet5<float> model(model_options(prepared.info, spec.seed));
    const auto& params = model.parameters();
    train::RunResult r;
    if (spec.optimizer == "sgdm") {
      optim::Sgdm o(params, {.lr = spec.lr, .momentum = spec.momentum, .weight_decay = spec.weight_decay});
      r = train::run_training(model, o, schedule, sets, options, records);
    } else if (spec.optimizer == "adamw") {
      optim::AdamW o(params, {.lr = spec.lr, .beta1 = spec.momentum, .weight_decay = spec.weight_decay});
      r = train::run_training(model, o, schedule, sets, options, records);
    } else if (spec.optimizer == "lars") {
      optim::Lars o(params, {.lr = spec.lr, .momentum = spec.momentum, .weight_decay = spec.weight_decay});
      r = train::run_training(model, o, schedule, sets, options, records);
    } else {
      require(spec.optimizer == "lamb", "CentralRuns: unknown optimizer '", spec.optimizer, "'");
      optim::Lamb o(params, {.lr = spec.lr, .beta1 = spec.momentum, .weight_decay = spec.weight_decay});
      r = train::run_training(model, o, schedule, sets, options, records);
    }
    stop_if_signalled(r.status);
    double train_seconds = 0;
    for (const auto& h : r.history) train_seconds += h.seconds;
    const double images = static_cast<double>(train().size() * r.epochs_done);
    Row row = {{"run", spec.id},
               {"optimizer", spec.optimizer},
               {"lr", exact(spec.lr)},
               {"weight_decay", exact(spec.weight_decay)},
               {"momentum", exact(spec.momentum)},
               {"batch_size", message(spec.batch_size)},
               {"accumulation", message(accumulation(spec.batch_size))},
               {"schedule", schedule_name(spec.schedule)},
               {"seed", message(spec.seed)},
               {"n_train", message(train().size())},
               {"epochs_planned", message(spec.epochs)},
               {"patience", message(spec.patience)},
               status_cell(r.status),
               {"epochs", message(r.epochs_done)},
               {"steps", message(r.steps)},
               {"best_epoch", message(r.best_epoch)},
               {"best_validation_accuracy", exact(r.best_validation_accuracy)},
               {"final_train_accuracy", r.history.empty() ? "nan" : exact(r.history.back().train_accuracy)},
               {"test_accuracy", exact(r.test.accuracy)},
               {"test_top5", exact(r.test.top5)},
               {"test_loss", exact(r.test.loss)},
               {"train_seconds", io::format_number(train_seconds, 6)},
               {"images_per_second", io::format_number(train_seconds > 0 ? images / train_seconds : std::nan(""), 6)},
               {"message", r.message}};
    slot.finish(row);
    return row;
  }
};

/// True when a result row finished its schedule or stopped early (not diverged).
[[nodiscard]] inline bool ok(const Row& row) {
  return train::finished(status_of(row));
}

/// The test accuracy of a row, NaN unless it is ok (a diverged run has no accuracy to average).
[[nodiscard]] inline double test_accuracy(const Row& row) { return ok(row) ? row.number("test_accuracy") : std::nan(""); }

/// "88.1 (87.9-88.3, 2 seeds)": the test accuracy of `rows` (one per seed) over the seeds.
[[nodiscard]] inline std::string test_evidence_summary(const std::vector<Row>& rows) {
  Evidence e{"", {}};
  for (const Row& r : rows) e.values.push_back(test_accuracy(r));
  return e.summary();
}

/// A tuned setting of one optimizer and where it came from.
struct TunedSetting {
  double lr = 0;
  double weight_decay = 0;
  double momentum = 0.9;
  std::string source{};
};

/// The study's defaults, used when stage 3 has not run for this configuration: Hsu et al.'s SGDM
/// (lr 0.01, weight decay 4e-4) and AdamW at lr 1e-3 with the same decay.
[[nodiscard]] inline TunedSetting default_setting(const std::string& optimizer) {
  if (optimizer == "adamw") return {.lr = 1e-3, .weight_decay = 4e-4, .momentum = 0.9, .source = "the study's default AdamW"};
  return {.lr = 0.01, .weight_decay = 4e-4, .momentum = 0.9, .source = "the study's default SGDM (Hsu et al. 2020)"};
}

/// Stage 3's best setting of `optimizer`: the search row (column `phase` = "search") with the
/// highest best_validation_accuracy in <results>/stage3_centralized/summary.csv, when stage 3
/// completed for this configuration; else the default, with a note on stdout saying why. Only
/// search rows compete: they all ran the same epochs, and a longer retrain would win by length.
[[nodiscard]] inline TunedSetting stage3_best(const Config& config, const std::string& optimizer) {
  const TunedSetting fallback = default_setting(optimizer);
  const std::filesystem::path file = config.results / "stage3_centralized" / "summary.csv";
  if (!std::filesystem::exists(file) || !stage_finished(config, "stage3_centralized")) {
    std::printf("note: stage 3 has not completed for this configuration; %s uses %s\n", optimizer_label(optimizer).c_str(),
                fallback.source.c_str());
    return fallback;
  }
  const Row* best = nullptr;
  const std::vector<Row> rows = read_csv(file);
  for (const Row& row : rows) {
    if (row.cell("optimizer") != optimizer || row.cell("phase") != "search" || !ok(row)) continue;
    const double score = row.number("best_validation_accuracy");
    if (std::isfinite(score) && (best == nullptr || score > best->number("best_validation_accuracy"))) best = &row;
  }
  if (best == nullptr) {
    std::printf("note: %s has no finished %s search row; using %s\n", file.c_str(), optimizer.c_str(), fallback.source.c_str());
    return fallback;
  }
  return {.lr = best->number("lr"),
          .weight_decay = best->number("weight_decay"),
          .momentum = best->number("momentum"),
          .source = message("stage 3's search (best validation accuracy ", percent(best->number("best_validation_accuracy")), "%)")};
}

/// Rank 0's `stage3_best` on every rank of `comm` (the others may not see rank 0's results).
template <class Comm>
[[nodiscard]] TunedSetting stage3_best(const Config& config, const std::string& optimizer, Comm& comm) {
  TunedSetting best;
  if (comm.rank() == 0) best = stage3_best(config, optimizer);
  double values[3] = {best.lr, best.weight_decay, best.momentum};
  local::broadcast_value(comm, values);
  local::broadcast_value(comm, best.source);
  best.lr = values[0], best.weight_decay = values[1], best.momentum = values[2];
  return best;
}

}  // namespace distopt::study
