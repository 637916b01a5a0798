// Stage 5 of the study: LocalSGD (Lin et al. 2020). K workers on IID shards each take H local
// SGDM steps (batch B = 64 each) between averages, for every K x H of the scale's grids, and at
// K = compare_workers, H = compare_steps against the methods Lin et al. compare it with, each over
// the scale's seeds: synchronous SGD at the global batch K x B (LocalSGD with H = 1), the course's
// batch-B run on one worker at the same sample budget, and post-local SGD (H = 1 for the first
// half of the steps, then H). Every run is a LocalTrainer run over the same epochs, tested the
// same way (its final model), so the methods differ only in how they communicate.
//
//   stage5_localsgd [--quick|--standard|--full|--smoke] [--local-lr scaled|unscaled] [--data DIR] [--results DIR]
//                   [--work DIR] [--seed N] [--threads N] [--force]
//
// Writes <results>/stage5_localsgd/: metrics.jsonl (every run's records, labelled `run`),
// summary.csv (one row per run; `grid` says which are the K x H grid's), table.md, findings.csv
// (the claims of Lin et al. 2020 these runs test), heatmap_accuracy.png and heatmap_rounds.png
// (tools/plot_heatmap.py) and best.json (the grid cell with the best validation accuracy).
// Checkpoints and a result.csv per run go to <work>/stage5_localsgd/<run>/: a re-run reuses
// finished runs and resumes a cut one from its last epoch; stage 6 reuses the runs it shares.
//
// Under an MPI launcher (built with MPI) the runs are spread over the job's rank groups
// (study::Work): `mpirun -np 4 stage5_localsgd --threads 1` trains four runs at a time, and
// `--ranks-per-run 2` spreads each cell's K workers over two ranks; rank 0 alone writes files
// and draws the tables.
#include "stages.hpp"
#include "study_cli.hpp"

#include <distopt/core/error.hpp>
#include <distopt/local/communicator.hpp>
#include "common/findings.hpp"
#include "common/local_runs.hpp"
#include "common/plots.hpp"
#include "common/runs.hpp"
#include "common/study.hpp"
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
using study::Row;
using distopt::io::format_number;

constexpr const char* stage_name = "stage5_localsgd";
constexpr std::size_t batch_size = study::local_batch_size;
const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};

/// Columns of summary.csv: the runs' own, and the role they play here.
std::vector<std::string> summary_header() {
  std::vector<std::string> h = study::local_result_header;
  h.insert(h.end(), {"method", "grid", "source"});
  return h;
}

/// The id of the i-th seed's run: the first seed's is the plain id, so the grid cell at the
/// compared K, H is the first seed of the compared LocalSGD runs.
std::string seeded(const std::string& id, std::size_t i) { return i == 0 ? id : message(id, "_s", i); }

/// A grid cell of the test table: the accuracy, its status when it did not complete, or why it
/// was not run.
std::string grid_cell(const Row& r, std::size_t min_rounds) {
  if (study::has_status(r, train::Status::skipped)) return message("— (", r.cell("planned_rounds"), " rounds < ", min_rounds, ")");
  return study::percent_cell(r, "test_accuracy");
}

std::string megabytes(const Row& r) { return format_number(r.number("bytes_per_worker") / 1e6, 4); }

void stage(const study::Config& config, study::LrRule rule, study::Work& work) {
  const auto start = std::chrono::steady_clock::now();
  const bool root = work.root();
  const study::Scale& scale = config.scale;
  distopt::require(!scale.workers.empty() && !scale.local_steps.empty(), "Scale.workers and Scale.local_steps must not be empty");
  distopt::require(scale.seeds > 0, "Scale.seeds must be positive");
  const fs::path results = config.results / stage_name;
  const fs::path work_dir = config.work / stage_name;
  if (root) fs::create_directories(results);

  const distopt::data::PreparedData prepared = study::prepare_data(config, work.world());
  const study::SgdmSetting inner = study::stage3_best_sgdm(config, work.world());
  const std::size_t epochs = scale.scaled(scale.epochs_local);
  if (root) study::print_local_setup(prepared, inner, rule);
  const study::LocalRuns ctx{config, prepared, distopt::data::Normalizer(prepared.stats), inner, epochs, results / "metrics.jsonl",
                             /*width=*/18};

  // Every run once, in one work list; a run serving two roles (the compared grid cell) is listed
  // once and marked as part of the grid.
  std::vector<study::LocalJob> jobs;
  std::vector<std::pair<std::string, bool>> roles;  ///< method and grid membership of each job
  const auto add = [&](const study::LocalSpec& s, const std::string& method, bool in_grid) -> std::size_t {
    for (std::size_t j = 0; j < jobs.size(); ++j)
      if (jobs[j].spec.id == s.id) {
        roles[j].second = roles[j].second || in_grid;
        return j;
      }
    jobs.push_back({.spec = s, .folder = work_dir / s.id});
    roles.emplace_back(method, in_grid);
    return jobs.size() - 1;
  };
  const auto localsgd = [&](std::size_t k, std::size_t h, std::size_t i) {
    return study::LocalSpec{.id = seeded(message("K", k, "_H", h), i), .k = k, .h = h, .seed = config.seed_of(i), .rule = rule};
  };
  const std::size_t kc = scale.compare_workers, hc = scale.compare_steps;

  // The grid at the first seed. The compared cell always runs: the findings need it.
  std::map<std::pair<std::size_t, std::size_t>, std::size_t> grid_jobs;
  for (const std::size_t k : scale.workers)
    for (const std::size_t h : scale.local_steps) {
      study::LocalSpec s = localsgd(k, h, 0);
      s.min_rounds = k == kc && h == hc ? 0 : scale.min_rounds;
      grid_jobs[{k, h}] = add(s, "localsgd", true);
    }
  // The compared methods at K = kc over the seeds, and the one-worker batch-B runs (unscaled
  // whatever --local-lr says: lr_B is what was tuned for batch B).
  std::vector<std::size_t> local_jobs, sync_jobs, post_jobs, single_jobs;
  for (std::size_t i = 0; i < scale.seeds; ++i) local_jobs.push_back(add(localsgd(kc, hc, i), "localsgd", false));
  for (std::size_t i = 0; i < scale.seeds; ++i) sync_jobs.push_back(add(localsgd(kc, 1, i), "sync", false));
  for (std::size_t i = 0; i < scale.seeds; ++i) {
    study::LocalSpec s = localsgd(kc, hc, i);
    s.id = seeded(message("postlocal_K", kc, "_H", hc), i);
    s.post_local = true;
    post_jobs.push_back(add(s, "postlocal", false));
  }
  for (std::size_t i = 0; i < scale.seeds; ++i)
    single_jobs.push_back(add({.id = seeded(message("single_B", batch_size), i), .k = 1, .h = 1, .seed = config.seed_of(i),
                               .rule = study::LrRule::unscaled},
                              "single", false));
  std::vector<Row> rows = ctx.run_all(work, jobs);
  if (!root) return;  // the rest is rank 0's: tables and plots
  for (std::size_t j = 0; j < rows.size(); ++j) {
    rows[j]["method"] = roles[j].first;
    rows[j]["grid"] = roles[j].second ? "yes" : "no";
  }
  std::map<std::pair<std::size_t, std::size_t>, Row> grid;
  for (const auto& [cell, j] : grid_jobs) grid[cell] = rows[j];
  const auto rows_of = [&](const std::vector<std::size_t>& js) {
    std::vector<Row> out;
    for (const std::size_t j : js) out.push_back(rows[j]);
    return out;
  };
  const std::vector<Row> local_rows = rows_of(local_jobs), sync_rows = rows_of(sync_jobs), post_rows = rows_of(post_jobs),
                         single_rows = rows_of(single_jobs);
  study::write_rows(results / "summary.csv", summary_header(), rows);

  // The best grid cell by best validation accuracy (ties: fewer rounds); the test set only reports.
  const Row* best = nullptr;
  for (const auto& cell : grid) {
    const Row& r = cell.second;
    if (!study::has_status(r, train::Status::completed)) continue;
    const double v = r.number("best_validation_accuracy");
    if (std::isnan(v)) continue;
    const double b = best == nullptr ? -1.0 : best->number("best_validation_accuracy");
    if (best == nullptr || v > b || (v == b && r.number("rounds") < best->number("rounds"))) best = &r;
  }

  // Findings: the claims of Lin et al. 2020 these runs test, over the seeds.
  const std::string at = message("K = ", kc, ", B = ", batch_size, " per worker");
  const study::Evidence local_e = study::test_evidence(message("LocalSGD, H = ", hc, ", ", at), local_rows);
  const study::Evidence sync_e = study::test_evidence(message("synchronous SGD at global batch ", kc * batch_size, " (H = 1), ", at), sync_rows);
  const study::Evidence post_e = study::test_evidence(message("post-local SGD, H = ", hc, " after half of the steps, ", at), post_rows);
  std::vector<study::Finding> findings = {
      {.claim = "LocalSGD with H local steps matches synchronous SGD at global batch K x B with H times fewer rounds (Lin et al. 2020)",
       .kind = study::Claim::matches,
       .a = local_e,
       .b = sync_e,
       .note = message(study::rounds_cell(local_rows), " rounds against ", study::rounds_cell(sync_rows)),
       .caveat = message("the ", kc, " workers' models drift apart over ", hc, " local steps between averages, and ", epochs,
                         " epochs give ", study::rounds_cell(local_rows), " rounds, where Lin et al. train for hundreds of epochs")},
      {.claim = "Post-local SGD matches synchronous SGD at K x B (Lin et al. 2020)",
       .kind = study::Claim::matches,
       .a = post_e,
       .b = sync_e,
       .note = message(study::rounds_cell(post_rows), " rounds against ", study::rounds_cell(sync_rows))},
      {.claim = "Post-local SGD does better than LocalSGD from the start at the same K, H (Lin et al. 2020)",
       .kind = study::Claim::better,
       .a = post_e,
       .b = local_e,
       .note = message(study::rounds_cell(post_rows), " rounds against ", study::rounds_cell(local_rows))},
  };
  for (auto& f : findings) f.test_images = prepared.test.size();
  study::write_findings(results / "findings.csv", findings);

  // Tables.
  std::vector<std::string> grid_header = {"K \\ H"};
  for (const std::size_t h : scale.local_steps) grid_header.push_back(message("H = ", h));
  std::vector<std::vector<std::string>> accuracy_rows, rounds_rows;
  for (const std::size_t k : scale.workers) {
    std::vector<std::string> acc{message("K = ", k)}, rounds{message("K = ", k)};
    for (const std::size_t h : scale.local_steps) {
      const Row& r = grid.at({k, h});
      acc.push_back(grid_cell(r, scale.min_rounds));
      rounds.push_back(study::has_status(r, train::Status::skipped) ? message("(", r.cell("planned_rounds"), ")") : r.cell("rounds"));
    }
    accuracy_rows.push_back(std::move(acc));
    rounds_rows.push_back(std::move(rounds));
  }
  const std::string accuracy_table = study::markdown_table(grid_header, accuracy_rows);
  const std::string rounds_table = study::markdown_table(grid_header, rounds_rows);

  const auto compare_line = [&](const std::string& name, const std::vector<Row>& rs) {
    return std::vector<std::string>{name, rs.front().cell("K"), rs.front().cell("H"), rs.front().cell("lr_rule"),
                                    exact(rs.front().number("peak_lr")), study::rounds_cell(rs),
                                    study::over_seeds(rs, "test_accuracy"), study::over_seeds(rs, "best_validation_accuracy")};
  };
  const std::string compare_table = study::markdown_table(
      {"method", "K", "H", "lr rule", "peak lr", "rounds", "test % (mean, range)", "best validation % (mean, range)"},
      {compare_line(message("batch-B run (1 worker, batch ", batch_size, ")"), single_rows),
       compare_line(message("synchronous SGD, global batch K x B = ", kc * batch_size), sync_rows),
       compare_line(message("LocalSGD, H = ", hc), local_rows),
       compare_line(message("post-local SGD (H = 1 to step ", post_rows.front().cell("switch_step"), ", then ", hc, ")"), post_rows)});

  std::vector<std::vector<std::string>> run_rows;
  for (const Row& r : rows) {
    const bool skipped = study::has_status(r, train::Status::skipped);
    run_rows.push_back({r.cell("run"), r.cell("method"), r.cell("K"), r.cell("H"), r.cell("seed"), exact(r.number("peak_lr")),
                        r.cell("status"), r.cell("steps"),
                        skipped ? message("(", r.cell("planned_rounds"), ")") : study::rounds_cell({r}),
                        skipped ? "not run" : study::percent(r.number("test_accuracy")),
                        skipped ? "" : study::percent(r.number("best_validation_accuracy")),
                        skipped ? "" : megabytes(r), skipped ? "" : format_number(r.number("seconds"), 4)});
  }
  const std::string run_table = study::markdown_table(
      {"run", "method", "K", "H", "seed", "peak lr", "status", "steps per worker", "rounds", "test %", "best validation %",
       "MB sent per worker", "wall s"},
      run_rows);

  const local::NetworkModel network{};
  std::ostringstream md;
  md << "## Stage 5: LocalSGD, K workers x H local steps\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << ". Model: " << study::model_label(prepared.info)
     << ", augmentation " << study::augmentation_label(study::augmentation_for(prepared.info)) << ".\n\n"
     << "Inner optimizer SGDM lr_B " << exact(inner.lr) << ", momentum " << exact(inner.momentum) << ", weight decay "
     << exact(inner.weight_decay) << " (" << inner.source << "); batch B = " << batch_size << " per worker; lr rule "
     << study::lr_rule_label(rule) << " (the one-worker batch-B run: unscaled). " << epochs << " epochs for every run, each one "
     << "pass over the " << prepared.train.size() << " training images across the K workers (the same sample budget for "
     << "every method); IID shards; inner momentum buffers maintained across rounds. Test rule: the final model on the "
     << "test set, for every run; best validation is the best of the per-epoch validation accuracies, reported, never "
     << "used to pick weights.\n\n"
     << "### Test accuracy (%) of the K x H grid, seed " << config.seed_of(0) << "\n\n"
     << accuracy_table << "\nA cell with fewer than " << scale.min_rounds << " rounds is not run: it would hardly average at all.\n\n"
     << "### Communication rounds (all-reduces of the model; planned rounds of cells not run in brackets)\n\n"
     << rounds_table << "\n### Methods at K = " << kc << " (" << scale.seeds << " seed(s): " << config.seed_of(0) << " to "
     << config.seed_of(scale.seeds - 1) << ")\n\n"
     << compare_table << "\n### Findings\n\n"
     << study::findings_table(findings) << "\n### Every run\n\n"
     << "Bytes: a ring all-reduce of the float32 model per round, each worker sending 2 (K - 1) / K of it (library "
        "accounting, local/communicator.hpp; modelled at "
     << format_number(network.latency * 1e6, 4) << " us per message and " << format_number(network.bandwidth * 8 / 1e9, 4)
     << " Gbit/s links in summary.csv).\n\n"
     << run_table << "\n";
  if (best != nullptr)
    md << "Best grid cell by best validation accuracy (ties: fewer rounds): K = " << best->cell("K") << ", H = " << best->cell("H")
       << " (best.json).\n";
  distopt::io::write_text(results / "table.md", md.str());
  if (best != nullptr)
    distopt::io::write_text(results / "best.json",
                      message("{\"K\": ", best->cell("K"), ", \"H\": ", best->cell("H"), ", \"best_validation_accuracy\": ",
                              best->cell("best_validation_accuracy"), ", \"test_accuracy\": ", best->cell("test_accuracy"),
                              ", \"rounds\": ", best->cell("rounds"), "}\n"));

  std::printf("\nTest accuracy (%%), LocalSGD K x H\n%s\nMethods at K = %zu\n%s\n%s\n", accuracy_table.c_str(), kc,
              compare_table.c_str(), study::findings_table(findings).c_str());

  const std::string csv = (results / "summary.csv").string();
  plots.require_ok("plot_heatmap.py", {csv, "--where", "grid=yes", "--rows", "K", "--cols", "H", "--value", "test_accuracy",
                                       "--percent", "-o", (results / "heatmap_accuracy.png").string(), "--title",
                                       message("LocalSGD test accuracy (%), K workers x H local steps, seed ", config.seed_of(0),
                                               " (grey: not run, < ", scale.min_rounds, " rounds)\n", config.data_label())});
  plots.require_ok("plot_heatmap.py", {csv, "--where", "grid=yes", "--rows", "K", "--cols", "H", "--value", "rounds", "-o",
                                       (results / "heatmap_rounds.png").string(), "--title",
                                       message("LocalSGD communication rounds, K workers x H local steps\n", config.data_label())});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: results in %s; wall time %.1f s\n", stage_name, results.c_str(), seconds);
}

}  // namespace

int study_stages::stage5_localsgd(int argc, char** argv) {
  CLI::App app{"Stage 5 of the study: LocalSGD with K workers on IID shards and H local steps over the scale's K x H grid, "
               "and at one K against synchronous SGD at K x B, the batch-B run and post-local SGD, over seeds"};
  app.footer("Output: <results>/stage5_localsgd/{metrics.jsonl, summary.csv, table.md, findings.csv, heatmap_accuracy.png, "
             "heatmap_rounds.png, best.json};\ncheckpoints and per-run result.csv in <work>/stage5_localsgd/<run>/ "
             "(a re-run reuses finished runs and resumes cut ones).");
  study_cli::Flags flags;
  flags.add(app);
  std::string rule = "unscaled";
  app.add_option("--local-lr", rule,
                 "Inner lr of a K-worker run: 'scaled' (K x lr_B with 10% warmup from 0.1x, Goyal et al. 2017) or 'unscaled' (lr_B)")
      ->check(CLI::IsMember({"scaled", "unscaled"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  const study::LrRule lr_rule = study::parse_lr_rule(rule);
  return study_cli::run_stage(flags, stage_name, [&](study::Work& work) { stage(flags.config, lr_rule, work); });
}
