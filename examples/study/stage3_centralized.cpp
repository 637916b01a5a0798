// Stage 3 of the study: centralized training at batch 64. SGD with momentum (0.9) and AdamW are
// each searched on the scale's grid of learning rate x weight decay (epochs_search epochs per
// trial, cosine annealing to 0, one seed: the trials share initial weights and data order, so a
// difference is the setting's, not the draw's), ranked by validation accuracy; each best setting
// is then retrained with the scale's seeds for up to epochs_final epochs with early stopping on
// validation (patience = the study's n_epochs_stop) and tested once, with its best-validation
// weights. The test set is not looked at while choosing.
//
//   stage3_centralized [--quick|--standard|--full|--smoke] [--data DIR] [--results DIR] [--work DIR] [--seed N]
//
// Outputs under <results>/stage3_centralized/: table.md, summary.csv (one row per run; `phase` is
// "search" or "final"), findings.csv (SGDM against AdamW), metrics.jsonl, curves.png. Runs under
// <work>/stage3_centralized/<run>/, resumable; stages 4 to 6 read the best search rows.
#include "stages.hpp"
#include "study_cli.hpp"

#include "common/central_runs.hpp"
#include "common/findings.hpp"
#include "common/plots.hpp"
#include "common/runs.hpp"
#include "common/study.hpp"

#include <distopt/train/metrics.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace study = distopt::study;
namespace train = distopt::train;
using distopt::message;
using study::Row;
using distopt::io::format_number;

const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};
constexpr std::size_t batch_size = 64;

/// One optimizer's search and retrains.
struct Outcome {
  std::string optimizer;
  std::vector<Row> search;  ///< in grid order
  const Row* best = nullptr;
  std::vector<Row> finals;  ///< one per seed
};

void run(const study::Config& config, study::Work& work) {
  const auto start = std::chrono::steady_clock::now();
  const bool root = work.root();
  const fs::path results = config.results / "stage3_centralized";
  const distopt::data::PreparedData prepared = study::prepare_data(config, work.world());
  const study::CentralRuns runs{config, prepared, config.work / "stage3_centralized", results / "metrics.jsonl"};
  const std::size_t search_epochs = config.scale.scaled(config.scale.epochs_search);
  const std::size_t final_epochs = config.scale.scaled(config.scale.epochs_final);
  const std::vector<std::string> optimizers = {"sgdm", "adamw"};

  // The searches of both optimizers, one work list: every trial is independent.
  std::vector<Outcome> outcomes;
  outcomes.reserve(2);  // `best` points into an outcome's search rows
  std::vector<study::CentralSpec> trials;
  for (const std::string& optimizer : optimizers) {
    const auto& lrs = optimizer == "sgdm" ? config.scale.sgdm_lrs : config.scale.adamw_lrs;
    if (root)
      std::printf("-- %s: search of %zu lr x %zu weight decay, %zu epoch(s) per trial, batch %zu\n",
                  study::optimizer_label(optimizer).c_str(), lrs.size(), config.scale.weight_decays.size(), search_epochs, batch_size);
    for (const double lr : lrs)
      for (const double wd : config.scale.weight_decays)
        trials.push_back({.id = message(optimizer, "-search-lr", format_number(lr), "-wd", format_number(wd)),
                          .optimizer = optimizer,
                          .lr = lr,
                          .weight_decay = wd,
                          .batch_size = batch_size,
                          .epochs = search_epochs,
                          .schedule = study::ScheduleKind::cosine,
                          .seed = config.seed});
  }
  const std::vector<Row> searched = runs.run_all(work, trials);

  // Each best setting retrained over the seeds, both optimizers' retrains in one work list.
  std::vector<study::CentralSpec> retrains;
  for (const std::string& optimizer : optimizers) {
    Outcome o{.optimizer = optimizer, .search = {}, .best = nullptr, .finals = {}};
    for (std::size_t i = 0; i < trials.size(); ++i)
      if (trials[i].optimizer == optimizer) {
        Row row = searched[i];
        row["phase"] = "search";
        o.search.push_back(std::move(row));
      }
    outcomes.push_back(std::move(o));
  }
  for (Outcome& o : outcomes) {
    for (const Row& r : o.search)
      if (study::ok(r) && std::isfinite(r.number("best_validation_accuracy")) &&
          (o.best == nullptr || r.number("best_validation_accuracy") > o.best->number("best_validation_accuracy")))
        o.best = &r;
    if (o.best == nullptr) {
      if (root) std::printf("%s: no search trial finished; no retrain\n", o.optimizer.c_str());
      continue;
    }
    if (root)
      std::printf("-- %s: best lr %s wd %s (validation %s%%), retrained with %zu seed(s), up to %zu epochs, patience %zu\n",
                  study::optimizer_label(o.optimizer).c_str(), o.best->cell("lr").c_str(), o.best->cell("weight_decay").c_str(),
                  study::percent(o.best->number("best_validation_accuracy")).c_str(), config.scale.seeds, final_epochs,
                  config.scale.patience);
    for (std::size_t i = 0; i < config.scale.seeds; ++i) {
      const std::uint64_t seed = config.seed_of(i);
      retrains.push_back({.id = message(o.optimizer, "-final-seed", seed),
                          .optimizer = o.optimizer,
                          .lr = o.best->number("lr"),
                          .weight_decay = o.best->number("weight_decay"),
                          .batch_size = batch_size,
                          .epochs = final_epochs,
                          .patience = config.scale.patience,
                          .schedule = study::ScheduleKind::cosine,
                          .seed = seed});
    }
  }
  const std::vector<Row> retrained = runs.run_all(work, retrains);
  if (!root) return;  // the rest is rank 0's: tables and plots
  std::vector<Row> summary;
  std::vector<std::string> curve_runs;
  for (std::size_t i = 0; i < retrains.size(); ++i) {
    Row row = retrained[i];
    row["phase"] = "final";
    for (Outcome& o : outcomes)
      if (o.optimizer == retrains[i].optimizer) o.finals.push_back(std::move(row));
    curve_runs.push_back(retrains[i].id);
  }
  for (const auto& o : outcomes) {
    summary.insert(summary.end(), o.search.begin(), o.search.end());
    summary.insert(summary.end(), o.finals.begin(), o.finals.end());
  }
  std::vector<std::string> header = {"phase"};
  for (const auto& c : summary.front().columns())
    if (c != "phase") header.push_back(c);
  study::write_rows(results / "summary.csv", header, summary);
  if (!curve_runs.empty())
    plots.curves(results / "metrics.jsonl", curve_runs, results / "curves.png",
                 message("Stage 3: ", prepared.info.name, ", best SGDM and AdamW retrained, batch 64 (", config.mode(), ")"));

  // The finding: SGDM against AdamW, both tuned, over the retrains' seeds.
  const auto evidence = [&](const Outcome& o) {
    study::Evidence e{message(study::optimizer_label(o.optimizer), " batch 64, tuned (stage 3)"), {}};
    for (const Row& r : o.finals) e.values.push_back(study::test_accuracy(r));
    if (o.finals.empty()) e.values.push_back(std::nan(""));
    return e;
  };
  std::vector<study::Finding> findings = {
      {.claim = "Tuned SGD with momentum generalises at least as well as tuned AdamW at a small batch (Wilson et al. 2017; "
                "Loshchilov & Hutter 2019 find AdamW closes the gap)",
       .kind = study::Claim::matches,
       .a = evidence(outcomes[0]),
       .b = evidence(outcomes[1]),
       .note = message("batch 64, cosine, early stopping (patience ", config.scale.patience, "); best-validation weights tested")}};
  for (auto& f : findings) f.test_images = prepared.test.size();
  study::write_findings(results / "findings.csv", findings);

  std::ostringstream md;
  md << "## Stage 3: Centralized SGDM and AdamW (search, retrain with early stopping, test)\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << ". Model: " << study::model_label(prepared.info)
     << ". Batch " << batch_size << ", cosine annealing to 0 over the planned steps; augmentation: "
     << study::augmentation_label(study::augmentation_for(prepared.info)) << ".\n\n";
  for (const auto& o : outcomes) {
    std::vector<std::vector<std::string>> rows;
    for (const Row& r : o.search)
      rows.push_back({r.cell("lr"), r.cell("weight_decay"), r.cell("status"), r.cell("epochs"), r.cell("steps"),
                      study::percent(r.number("best_validation_accuracy")), &r == o.best ? "**chosen**" : ""});
    md << "### " << study::optimizer_label(o.optimizer) << " search (" << search_epochs << " epoch(s) per trial, seed " << config.seed
       << "; ranked by validation accuracy)\n\n"
       << study::markdown_table({"lr", "weight decay", "status", "epochs", "steps", "best validation acc %", ""}, rows) << '\n';
    if (o.best != nullptr) {
      const std::string edges = study::edge_note("The chosen lr", o.best->number("lr"), o.optimizer == "sgdm" ? config.scale.sgdm_lrs : config.scale.adamw_lrs) +
                                study::edge_note("The chosen weight decay", o.best->number("weight_decay"), config.scale.weight_decays);
      if (!edges.empty()) md << edges << "\n\n";
    }
  }
  std::vector<std::vector<std::string>> final_rows;
  for (const auto& o : outcomes)
    for (const Row& r : o.finals)
      final_rows.push_back({study::optimizer_label(o.optimizer), r.cell("seed"), r.cell("lr"), r.cell("weight_decay"), r.cell("status"),
                            message(r.cell("epochs"), " / ", r.cell("epochs_planned")), r.cell("best_epoch"), r.cell("steps"),
                            study::percent(r.number("best_validation_accuracy")), study::percent(r.number("test_accuracy")),
                            study::fixed(r.number("train_seconds"), 1)});
  md << "### Best settings retrained (up to " << final_epochs << " epochs, early stopping with patience " << config.scale.patience
     << "), tested once with their best-validation weights\n\n"
     << study::markdown_table({"optimizer", "seed", "lr", "weight decay", "status", "epochs run / planned", "best epoch", "steps",
                               "best validation acc %", "test acc %", "train seconds"},
                              final_rows)
     << "\n### Finding\n\n"
     << study::findings_table(findings) << '\n';
  distopt::io::write_text(results / "table.md", md.str());
  std::cout << '\n' << md.str();
  std::printf("stage3_centralized: wall time %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

}  // namespace

int study_stages::stage3_centralized(int argc, char** argv) {
  study_cli::Flags flags;
  CLI::App app{"Study stage 3: SGDM and AdamW at batch 64, a grid search of lr x weight decay, then each best setting retrained "
               "with the scale's seeds and early stopping, and tested; resumable; writes <results>/stage3_centralized/"};
  flags.add(app);
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  return study_cli::run_stage(flags, "stage3_centralized", [&](study::Work& work) { run(flags.config, work); });
}
