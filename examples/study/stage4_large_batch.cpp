// Stage 4 of the study: large batches. At every batch size of the scale the four optimizers train
// for the same epochs under one schedule (linear warmup over 10% of the steps from a tenth of the
// peak lr, Goyal et al. 2017, then polynomial decay with power 2 to 0, You, Gitman, Ginsburg 2017):
//  - SGDM and AdamW start from stage 3's best lr and weight decay at batch 64, the lr scaled to the
//    batch: linearly for SGDM (Goyal et al. 2017), with the square root for AdamW (Hoffer et al.
//    2017; Adam's update is normalised, so the linear rule overshoots);
//  - LARS (weight decay 1e-3, momentum 0.9) and LAMB (weight decay 4e-4, beta1 0.9), the study's
//    settings, get an lr search at each batch size (the grids hold the study's lr 1.5 and
//    4.8 / (2^5 * 100)); the best by validation accuracy is the batch's LARS or LAMB.
// The epochs are raised until the largest batch takes min_steps optimizer steps, so no run is
// starved of steps; above the micro-batch (4096) gradients accumulate over batch // 4096
// micro-batches, the study's rule. At the largest batch every optimizer's chosen setting runs with
// the scale's seeds: the findings compare LARS with SGDM and LAMB with AdamW there. Every run is
// tested with its best-validation weights (run_training's rule, the same for all).
//
//   stage4_large_batch [--quick|--standard|--full|--smoke] [--data DIR] [--results DIR] [--work DIR] [--seed N]
//
// Outputs under <results>/stage4_large_batch/: table.md, summary.csv (one row per run), sweep.csv
// (one row per optimizer and batch: its chosen setting), findings.csv, metrics.jsonl,
// accuracy_vs_batch.png. Runs under <work>/stage4_large_batch/<run>/, resumable.
#include "stages.hpp"
#include "study_cli.hpp"

#include "common/central_runs.hpp"
#include "common/findings.hpp"
#include "common/plots.hpp"
#include "common/runs.hpp"
#include "common/study.hpp"

#include <distopt/train/metrics.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
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
constexpr double base_batch = 64;  // stage 3's
constexpr double lars_weight_decay = 1e-3;
constexpr double lamb_weight_decay = 4e-4;

/// The runs of one optimizer at one batch size: the search (LARS, LAMB) or the single scaled
/// setting (SGDM, AdamW) at the first seed, then the chosen setting's further seeds.
struct Cell {
  std::string optimizer;
  std::size_t batch = 0;
  std::vector<Row> candidates;
  std::size_t chosen = 0;   ///< index into candidates
  std::vector<Row> seeds;   ///< the chosen setting's runs, first seed first
};

void run(const study::Config& config, study::Work& work) {
  const auto start = std::chrono::steady_clock::now();
  const bool root = work.root();
  const fs::path results = config.results / "stage4_large_batch";
  const distopt::data::PreparedData prepared = study::prepare_data(config, work.world());
  const study::CentralRuns runs{config, prepared, config.work / "stage4_large_batch", results / "metrics.jsonl"};
  const study::TunedSetting sgdm = study::stage3_best(config, "sgdm", work.world());
  const study::TunedSetting adamw = study::stage3_best(config, "adamw", work.world());

  const std::size_t largest = *std::max_element(config.scale.batch_sizes.begin(), config.scale.batch_sizes.end());
  std::size_t epochs = config.scale.scaled(config.scale.epochs_large);
  const std::size_t needed = (config.scale.min_steps + runs.steps_per_epoch(largest) - 1) / runs.steps_per_epoch(largest);
  const bool raised = needed > epochs;
  if (raised) epochs = needed;
  if (root)
    std::printf("%zu epochs per run (%s), %zu steps at batch %zu; SGDM from %s, AdamW from %s\n", epochs,
              raised ? message("raised from ", config.scale.scaled(config.scale.epochs_large), " to reach ", config.scale.min_steps,
                               " steps at the largest batch").c_str()
                     : "the scale's",
              runs.steps_per_epoch(largest) * epochs, largest, sgdm.source.c_str(), adamw.source.c_str());

  const auto spec_of = [&](const std::string& optimizer, std::size_t batch, double lr, double wd, double momentum, std::uint64_t seed) {
    return study::CentralSpec{.id = message(optimizer, "-bs", batch, "-lr", format_number(lr, 6), "-seed", seed),
                              .optimizer = optimizer,
                              .lr = lr,
                              .weight_decay = wd,
                              .momentum = momentum,
                              .batch_size = batch,
                              .epochs = epochs,
                              .patience = 0,
                              .schedule = study::ScheduleKind::warmup_poly,
                              .seed = seed};
  };

  // Every cell's first-seed runs (the scaled setting or the lr search) in one work list, then the
  // chosen settings' further seeds at the largest batch in another.
  std::vector<Cell> cells;
  std::vector<study::CentralSpec> first;
  std::vector<std::size_t> first_cell;  ///< the cell of each first-seed run
  for (const std::size_t batch : config.scale.batch_sizes) {
    const double ratio = static_cast<double>(batch) / base_batch;
    for (const std::string optimizer : {"sgdm", "adamw", "lars", "lamb"}) {
      const std::size_t before = first.size();
      if (optimizer == "sgdm") first.push_back(spec_of("sgdm", batch, sgdm.lr * ratio, sgdm.weight_decay, sgdm.momentum, config.seed));
      if (optimizer == "adamw")
        first.push_back(spec_of("adamw", batch, adamw.lr * std::sqrt(ratio), adamw.weight_decay, adamw.momentum, config.seed));
      if (optimizer == "lars")
        for (const double lr : config.scale.lars_lrs) first.push_back(spec_of("lars", batch, lr, lars_weight_decay, 0.9, config.seed));
      if (optimizer == "lamb")
        for (const double lr : config.scale.lamb_lrs) first.push_back(spec_of("lamb", batch, lr, lamb_weight_decay, 0.9, config.seed));
      first_cell.insert(first_cell.end(), first.size() - before, cells.size());
      cells.push_back({.optimizer = optimizer, .batch = batch, .candidates = {}, .chosen = 0, .seeds = {}});
    }
  }
  const std::vector<Row> first_rows = runs.run_all(work, first);
  for (std::size_t i = 0; i < first.size(); ++i) cells[first_cell[i]].candidates.push_back(first_rows[i]);

  std::vector<study::CentralSpec> further;
  std::vector<std::size_t> further_cell;
  for (std::size_t c = 0; c < cells.size(); ++c) {
    Cell& cell = cells[c];
    for (Row& row : cell.candidates) row["role"] = cell.candidates.size() > 1 ? "search" : "scaled";
    for (std::size_t i = 1; i < cell.candidates.size(); ++i) {
      const double v = cell.candidates[i].number("best_validation_accuracy");
      const double best = cell.candidates[cell.chosen].number("best_validation_accuracy");
      if (study::ok(cell.candidates[i]) && std::isfinite(v) && (!study::ok(cell.candidates[cell.chosen]) || !(v <= best)))
        cell.chosen = i;
    }
    const Row& chosen = cell.candidates[cell.chosen];
    cell.seeds.push_back(chosen);
    if (cell.batch == largest)
      for (std::size_t i = 1; i < config.scale.seeds; ++i) {
        further.push_back(spec_of(cell.optimizer, cell.batch, chosen.number("lr"), chosen.number("weight_decay"),
                                  chosen.number("momentum"), config.seed_of(i)));
        further_cell.push_back(c);
      }
  }
  const std::vector<Row> further_rows = runs.run_all(work, further);
  if (!root) return;  // the rest is rank 0's: tables and plots
  for (std::size_t i = 0; i < further.size(); ++i) {
    Row row = further_rows[i];
    row["role"] = "seed";
    cells[further_cell[i]].seeds.push_back(std::move(row));
  }
  std::vector<Row> summary;
  for (const Cell& cell : cells) {
    summary.insert(summary.end(), cell.candidates.begin(), cell.candidates.end());
    summary.insert(summary.end(), cell.seeds.begin() + 1, cell.seeds.end());
  }
  std::vector<std::string> header = {"role"};
  for (const auto& c : summary.front().columns())
    if (c != "role") header.push_back(c);
  study::write_rows(results / "summary.csv", header, summary);

  // sweep.csv: the chosen setting of every optimizer and batch (mean over its seeds).
  std::vector<Row> sweep;
  for (const Cell& c : cells) {
    study::Evidence e{"", {}};
    for (const Row& r : c.seeds) e.values.push_back(study::test_accuracy(r));
    const Row& chosen = c.candidates[c.chosen];
    sweep.push_back({{"batch_size", message(c.batch)},
                     {"optimizer", c.optimizer},
                     {"lr", chosen.cell("lr")},
                     {"accumulation_steps", chosen.cell("accumulation")},
                     {"status", std::isfinite(e.mean()) ? std::string(train::to_string(train::Status::completed)) : chosen.cell("status")},
                     {"validation_accuracy", chosen.cell("best_validation_accuracy")},
                     {"test_accuracy", study::exact(e.mean())},
                     {"seeds", message(c.seeds.size())},
                     {"seconds", chosen.cell("train_seconds")}});
  }
  study::write_rows(results / "sweep.csv", sweep.front().columns(), sweep);
  plots.draw("plot_batch_sweep.py",
             {(results / "sweep.csv").string(), "-o", (results / "accuracy_vs_batch.png").string(), "--title",
              message("Stage 4: ", prepared.info.name, ", ", epochs, " epochs, warmup + poly(2) (", config.mode(), ")")},
             results / "accuracy_vs_batch.png");

  const auto evidence = [&](const std::string& optimizer) {
    for (const Cell& c : cells)
      if (c.optimizer == optimizer && c.batch == largest) {
        study::Evidence e{message(study::optimizer_label(optimizer), " batch ", largest, ", lr ", c.candidates[c.chosen].cell("lr")), {}};
        for (const Row& r : c.seeds) e.values.push_back(study::test_accuracy(r));
        return e;
      }
    return study::Evidence{optimizer, {std::nan("")}};
  };
  const std::string note = message(epochs, " epochs, ", runs.steps_per_epoch(largest) * epochs, " steps at batch ", largest,
                                   "; SGDM lr scaled linearly and AdamW by the square root from stage 3's batch-64 setting");
  // Why a layer-wise method might lose here, from this run's own numbers: its lr search ended at
  // a grid edge, or the budget is far below the papers' (thousands of steps at batch 8k and up).
  const auto caveat = [&](const std::string& optimizer, const std::vector<double>& grid) {
    std::string out;
    for (const Cell& c : cells)
      if (c.optimizer == optimizer && c.batch == largest)
        out = study::edge_note(message(study::optimizer_label(optimizer), "'s chosen lr"), c.candidates[c.chosen].number("lr"), grid);
    return message(out, "only ", runs.steps_per_epoch(largest) * epochs, " steps at batch ", largest,
                   ", where the papers train for thousands; the lr search used seed 0 only");
  };
  std::vector<study::Finding> findings = {
      {.claim = message("LARS keeps accuracy at a large batch better than SGDM under the same schedule (You, Gitman, Ginsburg 2017)"),
       .kind = study::Claim::better, .a = evidence("lars"), .b = evidence("sgdm"), .note = note,
       .caveat = caveat("lars", config.scale.lars_lrs)},
      {.claim = message("LAMB keeps accuracy at a large batch better than AdamW under the same schedule (You et al. 2020)"),
       .kind = study::Claim::better, .a = evidence("lamb"), .b = evidence("adamw"), .note = note,
       .caveat = caveat("lamb", config.scale.lamb_lrs)}};
  for (auto& f : findings) f.test_images = prepared.test.size();
  study::write_findings(results / "findings.csv", findings);

  std::ostringstream md;
  md << "## Stage 4: Large batches (LARS and LAMB against SGDM and AdamW)\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << ". Model: " << study::model_label(prepared.info) << ". "
     << epochs << " epochs per run" << (raised ? message(" (raised so that batch ", largest, " takes at least ", config.scale.min_steps, " steps)") : "")
     << ", warmup over 10% of the steps from 0.1x then poly(2) decay to 0; accumulation above " << config.scale.micro_batch
     << " images. SGDM from " << sgdm.source << " (lr " << format_number(sgdm.lr) << " x B/64, wd " << format_number(sgdm.weight_decay)
     << "); AdamW from " << adamw.source << " (lr " << format_number(adamw.lr) << " x sqrt(B/64), wd "
     << format_number(adamw.weight_decay) << "); LARS wd " << format_number(lars_weight_decay) << ", LAMB wd "
     << format_number(lamb_weight_decay) << ", lr searched at each batch. Test accuracy of the best-validation weights.\n\n";
  std::vector<std::vector<std::string>> rows;
  for (const Cell& c : cells) {
    const Row& chosen = c.candidates[c.chosen];
    std::string searched;
    for (std::size_t i = 0; i < c.candidates.size() && c.candidates.size() > 1; ++i)
      searched += message(i ? ", " : "", c.candidates[i].cell("lr"), ": ", study::percent(c.candidates[i].number("best_validation_accuracy")));
    rows.push_back({message(c.batch), study::optimizer_label(c.optimizer), chosen.cell("lr"), chosen.cell("weight_decay"),
                    chosen.cell("accumulation"), chosen.cell("steps"), searched.empty() ? "scaled from stage 3" : searched,
                    chosen.cell("status"), study::percent(chosen.number("best_validation_accuracy")),
                    study::test_evidence_summary(c.seeds)});
  }
  md << study::markdown_table({"batch", "optimizer", "lr", "weight decay", "micro-batches", "steps", "lr search (lr: validation %)",
                               "status", "validation acc %", "test acc % (mean, range)"},
                              rows)
     << '\n';
  // What the reader should know about the numbers above, from them.
  const double chance = 1.0 / static_cast<double>(prepared.info.classes);
  for (const Cell& c : cells) {
    const Row& chosen = c.candidates[c.chosen];
    if (c.optimizer == "lars") md << study::edge_note(message("At batch ", c.batch, " LARS's chosen lr"), chosen.number("lr"), config.scale.lars_lrs);
    if (c.optimizer == "lamb") md << study::edge_note(message("At batch ", c.batch, " LAMB's chosen lr"), chosen.number("lr"), config.scale.lamb_lrs);
    study::Evidence e{"", {}};
    for (const Row& r : c.seeds) e.values.push_back(study::test_accuracy(r));
    if (std::isfinite(e.mean()) && e.mean() < 1.5 * chance)
      md << study::optimizer_label(c.optimizer) << " at batch " << c.batch << " (lr " << chosen.cell("lr") << ") stays near chance ("
         << study::percent(e.mean()) << "%, chance " << study::percent(chance) << "%): it did not train in " << chosen.cell("steps")
         << " steps at that lr. ";
    else if (!std::isfinite(e.mean()))
      md << study::optimizer_label(c.optimizer) << " at batch " << c.batch << " has no finished run (" << chosen.cell("status") << "). ";
  }
  md << "\n\n### Findings\n\n"
     << study::findings_table(findings) << "\nPlot: accuracy_vs_batch.png.\n";
  distopt::io::write_text(results / "table.md", md.str());
  std::cout << '\n' << md.str();
  std::printf("stage4_large_batch: wall time %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

}  // namespace

int study_stages::stage4_large_batch(int argc, char** argv) {
  study_cli::Flags flags;
  CLI::App app{"Study stage 4: SGDM, AdamW (lr scaled from stage 3), LARS and LAMB (lr searched) at every batch size of the scale under "
               "warmup + poly(2), at least min_steps steps each; resumable; writes <results>/stage4_large_batch/"};
  flags.add(app);
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  return study_cli::run_stage(flags, "stage4_large_batch", [&](study::Work& work) { run(flags.config, work); });
}
