// Stage 5 of the study: LocalSGD (Lin et al. 2020). K workers on IID shards each take H local
// SGDM steps between averages, for every K x H of the scale's grids, each cell trained on the
// same number of sample-gradients as the centralized run of stage 3 (one LocalTrainer epoch is
// one pass over the training set across the K workers). A centralized SGDM run with the same
// optimizer, batch and epochs is the reference.
//
//   stage5_localsgd [--quick|--full] [--data DIR] [--results DIR] [--work DIR] [--seed N] [--threads N] [--force]
//
// Writes <results>/stage5_localsgd/: metrics.jsonl (every run's records, labelled `run`),
// summary.csv (one row per run), table.md (K x H tables of test accuracy and communication),
// heatmap_accuracy.png and heatmap_rounds.png (tools/plot_heatmap.py) and best.json, the (K, H)
// with the best validation accuracy, which stage 6 (SlowMo) starts from. Checkpoints and a
// result.csv per run go to <work>/stage5_localsgd/<run>/: a re-run reuses finished runs and
// resumes a cut one from its last epoch.
//
// Under an MPI launcher the same program trains each cell across the ranks (built with MPI):
//   mpirun -np 2 stage5_localsgd --threads 1
// every rank hosts a block of the K workers; rank 0 alone reads and writes files, runs the
// centralized reference and draws the tables, in which the all-reduce time is measured over MPI.
#include "study_cli.hpp"

#include <distopt/core/error.hpp>
#include <distopt/local/communicator.hpp>
#include <distopt/local/outer.hpp>
#include <distopt/study/local_runs.hpp>
#include <distopt/study/plots.hpp>
#include <distopt/study/runs.hpp>
#include <distopt/study/study.hpp>
#include <distopt/train/metrics.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace study = distopt::study;
namespace train = distopt::train;
namespace local = distopt::local;
using distopt::message;
using study::exact;
using study::percent_cell;
using study::Row;
using study::signed_points;
using train::format_number;

constexpr const char* stage_name = "stage5_localsgd";
constexpr std::size_t batch_size = study::local_batch_size;  // per worker, as the centralized run of the study
const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};

/// LocalSGD with K workers and H local steps in <work>/stage5_localsgd/K<k>_H<h>, or its earlier result.
template <class Comm>
Row run_localsgd(const study::LocalRuns& runs, std::size_t k, std::size_t h, Comm& comm) {
  const std::string id = message("K", k, "_H", h);
  return runs.run_local(id, runs.config.work / stage_name / id, study::localsgd_description(k, h), message("LocalSGD K=", k, " H=", h),
                        local::LocalSgd{}, k, h, local::InnerBuffers::maintain, comm);
}

const std::vector<std::string> summary_header = {
    "run", "K", "H", "lr", "momentum", "weight_decay", "batch_size", "status", "epochs", "steps", "validation_accuracy",
    "best_validation_accuracy", "best_epoch", "test_accuracy", "test_loss", "rounds", "bytes_per_worker", "modelled_seconds",
    "sync_seconds", "allreduce_seconds", "ranks", "seconds", "message"};

/// Saves the row beside the run's checkpoints: the marker that the run is finished.
void save_result(const study::LocalRuns& runs, const Row& row) {
  study::write_rows(runs.config.work / stage_name / row.cell("run") / "result.csv", summary_header, {row});
}

/// Mean of the finite values (NaN when none).
double mean_finite(const std::vector<double>& values) {
  double sum = 0;
  std::size_t n = 0;
  for (const double v : values)
    if (std::isfinite(v)) sum += v, ++n;
  return n == 0 ? std::nan("") : sum / static_cast<double>(n);
}

std::string megabytes(double bytes) { return format_number(bytes / 1e6, 4); }

/// A run's total seconds in `column` per communication round, in milliseconds.
std::string per_round_ms(const Row& r, const std::string& column) {
  return format_number(r.number(column) / r.number("rounds") * 1e3, 3);
}

template <class Comm>
void stage(const study::Config& config, Comm& comm) {
  const auto start = std::chrono::steady_clock::now();
  const bool root = comm.rank() == 0;
  const study::Scale& scale = config.scale;
  distopt::require(!scale.workers.empty() && !scale.local_steps.empty(), "Scale.workers and Scale.local_steps must not be empty");
  const fs::path results = config.results / stage_name;
  if (root) fs::create_directories(results);

  const distopt::data::PreparedData prepared = study::prepare_data(config, comm);
  const study::SgdmSetting inner = study::stage3_best_sgdm(config, comm);
  if (root) {
    std::printf("data: %zu train, %zu validation, %zu test images\n", prepared.train.size(), prepared.validation.size(),
                prepared.test.size());
    std::printf("inner optimizer: SGDM lr %s momentum %s weight decay %s, from %s\n", exact(inner.lr).c_str(),
                exact(inner.momentum).c_str(), exact(inner.weight_decay).c_str(), inner.source.c_str());
  }
  const study::LocalRuns ctx{config, prepared, distopt::data::Normalizer(prepared.stats), inner, scale.epochs_final,
                             root ? std::make_shared<train::JsonLinesSink>(results / "metrics.jsonl", /*append=*/true) : nullptr};

  // Every cell, then the reference: each saved as soon as it ends, so a cut stage loses one run at most.
  std::vector<Row> rows;
  std::map<std::pair<std::size_t, std::size_t>, Row> grid;
  for (const std::size_t k : scale.workers)
    for (const std::size_t h : scale.local_steps) {
      Row row = run_localsgd(ctx, k, h, comm);
      if (root) save_result(ctx, row);
      grid[{k, h}] = row;
      rows.push_back(std::move(row));
    }
  if (!root) return;  // the rest is rank 0's: the centralized reference, tables and plots
  Row central = ctx.run_centralized(config.work / stage_name / "centralized");
  save_result(ctx, central);
  rows.push_back(central);
  study::write_rows(results / "summary.csv", summary_header, rows);

  // The best cell by validation accuracy of the final model (the one tested): the test set only reports.
  const Row* best = nullptr;
  for (const Row& row : rows) {
    if (row.cell("run") == "centralized" || row.cell("status") != "completed") continue;
    const double v = row.number("validation_accuracy");
    if (std::isnan(v)) continue;
    if (best == nullptr || v > best->number("validation_accuracy") ||
        (v == best->number("validation_accuracy") && row.number("rounds") < best->number("rounds")))
      best = &row;
  }

  // Tables.
  std::vector<std::string> grid_header = {"K \\ H"};
  for (const std::size_t h : scale.local_steps) grid_header.push_back(message("H = ", h));
  std::vector<std::vector<std::string>> accuracy_rows, rounds_rows, cost_rows;
  for (const std::size_t k : scale.workers) {
    std::vector<std::string> acc{message("K = ", k)}, rounds{message("K = ", k)};
    for (const std::size_t h : scale.local_steps) {
      const Row& r = grid.at({k, h});
      acc.push_back(percent_cell(r, "test_accuracy"));
      rounds.push_back(r.cell("rounds"));
      cost_rows.push_back({message(k), message(h), r.cell("status"), study::percent(r.number("validation_accuracy")),
                           study::percent(r.number("test_accuracy")), r.cell("steps"), r.cell("rounds"),
                           megabytes(r.number("bytes_per_worker")), r.cell("ranks").empty() ? "1" : r.cell("ranks"),
                           per_round_ms(r, "modelled_seconds"), per_round_ms(r, "allreduce_seconds"),
                           per_round_ms(r, "sync_seconds"), format_number(r.number("seconds"), 4)});
    }
    accuracy_rows.push_back(std::move(acc));
    rounds_rows.push_back(std::move(rounds));
  }
  const std::string accuracy_table = study::markdown_table(grid_header, accuracy_rows);
  const std::string rounds_table = study::markdown_table(grid_header, rounds_rows);
  const std::string cost_table = study::markdown_table(
      {"K", "H", "status", "validation %", "test %", "steps per worker", "rounds", "MB sent per worker", "processes",
       "modelled all-reduce ms/round", "measured all-reduce ms/round", "measured sync ms/round", "wall s"},
      cost_rows);

  // Observations, from the numbers.
  const double central_test = central.number("test_accuracy");
  std::ostringstream notes;
  if (best != nullptr) {
    notes << "The best cell by validation accuracy is K = " << best->cell("K") << ", H = " << best->cell("H") << ": test "
          << study::percent(best->number("test_accuracy")) << "% against " << study::percent(central_test)
          << "% for the centralized run (" << signed_points(best->number("test_accuracy") - central_test)
          << " points), with " << best->cell("rounds") << " all-reduce rounds. ";
  } else {
    notes << "No LocalSGD cell completed with a validation accuracy. ";
  }
  const std::size_t h_first = scale.local_steps.front(), h_last = scale.local_steps.back();
  const std::size_t k_first = scale.workers.front(), k_last = scale.workers.back();
  if (h_first != h_last) {
    std::vector<double> delta, ratio;
    for (const std::size_t k : scale.workers) {
      delta.push_back(grid.at({k, h_last}).number("test_accuracy") - grid.at({k, h_first}).number("test_accuracy"));
      ratio.push_back(grid.at({k, h_first}).number("rounds") / grid.at({k, h_last}).number("rounds"));
    }
    notes << "From H = " << h_first << " to H = " << h_last << " test accuracy changes by " << signed_points(mean_finite(delta))
          << " points on average over K, for " << format_number(mean_finite(ratio), 3) << " times fewer rounds. ";
  }
  if (k_first != k_last) {
    std::vector<double> delta;
    for (const std::size_t h : scale.local_steps)
      delta.push_back(grid.at({k_last, h}).number("test_accuracy") - grid.at({k_first, h}).number("test_accuracy"));
    notes << "From K = " << k_first << " to K = " << k_last << " workers it changes by " << signed_points(mean_finite(delta))
          << " points on average over H.";
  }

  const local::NetworkModel network{};
  std::ostringstream md;
  md << "## Stage 5: LocalSGD, K workers x H local steps\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << "\n\n"
     << "Inner optimizer SGDM lr " << exact(inner.lr) << ", momentum " << exact(inner.momentum) << ", weight decay "
     << exact(inner.weight_decay) << " (" << inner.source << "); batch " << batch_size
     << " per worker; cosine schedule over the run's global steps; " << ctx.epochs
     << " epochs, each one pass over the " << prepared.train.size()
     << " training images across the K workers (the sample-gradients of the centralized run); IID shards; inner momentum "
        "buffers maintained across rounds. Validation after every epoch, test at the end (final model).\n\n"
     << "### Test accuracy (%)\n\n"
     << accuracy_table << "\nCentralized SGDM (run_training, batch " << batch_size << ", same schedule and epochs): test "
     << study::percent(central_test) << "% (validation " << study::percent(central.number("validation_accuracy"))
     << "%; run_training tests the weights of its best validation epoch, epoch " << central.cell("best_epoch") << " of "
     << central.cell("epochs") << ").\n\n"
     << "### Communication rounds (all-reduces of the model)\n\n"
     << rounds_table << "\n### Communication per run\n\n"
     << "Library accounting (local/communicator.hpp): a ring all-reduce of the float32 model per round, each worker sending "
        "2 (K - 1) / K of it; modelled time with "
     << format_number(network.latency * 1e6, 4) << " us latency per message and " << format_number(network.bandwidth * 8 / 1e9, 4)
     << " Gbit/s links. Measured, per round: the time inside the all-reduce, which sums the workers' double-precision "
        "partial sums across the processes (nothing to send in one process; under mpirun, among the ranks rather than "
        "the K workers, over whatever links MPI uses), and the whole synchronisation (summing the workers, the all-reduce "
        "and the outer step).\n\n"
     << cost_table << "\n";
  if (best != nullptr)
    md << "Best (K, H) for stage 6, by final validation accuracy (ties: fewer rounds): K = " << best->cell("K") << ", H = " << best->cell("H")
       << " (best.json).\n\n";
  md << notes.str() << "\n";
  study::write_text(results / "table.md", md.str());
  if (best != nullptr)
    study::write_text(results / "best.json",
                      message("{\"K\": ", best->cell("K"), ", \"H\": ", best->cell("H"), ", \"validation_accuracy\": ",
                              best->cell("validation_accuracy"), ", \"test_accuracy\": ", best->cell("test_accuracy"),
                              ", \"rounds\": ", best->cell("rounds"), "}\n"));

  std::printf("\nTest accuracy (%%), LocalSGD K x H; centralized %s%%\n%s\nCommunication rounds\n%s\n%s\n",
              study::percent(central_test).c_str(), accuracy_table.c_str(), rounds_table.c_str(), notes.str().c_str());

  const std::string csv = (results / "summary.csv").string();
  plots.require_ok("plot_heatmap.py", {csv, "--rows", "K", "--cols", "H", "--value", "test_accuracy", "--percent", "-o",
                               (results / "heatmap_accuracy.png").string(), "--title",
                               message("LocalSGD test accuracy (%), K workers x H local steps\n", config.data_label())});
  plots.require_ok("plot_heatmap.py", {csv, "--rows", "K", "--cols", "H", "--value", "rounds", "-o", (results / "heatmap_rounds.png").string(),
                               "--title", message("LocalSGD communication rounds, K workers x H local steps\n", config.data_label())});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: results in %s; wall time %.1f s\n", stage_name, results.c_str(), seconds);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Stage 5 of the study: LocalSGD with K workers on IID shards and H local steps, for every K x H of the "
               "scale's grids (same sample-gradients as the centralized run), against a centralized SGDM run"};
  app.footer("Output: <results>/stage5_localsgd/{metrics.jsonl, summary.csv, table.md, heatmap_accuracy.png, "
             "heatmap_rounds.png, best.json};\ncheckpoints and per-run result.csv in <work>/stage5_localsgd/<run>/ "
             "(a re-run reuses finished runs and resumes cut ones).");
  study_cli::Flags flags;
  flags.add(app);
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  return study_cli::run_local_stage(flags, stage_name, [&](auto& comm) { stage(flags.config, comm); });
}
