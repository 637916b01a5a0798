// A LocalTrainer under train::run: its epochs of rounds, its "round" records, its communication
// on the epoch and summary records, its checkpoints (local/checkpoint.hpp), rank 0 evaluating
// and writing while every rank trains.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "distopt/core/archive.hpp"
#include "distopt/local/checkpoint.hpp"
#include "distopt/local/communicator.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/optim/schedule.hpp"
#include "distopt/train/metrics.hpp"
#include "distopt/train/run.hpp"

namespace distopt::train {

/// A LocalTrainer as train::run's EpochTrainer (the trainer must outlive it).
template <class Trainer>
class LocalRun {
 public:
  explicit LocalRun(Trainer& trainer) : trainer_(&trainer) {}

  EpochTotals train_epoch(const optim::Schedule& schedule, std::uint64_t planned_epochs, const Metrics& metrics) {
    const bool root = is_root();
    const auto report = trainer_->train_epoch(schedule, planned_epochs, [&](const local::RoundReport& r) {
      if (!root) return;
      Record record{.event = "round", .epoch = trainer_->epochs_done() + 1, .step = trainer_->step()};
      describe(record);
      metrics.write(record.set("loss", r.loss)
                        .set("accuracy", r.accuracy)
                        .set("lr", r.gamma)
                        .set("images_per_second", static_cast<double>(r.samples) / r.seconds)
                        .set("sync_seconds", r.sync_seconds)
                        .set("allreduce_seconds", r.communication.allreduce_seconds)
                        .set("bytes_per_worker", r.communication.bytes_per_worker)
                        .set("modelled_seconds", r.communication.modelled_seconds));
    });
    return {.loss = report.loss,
            .accuracy = report.accuracy,
            .samples = report.samples,
            .steps = report.steps,
            .seconds = report.seconds,
            .lr = report.gamma,
            .epochs_done = report.epochs_done};
  }
  [[nodiscard]] auto& model() noexcept { return trainer_->global_model(); }
  [[nodiscard]] std::int64_t steps() const noexcept { return trainer_->step(); }
  [[nodiscard]] bool is_root() const { return trainer_->rank() == 0; }
  [[nodiscard]] bool agree(bool decision) {
    local::broadcast_value(trainer_->communicator(), decision);
    return decision;
  }
  /// The outer policy, K and H on every record; the rounds on epoch records; the communication
  /// and the time spent synchronising in this process on the summary.
  void describe(Record& r) const {
    r.label("outer", trainer_->outer().name());
    r.set("workers", static_cast<double>(trainer_->options().workers))
        .set("local_steps", static_cast<double>(trainer_->options().local_steps));
    const local::CommunicationCost& c = trainer_->communication();
    if (r.event == "epoch" || r.event == "summary") r.set("rounds", static_cast<double>(c.rounds));
    if (r.event == "summary")
      r.set("bytes_per_worker", c.bytes_per_worker)
          .set("modelled_communication_seconds", c.modelled_seconds)
          .set("sync_seconds", trainer_->sync_seconds())
          .set("allreduce_seconds", c.allreduce_seconds);
  }
  void save_checkpoint(const std::filesystem::path& file, const Archive& fields) {
    local::LocalCheckpoint::save(*trainer_, file, fields);
  }
  std::optional<Archive> resume(const std::optional<std::filesystem::path>& latest) {
    return local::LocalCheckpoint::resume(*trainer_, latest);
  }

 private:
  Trainer* trainer_;
};

/// What a local run does besides its rounds: `epochs` passes over the data, the global model
/// evaluated on validation after every epoch and on test at the end (the final model: no best
/// weights, no early stopping), and with `out` a checkpoint after every epoch at
/// <out>/<epoch>.npz that `resume` continues from.
struct LocalRunOptions {
  std::size_t epochs = 1;
  std::filesystem::path out{};
  bool resume = false;
  std::size_t keep_last = 2;
  std::size_t eval_batch = 1000;
  std::optional<std::size_t> stop_after{};  ///< end after this many epochs in this process (resume tests)
  /// What identifies the run (checked against and kept in the folder's config.json, with the
  /// epochs); empty: only the epochs.
  RunConfig config{};
};

/// Trains `trainer` with train::run: the records and result of any run, the communication on the
/// trainer (trainer.communication(), trainer.sync_seconds()). `extra` callbacks run before the
/// checkpoints (so each epoch's checkpoint holds their part). Collective over its communicator.
template <class Trainer, class... Extra>
RunResult run_local(Trainer& trainer, const optim::Schedule& schedule, const RunData& sets, const LocalRunOptions& options,
                    const Metrics& metrics = {}, Extra&... extra) {
  LocalRun<Trainer> host(trainer);
  Checkpoints checkpoints;
  if (!options.out.empty()) {
    RunConfig config = options.config;
    config.set("epochs", options.epochs);
    checkpoints = Checkpoints(CheckpointFolder(options.out), {.keep_last = options.keep_last, .keep_best = false,
                                                              .resume = options.resume, .overwrite = !options.resume,
                                                              .config = std::move(config)});
  }
  StopAfter stop(options.stop_after);
  return run(host, schedule, sets, {.epochs = options.epochs, .eval_batch = options.eval_batch}, metrics, extra..., checkpoints, stop);
}

}  // namespace distopt::train
