// Stage 3 of the study: centralized training. SGD with momentum (0.9) and AdamW, each searched on a
// grid of learning rate x weight decay (the scale's sgdm_lrs / adamw_lrs x weight_decays), every
// trial epochs_search epochs with cosine annealing to 0 over its steps, ranked by validation
// accuracy; then each optimizer's best setting is retrained on train + validation for
// epochs_final epochs (cosine) and evaluated once on the test set.
//
//   stage3_centralized [--quick|--full] [--data DIR] [--results DIR] [--work DIR] [--seed N]
//
// Every trial and retrain uses the same initial weights and data order (config.seed): the search
// compares hyperparameters on common random numbers, so a difference is the setting's, not the
// draw's. The test set is not looked at during the search.
//
// Outputs under <results>/stage3_centralized/: table.md (both ranked search tables and the final
// table), <optimizer>/results.{csv,md} (train::write_search_table), summary.csv (one row per run),
// metrics.jsonl (every run's records labelled run=..., and the search's trial records), curves.png
// (the two retrained runs). Checkpoints: <work>/stage3_centralized/<optimizer>/{search,final}/train/
// <optimizer>/64/<lr>/<wd>/, each run folder with stamp.txt, metrics.jsonl and, once finished,
// result.csv: a re-run reuses finished runs, resumes cut ones, restarts those of another configuration.
#include "study_cli.hpp"

#include <distopt/core/error.hpp>
#include <distopt/core/parallel.hpp>
#include <distopt/data/split.hpp>
#include <distopt/nn/lenet5.hpp>
#include <distopt/optim/adamw.hpp>
#include <distopt/optim/schedule.hpp>
#include <distopt/optim/sgdm.hpp>
#include <distopt/study/plots.hpp>
#include <distopt/study/runs.hpp>
#include <distopt/study/sinks.hpp>
#include <distopt/study/study.hpp>
#include <distopt/train/checkpoint.hpp>
#include <distopt/train/metrics.hpp>
#include <distopt/train/run.hpp>
#include <distopt/train/search.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace data = distopt::data;
namespace study = distopt::study;
namespace train = distopt::train;
using distopt::message;
using train::format_number;

const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};
using study::fixed;
using study::Row;

// ---- the stage ----

constexpr std::size_t batch_size = 64;
constexpr double sgdm_momentum = 0.9;

/// One training run of the stage: a search trial or a retrain.
struct RunSpec {
  std::string optimizer;  ///< "sgdm" or "adamw"
  std::string phase;      ///< "search" or "final"
  double lr = 0;
  double weight_decay = 0;
  std::size_t epochs = 0;
  train::RunData sets{};
  fs::path root{};   ///< run_training's out: the run folder is root/train/<optimizer>/64/<lr>/<wd>
  std::string id{};  ///< the `run` label of its records
};

/// Trains `spec` (or reuses / resumes its folder) and returns its result row.
Row train_one(const study::Config& config, const RunSpec& spec) {
  const std::size_t n_train = spec.sets.train->size();
  const auto steps_per_epoch = static_cast<std::int64_t>((n_train + batch_size - 1) / batch_size);
  const distopt::optim::Schedule schedule =
      distopt::optim::Cosine{.lr = spec.lr, .t_max = steps_per_epoch * static_cast<std::int64_t>(spec.epochs)};
  const study::RunFolder slot{train::CheckpointFolder(spec.root, spec.optimizer, batch_size, spec.lr, spec.weight_decay).path(),
                     message("stage3_centralized ", spec.phase, "\n", config.data_label(), "\nmode ", config.mode(), "\nseed ", config.seed,
                             "\nn_train ", n_train, "\nepochs ", spec.epochs, "\nbatch ", batch_size, "\noptimizer ", spec.optimizer,
                             "\nlr ", format_number(spec.lr, 17), "\nweight_decay ", format_number(spec.weight_decay, 17),
                             "\nschedule cosine\n")};
  if (auto done = slot.finished()) {
    std::cout << "run " << spec.id << ": finished earlier, reused\n";
    return *done;
  }
  const bool resume = slot.claim() == study::RunFolder::Start::resume;
  train::Metrics metrics;
  metrics.add(std::make_shared<study::RunLabel>(spec.id, std::make_shared<train::JsonLinesSink>(slot.path() / "metrics.jsonl", /*append=*/resume)));
  metrics.add(std::make_shared<train::ProgressSink>(std::cerr));
  const train::RunOptions options{
      .epochs = spec.epochs,
      .batch_size = batch_size,
      .seed = config.seed,
      .optimizer_name = spec.optimizer,
      .hyperparameters = {{"base_lr", spec.lr}, {"weight_decay", spec.weight_decay}, {"batch_size", static_cast<double>(batch_size)}},
      .out = spec.root,
      .resume = resume,
      .overwrite = !resume,
  };
  std::cout << "run " << spec.id << ": " << (resume ? "resuming" : "training") << ", " << n_train << " images, " << spec.epochs
            << " epochs of " << steps_per_epoch << " steps, cosine from lr " << format_number(spec.lr) << '\n'
            << std::flush;
  distopt::nn::LeNet5<float> model({.seed = config.seed});
  train::RunResult r;
  if (spec.optimizer == "sgdm") {
    distopt::optim::Sgdm optimizer(model.parameters(), {.lr = spec.lr, .momentum = sgdm_momentum, .weight_decay = spec.weight_decay});
    r = train::run_training(model, optimizer, schedule, spec.sets, options, metrics);
  } else {
    distopt::optim::AdamW optimizer(model.parameters(), {.lr = spec.lr, .weight_decay = spec.weight_decay});
    r = train::run_training(model, optimizer, schedule, spec.sets, options, metrics);
  }
  double train_seconds = 0;
  for (const auto& h : r.history) train_seconds += h.seconds;
  const Row row = {{"run", spec.id},
                   {"optimizer", spec.optimizer},
                   {"phase", spec.phase},
                   {"lr", format_number(spec.lr, 10)},
                   {"weight_decay", format_number(spec.weight_decay, 10)},
                   {"momentum", spec.optimizer == "sgdm" ? format_number(sgdm_momentum) : "0.9 (beta1)"},
                   {"batch_size", message(batch_size)},
                   {"schedule", "cosine"},
                   {"n_train", message(n_train)},
                   {"status", r.status},
                   {"epochs", message(r.epochs_done)},
                   {"steps", message(r.steps)},
                   {"best_validation_accuracy", format_number(r.best_validation_accuracy, 10)},
                   {"final_train_accuracy", r.history.empty() ? "nan" : format_number(r.history.back().train_accuracy, 10)},
                   {"test_accuracy", format_number(r.test.accuracy, 10)},
                   {"test_top5", format_number(r.test.top5, 10)},
                   {"seconds", format_number(train_seconds, 6)},
                   {"message", r.message}};
  study::write_row(slot.path() / "result.csv", row);  // last: its presence says the run is finished
  return row;
}

/// A result row as the search's trial result.
train::TrialResult trial_result(const Row& row) {
  const double validation = row.number("best_validation_accuracy");
  return {.status = row.at("status"),
          .validation_accuracy = std::isfinite(validation) ? validation : std::nan(""),
          .test_accuracy = row.number("test_accuracy"),
          .epochs = static_cast<std::uint64_t>(std::stoull(row.at("epochs"))),
          .seconds = row.number("seconds"),
          .message = row.at("message")};
}

/// What one optimizer's search and retrain gave.
struct OptimizerOutcome {
  std::string optimizer;
  std::vector<train::TrialResult> ranked;
  std::optional<train::TrialResult> best;
  std::optional<Row> final_row;
  fs::path final_folder;
};

void run(const study::Config& config) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const fs::path results = config.results / "stage3_centralized";
  const fs::path work = config.work / "stage3_centralized";

  const data::PreparedData prepared = study::prepare_data(config);
  const train::RunData search_sets{&prepared.train, &prepared.validation, nullptr, data::Normalizer(prepared.stats)};
  // The retrain sees the validation images too (the search is over); it keeps the train split's
  // normalisation, the one every trial was selected with.
  const data::LabelledImages train_and_validation = data::concatenate(prepared.train, prepared.validation);
  const train::RunData final_sets{&train_and_validation, nullptr, &prepared.test, data::Normalizer(prepared.stats)};

  std::vector<OptimizerOutcome> outcomes;
  std::vector<std::vector<std::string>> summary_rows;
  std::vector<fs::path> metric_files;
  const auto trial_memory = std::make_shared<train::MemorySink>();
  const std::vector<std::string> summary_header = {"run", "optimizer", "phase", "lr", "weight_decay", "momentum", "batch_size", "schedule",
                                                   "n_train", "status", "epochs", "steps", "best_validation_accuracy",
                                                   "final_train_accuracy", "test_accuracy", "test_top5", "seconds", "message"};
  const auto add_summary = [&](const Row& row) {
    std::vector<std::string> values;
    for (const auto& name : summary_header) values.push_back(row.at(name));
    summary_rows.push_back(std::move(values));
  };

  for (const std::string optimizer : {"sgdm", "adamw"}) {
    OptimizerOutcome outcome{.optimizer = optimizer, .ranked = {}, .best = std::nullopt, .final_row = std::nullopt, .final_folder = {}};
    const std::vector<double>& lrs = optimizer == "sgdm" ? config.scale.sgdm_lrs : config.scale.adamw_lrs;
    const auto trials = train::grid_trials({train::Dimension::grid("lr", lrs), train::Dimension::grid("weight_decay", config.scale.weight_decays)},
                                           config.seed);
    std::vector<Row> trial_rows(trials.size());
    const train::TrialFunction function = [&](const train::Trial& trial) {
      const RunSpec spec{.optimizer = optimizer,
                         .phase = "search",
                         .lr = trial.get("lr"),
                         .weight_decay = trial.get("weight_decay"),
                         .epochs = config.scale.epochs_search,
                         .sets = search_sets,
                         .root = work / optimizer / "search",
                         .id = message(optimizer, "/search/", trial.folder())};
      trial_rows[trial.index] = train_one(config, spec);
      metric_files.push_back(
          train::CheckpointFolder(spec.root, optimizer, batch_size, spec.lr, spec.weight_decay).path() / "metrics.jsonl");
      return trial_result(trial_rows[trial.index]);
    };
    std::cout << "-- " << optimizer << ": " << trials.size() << " trials of " << config.scale.epochs_search << " epoch(s)\n";
    const auto found = train::run_search(
        trials, function,
        {.parallel_trials = 1, .threads_per_trial = 0,
         .metrics = train::Metrics({std::make_shared<study::RunLabel>(message(optimizer, "/search"), trial_memory)})});
    for (const Row& row : trial_rows)
      if (!row.empty()) add_summary(row);
    outcome.ranked = train::rank(found);
    train::write_search_table(results / optimizer, outcome.ranked);
    try {
      outcome.best = train::best(found);
    } catch (const std::runtime_error& e) {
      std::cerr << optimizer << ": " << e.what() << "; no retrain\n";
    }
    if (outcome.best) {
      const RunSpec spec{.optimizer = optimizer,
                         .phase = "final",
                         .lr = outcome.best->trial.get("lr"),
                         .weight_decay = outcome.best->trial.get("weight_decay"),
                         .epochs = config.scale.epochs_final,
                         .sets = final_sets,
                         .root = work / optimizer / "final",
                         .id = message(optimizer, "/final")};
      outcome.final_row = train_one(config, spec);
      outcome.final_folder = train::CheckpointFolder(spec.root, optimizer, batch_size, spec.lr, spec.weight_decay).path();
      metric_files.push_back(outcome.final_folder / "metrics.jsonl");
      add_summary(*outcome.final_row);
    }
    outcomes.push_back(std::move(outcome));
  }

  // metrics.jsonl: every run's records, then the search's trial records.
  std::string all_metrics;
  for (const fs::path& file : metric_files) all_metrics += study::read_text(file);
  for (const train::Record& record : trial_memory->records) all_metrics += train::to_json(record) + '\n';
  study::write_text(results / "metrics.jsonl", all_metrics);
  train::write_csv(results / "summary.csv", summary_header, summary_rows);

  std::vector<fs::path> final_folders;
  for (const auto& o : outcomes)
    if (o.final_row) final_folders.push_back(o.final_folder);
  if (!final_folders.empty())
    plots.curves(final_folders, results / "curves.png",
         message("Stage 3: retrained on train + validation, ", config.scale.epochs_final, " epochs, cosine (", config.mode(), ")"));

  // The final table and the observations, from the numbers.
  std::vector<std::vector<std::string>> final_rows;
  for (const auto& o : outcomes) {
    if (!o.best || !o.final_row) {
      final_rows.push_back({o.optimizer, "-", "-", "-", "-", "-", "-"});
      continue;
    }
    const Row& f = *o.final_row;
    std::string test = study::percent(f.number("test_accuracy"));
    if (f.at("status") != "completed") test += message(" (", f.at("status"), ")");
    final_rows.push_back({o.optimizer, format_number(o.best->trial.get("lr")), format_number(o.best->trial.get("weight_decay")),
                          study::percent(o.best->validation_accuracy), test, f.at("epochs"), fixed(f.number("seconds"), 1)});
  }
  std::ostringstream notes;
  std::size_t not_ok = 0, total = 0;
  for (const auto& o : outcomes)
    for (const auto& r : o.ranked) ++total, not_ok += r.ok() ? 0 : 1;
  notes << total - not_ok << " of " << total << " search trials completed";
  if (not_ok > 0) notes << " (" << not_ok << " diverged or failed)";
  notes << ". ";
  const OptimizerOutcome* winner = nullptr;
  for (const auto& o : outcomes)
    if (o.final_row && std::isfinite(o.final_row->number("test_accuracy")) &&
        (winner == nullptr || o.final_row->number("test_accuracy") > winner->final_row->number("test_accuracy")))
      winner = &o;
  if (winner != nullptr) {
    notes << "After retraining, " << winner->optimizer << " reaches the higher test accuracy, " << study::percent(winner->final_row->number("test_accuracy"))
          << "%";
    for (const auto& o : outcomes)
      if (&o != winner && o.final_row)
        notes << " against " << study::percent(o.final_row->number("test_accuracy")) << "% for " << o.optimizer;
    notes << ".";
    for (const auto& o : outcomes)
      if (o.best && o.ranked.size() > 1 && o.ranked[1].ok()) {
        const double lead = o.best->validation_accuracy - o.ranked[1].validation_accuracy;
        if (lead > 0)
          notes << " " << o.optimizer << "'s best setting leads its runner-up by " << fixed(100.0 * lead, 1) << " validation points.";
        else
          notes << " " << o.optimizer << "'s best setting ties its runner-up on validation accuracy (the lower trial index wins), "
                << "so its choice is not informative at this scale.";
      }
  } else {
    notes << "No retrain finished with a test accuracy.";
  }

  std::ostringstream md;
  md << "## Stage 3: Centralized training (SGDM and AdamW)\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << "\n\n";
  for (const auto& o : outcomes)
    md << "### " << o.optimizer << " search (" << config.scale.epochs_search << " epoch(s) per trial, batch " << batch_size
       << ", cosine annealing; ranked by validation accuracy)\n\n"
       << study::read_text(results / o.optimizer / "results.md") << '\n';
  md << "### Best settings retrained on train + validation (" << config.scale.epochs_final << " epoch(s), cosine), tested once\n\n"
     << study::markdown_table({"optimizer", "best lr", "best wd", "validation acc % (search)", "test acc % (retrained)", "epochs",
                               "seconds (training)"},
                              final_rows)
     << '\n'
     << notes.str() << '\n';
  study::write_text(results / "table.md", md.str());
  std::cout << '\n' << md.str();
  std::cout << "stage3_centralized: wall time " << fixed(std::chrono::duration<double>(clock::now() - start).count(), 1) << " s\n";
}

}  // namespace

int main(int argc, char** argv) {
  study_cli::Flags flags;
  CLI::App app{"Study stage 3: SGDM and AdamW, a grid search of lr x weight decay (cosine annealing per trial), then each best "
               "setting retrained on train + validation and tested; resumable; writes <results>/stage3_centralized/"
               "{table.md,summary.csv,metrics.jsonl,curves.png,<optimizer>/results.{csv,md}}"};
  flags.add(app);
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  return study_cli::run_stage(flags, "stage3_centralized", [&] { run(flags.config); });
}
