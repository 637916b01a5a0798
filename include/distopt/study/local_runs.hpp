// The runs stages 5 (LocalSGD) and 6 (SlowMo) share: the inner SGDM setting taken from stage 3,
// one LocalTrainer run per folder and the centralized reference, all resumable through
// study::RunFolder. Stage 6 finds stage 5's runs by their stamps, so both must build them here.
//
// Both stages run in one process or as the ranks of an MPI job (started by mpirun): the runs take
// a communicator, every rank trains its share of the workers, and rank 0 alone reads and writes
// the study's files, taking every decision that depends on them (is a run finished? which setting
// did stage 3 find?) and broadcasting it, so all ranks reach the same collectives.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/data/cache.hpp"
#include "distopt/local/communicator.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/local/outer.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/optim/schedule.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/study/runs.hpp"
#include "distopt/study/sinks.hpp"
#include "distopt/study/study.hpp"
#include "distopt/train/metrics.hpp"
#include "distopt/train/run.hpp"

namespace distopt::study {

/// The images per step of one worker (and of the centralized run), as in Hsu et al. 2020.
inline constexpr std::size_t local_batch_size = 64;

/// A number in stamps and CSV cells: exact enough to tell settings apart.
[[nodiscard]] inline std::string exact(double v) { return train::format_number(v, 10); }

/// The inner optimizer of the local runs: SGDM as in Hsu et al. 2020, unless stage 3 found better.
struct SgdmSetting {
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 4e-4;
  std::string source = "the study's default (Hsu et al. 2020)";
};

/// Stage 3's best SGDM setting (by validation accuracy) from its summary.csv, when stage 3
/// completed for this configuration and the file names the columns needed; else the default,
/// with a note on stdout saying why.
[[nodiscard]] inline SgdmSetting stage3_best_sgdm(const Config& config) {
  SgdmSetting inner;
  const std::filesystem::path file = config.results / "stage3_centralized" / "summary.csv";
  if (!std::filesystem::exists(file)) return inner;
  if (!StageMarker(config, "stage3_centralized").done()) {
    std::printf("note: %s is not of this configuration (stage 3 not completed for it); using the default SGDM\n", file.c_str());
    return inner;
  }
  try {
    const std::vector<Row> rows = read_csv(file);
    const Row* best = nullptr;
    double best_score = -std::numeric_limits<double>::infinity();
    const auto first_number = [](const Row& row, std::initializer_list<const char*> names) {
      for (const char* name : names)
        if (const double v = row.number(name); !std::isnan(v)) return v;
      return std::nan("");
    };
    for (const Row& row : rows) {
      if (row.cell("optimizer") != "sgdm") continue;
      const std::string status = row.cell("status");
      if (!status.empty() && status != "completed" && status != "early_stopped") continue;
      const double score = first_number(row, {"best_validation_accuracy", "validation_accuracy"});
      const double lr = first_number(row, {"lr", "base_lr"});
      if (std::isnan(score) || std::isnan(lr) || std::isnan(row.number("weight_decay"))) continue;
      if (score > best_score) best_score = score, best = &row;
    }
    if (best == nullptr) {
      std::printf("note: %s has no completed SGDM row with lr, weight_decay and a validation accuracy; using the default SGDM\n",
                  file.c_str());
      return inner;
    }
    inner.lr = first_number(*best, {"lr", "base_lr"});
    inner.weight_decay = best->number("weight_decay");
    if (const double m = best->number("momentum"); !std::isnan(m)) inner.momentum = m;
    inner.source = message("stage 3's best SGDM (", file.string(), ", validation accuracy ", percent(best_score), "%)");
  } catch (const std::exception& e) {
    std::printf("note: cannot use %s (%s); using the default SGDM\n", file.c_str(), e.what());
  }
  return inner;
}

/// Rank 0's `stage3_best_sgdm` on every rank of `comm` (the others do not read the file).
template <class Comm>
[[nodiscard]] SgdmSetting stage3_best_sgdm(const Config& config, Comm& comm) {
  SgdmSetting inner;
  if (comm.rank() == 0) inner = stage3_best_sgdm(config);
  double values[3] = {inner.lr, inner.momentum, inner.weight_decay};
  local::broadcast_value(comm, values);
  local::broadcast_value(comm, inner.source);
  inner.lr = values[0], inner.momentum = values[1], inner.weight_decay = values[2];
  return inner;
}

/// The prepared data on every rank of `comm`: rank 0 prepares (and caches) it first, then the
/// others read the cache, or prepare their own where they do not share rank 0's file system.
template <class Comm>
[[nodiscard]] data::PreparedData prepare_data(const Config& config, Comm& comm) {
  if (comm.rank() != 0) comm.barrier();
  data::PreparedData prepared = prepare_data(config);
  if (comm.rank() == 0) comm.barrier();
  return prepared;
}

/// The finished run of `folder` as rank 0 finds it. Every rank of `comm` learns whether there is
/// one (the others get an empty row), so that all take the same branch to the next collective.
template <class Comm>
[[nodiscard]] std::optional<Row> finished_on_root(const RunFolder& folder, Comm& comm) {
  std::optional<Row> done;
  if (comm.rank() == 0) done = folder.finished();
  bool found = done.has_value();
  local::broadcast_value(comm, found);
  if (found && !done) done.emplace();
  return done;
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

/// The run description in the stamp of a LocalSGD run (stage 6 finds stage 5's runs by it).
[[nodiscard]] inline std::string localsgd_description(std::size_t k, std::size_t h) {
  return message("localsgd K=", k, " H=", h, " inner_buffers=maintain");
}

/// What every local run of a stage shares.
struct LocalRuns {
  const Config& config;
  const data::PreparedData& prepared;
  data::Normalizer normalizer;
  SgdmSetting inner;
  std::size_t epochs;
  std::shared_ptr<train::MetricSink> jsonl;  ///< the stage's metrics.jsonl (null on ranks other than 0)
  int width = 14;                            ///< of the run id in progress lines

  /// The stamp of a run: everything it depends on, `run` describing the method.
  [[nodiscard]] std::string stamp(const std::string& run) const {
    return message("mode ", config.mode(), "\ndata ", config.data_label(), "\nseed ", config.seed, "\nepochs ", epochs,
                   "\nbatch_size ", local_batch_size, "\ninner sgdm lr ", exact(inner.lr), " momentum ", exact(inner.momentum),
                   " weight_decay ", exact(inner.weight_decay), "\nschedule cosine\nrun ", run, "\n");
  }
  /// The run's records labelled into the stage's metrics.jsonl, and its epochs on stdout.
  [[nodiscard]] train::Metrics metrics(const std::string& run) const {
    train::Metrics m;
    if (jsonl == nullptr) return m;
    m.add(std::make_shared<RunLabel>(run, jsonl));
    m.add(std::make_shared<EpochLines>(run, epochs));
    return m;
  }
  /// The inner optimizer's cells of a result row.
  [[nodiscard]] Row inner_columns() const {
    return {{"lr", exact(inner.lr)},
            {"momentum", exact(inner.momentum)},
            {"weight_decay", exact(inner.weight_decay)},
            {"batch_size", message(local_batch_size)}};
  }
  /// The finished run of `folder`, said on stdout by rank 0 (see finished_on_root).
  template <class Comm>
  [[nodiscard]] std::optional<Row> reuse(const std::string& id, const RunFolder& folder, Comm& comm) const {
    auto done = finished_on_root(folder, comm);
    if (done && comm.rank() == 0)
      std::printf("  %-*s done before: test acc %s%%\n", width, id.c_str(), percent(done->number("test_accuracy")).c_str());
    return done;
  }
  /// Claims the folder, noting when it held another configuration's run.
  /// Returns " (resuming)" for a cut run of this configuration, else nothing.
  [[nodiscard]] std::string claim(const RunFolder& folder) const {
    const RunFolder::Start start = folder.claim();
    if (start == RunFolder::Start::replaced)
      std::printf("  %s holds another configuration's run: starting it again\n", folder.path().c_str());
    return start == RunFolder::Start::resume ? " (resuming)" : "";
  }

  /// One LocalTrainer run (LocalSGD or SlowMo, K workers, H local steps) in `folder`, or its
  /// earlier result there. Cosine over the run's global steps (SlowMo's gamma follows it). The
  /// row is not saved: the caller saves it with its stage's columns. Collective over `comm`:
  /// every rank calls it, and only rank 0's row holds the results (the others' are to be ignored).
  template <class Outer, local::Communicator Comm>
  [[nodiscard]] Row run_local(const std::string& id, const std::filesystem::path& folder, const std::string& description,
                              const std::string& headline, Outer outer, std::size_t k, std::size_t h,
                              local::InnerBuffers buffers, Comm& comm) const {
    const RunFolder run(folder, stamp(description));
    const bool root = comm.rank() == 0;
    if (auto done = reuse(id, run, comm)) return *done;
    if (root) {
      const std::string resuming = claim(run);
      std::printf("  %-*s %s%s%s\n", width, id.c_str(), headline.c_str(),
                  comm.ranks() > 1 ? message(" (", comm.ranks(), " MPI ranks)").c_str() : "", resuming.c_str());
      std::fflush(stdout);
    }

    nn::LeNet5<float> model({.seed = config.seed});
    const optim::Sgdm optimizer(model.parameters(), {.lr = inner.lr, .momentum = inner.momentum, .weight_decay = inner.weight_decay});
    local::LocalTrainer trainer(model, optimizer, std::move(outer), prepared.train, normalizer,
                                local::LocalOptions{.workers = k,
                                                    .local_steps = h,
                                                    .batch_size = local_batch_size,
                                                    .inner_buffers = buffers,
                                                    .seed = config.seed,
                                                    .threads = config.threads},
                                std::nullopt, comm);
    const std::int64_t total_steps = static_cast<std::int64_t>(epochs) * trainer.steps_per_epoch();
    const optim::Schedule schedule = optim::Cosine{.lr = inner.lr, .t_max = total_steps};
    typename decltype(trainer)::RunOptions options;
    options.epochs = epochs;
    options.out = folder;
    options.resume = true;
    const auto result = trainer.run(schedule, &prepared.validation, &prepared.test, normalizer, options, metrics(id));

    double best_validation = std::nan("");
    for (const auto& e : result.history)
      if (std::isnan(best_validation) || e.validation_accuracy > best_validation) best_validation = e.validation_accuracy;
    Row row = inner_columns();
    row.set({{"run", id},
             {"K", message(k)},
             {"H", message(h)},
             {"inner_buffers", buffers_name(buffers)},
             {"status", result.status},
             {"epochs", message(result.epochs_done)},
             {"steps", message(result.steps)},
             {"validation_accuracy", exact(result.history.empty() ? std::nan("") : result.history.back().validation_accuracy)},
             {"best_validation_accuracy", exact(best_validation)},
             {"test_accuracy", exact(result.test.accuracy)},
             {"test_loss", exact(result.test.loss)},
             {"rounds", message(result.communication.rounds)},
             {"bytes_per_worker", exact(result.communication.bytes_per_worker)},
             {"modelled_seconds", exact(result.communication.modelled_seconds)},
             {"sync_seconds", exact(result.sync_seconds)},
             {"allreduce_seconds", exact(result.communication.allreduce_seconds)},
             {"ranks", message(comm.ranks())},
             {"seconds", train::format_number(result.seconds, 4)},
             {"message", result.message}});
    return row;
  }

  /// The centralized reference in `folder`: run_training with the same SGDM, batch, cosine and
  /// epochs (it tests the weights of its best validation epoch), or its earlier result there.
  [[nodiscard]] Row run_centralized(const std::filesystem::path& folder) const {
    const std::string id = "centralized";
    const RunFolder run(folder, stamp("centralized sgdm"));
    local::InProcess one;  // rank 0's alone
    if (auto done = reuse(id, run, one)) return *done;
    const std::string resuming = claim(run);
    std::printf("  %-*s centralized SGDM, batch %zu%s\n", width, id.c_str(), local_batch_size, resuming.c_str());
    std::fflush(stdout);

    nn::LeNet5<float> model({.seed = config.seed});
    optim::Sgdm optimizer(model.parameters(), {.lr = inner.lr, .momentum = inner.momentum, .weight_decay = inner.weight_decay});
    const auto steps_per_epoch = static_cast<std::int64_t>((prepared.train.size() + local_batch_size - 1) / local_batch_size);
    const optim::Schedule schedule = optim::Cosine{.lr = inner.lr, .t_max = static_cast<std::int64_t>(epochs) * steps_per_epoch};
    const train::RunOptions options{.epochs = epochs,
                                    .batch_size = local_batch_size,
                                    .seed = config.seed,
                                    .optimizer_name = "sgdm",
                                    .hyperparameters = {{"base_lr", inner.lr}, {"weight_decay", inner.weight_decay}, {"momentum", inner.momentum}},
                                    .out = folder,
                                    .resume = true};
    const train::RunResult result =
        train::run_training(model, optimizer, schedule, train::RunData::from(prepared), options, metrics(id));
    Row row = inner_columns();
    row.set({{"run", id},
             {"K", "1"},
             {"H", ""},
             {"status", result.status},
             {"epochs", message(result.epochs_done)},
             {"steps", message(result.steps)},
             {"validation_accuracy", exact(result.history.empty() ? std::nan("") : result.history.back().validation_accuracy)},
             {"best_validation_accuracy", exact(result.best_validation_accuracy)},
             {"best_epoch", message(result.best_epoch)},
             {"test_accuracy", exact(result.test.accuracy)},
             {"test_loss", exact(result.test.loss)},
             {"rounds", "0"},
             {"bytes_per_worker", "0"},
             {"modelled_seconds", "0"},
             {"sync_seconds", "0"},
             {"allreduce_seconds", "0"},
             {"ranks", "1"},
             {"seconds", train::format_number(result.seconds, 4)},
             {"message", result.message}});
    return row;
  }
};

}  // namespace distopt::study
