// Stage 6 of the study: SlowMo (Wang et al. 2020) at the K, H stage 5 compares methods at
// (Scale::compare_workers, Scale::compare_steps). The workers' average becomes a slow outer step
// with slow learning rate alpha and slow momentum beta: a grid over the scale's alphas x betas
// (inner buffers maintained) at the first seed, the best setting by best validation accuracy run
// with the remaining seeds, and the other inner-buffer strategies (reset, average) at it. The
// references are stage 5's runs (LocalSGD at the same K, H, synchronous SGD at K x B, the
// one-worker batch-B run), found in its folders by their stamps, or run here when stage 5 has not
// run them for this configuration. Same inner optimizer, lr rule, epochs and test rule (the final
// model) as stage 5, so every difference is the outer step's.
//
//   stage6_slowmo [--quick|--standard|--full|--smoke] [--local-lr scaled|unscaled] [--data DIR] [--results DIR] ...
//
// Writes <results>/stage6_slowmo/: metrics.jsonl, summary.csv, table.md, findings.csv and
// slowmo.png (tools/plot_bars.py); checkpoints and a result.csv per run in <work>/stage6_slowmo/<run>/.
// Like every stage, it spreads its runs over the rank groups of an MPI job (`mpirun -np 2 stage6_slowmo --threads 1`).
#include "stages.hpp"
#include "study_cli.hpp"

#include <distopt/core/error.hpp>
#include <distopt/local/communicator.hpp>
#include <distopt/local/outer.hpp>
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

constexpr const char* stage_name = "stage6_slowmo";
constexpr const char* stage5_name = "stage5_localsgd";
constexpr std::size_t batch_size = study::local_batch_size;
const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};

/// Columns of summary.csv: the runs' own, and the role they play here.
std::vector<std::string> summary_header() {
  std::vector<std::string> h = study::local_result_header;
  h.insert(h.end(), {"kind", "source"});
  return h;
}

/// As in stage 5, so that its runs are found under the same names.
std::string seeded(const std::string& id, std::size_t i) { return i == 0 ? id : message(id, "_s", i); }

void stage(const study::Config& config, study::LrRule rule, study::Work& work) {
  const auto start = std::chrono::steady_clock::now();
  const bool root = work.root();
  const study::Scale& scale = config.scale;
  distopt::require(!scale.slowmo_alphas.empty() && !scale.slowmo_betas.empty(),
                   "Scale.slowmo_alphas and Scale.slowmo_betas must not be empty");
  distopt::require(scale.seeds > 0, "Scale.seeds must be positive");
  const std::size_t k = scale.compare_workers, h = scale.compare_steps;
  const fs::path results = config.results / stage_name;
  const fs::path work_dir = config.work / stage_name;
  const fs::path stage5_work = config.work / stage5_name;
  if (root) fs::create_directories(results);

  const distopt::data::PreparedData prepared = study::prepare_data(config, work.world());
  distopt::require(k <= prepared.train.size(), "K = ", k, " workers for ", prepared.train.size(), " training images");
  const study::SgdmSetting inner = study::stage3_best_sgdm(config, work.world());
  const std::size_t epochs = scale.scaled(scale.epochs_local);
  if (root) {
    std::printf("SlowMo at K = %zu workers, H = %zu local steps\n", k, h);
    study::print_local_setup(prepared, inner, rule);
  }
  const study::LocalRuns ctx{config, prepared, distopt::data::Normalizer(prepared.stats), inner, epochs, results / "metrics.jsonl",
                             /*width=*/28};

  // The first work list: the references (stage 5's LocalSGD cell, synchronous baseline and
  // batch-B run, looked up in stage 5's folders first) and the SlowMo grid at the first seed.
  std::vector<study::LocalJob> jobs;
  const auto add = [&](const study::LocalSpec& s, bool from_stage5) {
    jobs.push_back({.spec = s, .folder = work_dir / s.id, .earlier = from_stage5 ? std::vector<fs::path>{stage5_work / s.id}
                                                                                : std::vector<fs::path>{}});
    return jobs.size() - 1;
  };
  std::vector<std::size_t> local_jobs, sync_jobs, single_jobs;
  for (std::size_t i = 0; i < scale.seeds; ++i)
    local_jobs.push_back(add({.id = seeded(message("K", k, "_H", h), i), .k = k, .h = h, .seed = config.seed_of(i), .rule = rule}, true));
  for (std::size_t i = 0; i < scale.seeds; ++i)
    sync_jobs.push_back(add({.id = seeded(message("K", k, "_H1"), i), .k = k, .h = 1, .seed = config.seed_of(i), .rule = rule}, true));
  for (std::size_t i = 0; i < scale.seeds; ++i)
    single_jobs.push_back(add({.id = seeded(message("single_B", batch_size), i), .k = 1, .h = 1, .seed = config.seed_of(i),
                               .rule = study::LrRule::unscaled},
                              true));
  const auto slowmo_spec = [&](double alpha, double beta, local::InnerBuffers buffers, std::size_t i) {
    return study::LocalSpec{.id = seeded(message("slowmo_a", exact(alpha), "_b", exact(beta), "_", study::buffers_name(buffers)), i),
                            .k = k, .h = h, .seed = config.seed_of(i), .rule = rule,
                            .slowmo = local::SlowMoOptions{.alpha = alpha, .beta = beta}, .buffers = buffers};
  };
  // SlowMo(1, 0) with maintained buffers is LocalSGD bit for bit (outer.hpp): not run twice.
  const auto is_alias = [](const study::LocalSpec& s) {
    return s.slowmo->alpha == 1.0 && s.slowmo->beta == 0.0 && s.buffers == local::InnerBuffers::maintain;
  };
  constexpr std::size_t none = static_cast<std::size_t>(-1);
  std::vector<study::LocalSpec> grid_specs;
  std::vector<std::size_t> grid_jobs;
  std::vector<std::pair<double, double>> settings;
  for (const double alpha : scale.slowmo_alphas)
    for (const double beta : scale.slowmo_betas) {
      grid_specs.push_back(slowmo_spec(alpha, beta, local::InnerBuffers::maintain, 0));
      grid_jobs.push_back(is_alias(grid_specs.back()) ? none : add(grid_specs.back(), false));
      settings.emplace_back(alpha, beta);
    }
  const std::vector<Row> first = ctx.run_all(work, jobs);
  const auto rows_of = [&](const std::vector<Row>& from, const std::vector<std::size_t>& js, const std::string& kind) {
    std::vector<Row> out;
    for (const std::size_t j : js) {
      out.push_back(from[j]);
      out.back()["kind"] = kind;
    }
    return out;
  };
  const std::vector<Row> local_rows = rows_of(first, local_jobs, "localsgd"), sync_rows = rows_of(first, sync_jobs, "sync"),
                         single_rows = rows_of(first, single_jobs, "single");
  const auto slowmo_row = [&](const study::LocalSpec& s, const std::vector<Row>& from, std::size_t j, std::size_t seed_index) {
    if (j != none) {
      Row row = from[j];
      row["kind"] = "slowmo";
      return row;
    }
    Row row = local_rows[seed_index];
    row.set({{"run", s.id}, {"outer", "slowmo"}, {"alpha", exact(s.slowmo->alpha)}, {"beta", exact(s.slowmo->beta)}, {"kind", "alias"},
             {"source", message("= ", local_rows[seed_index].cell("run"), " (SlowMo alpha 1, beta 0 is LocalSGD bit for bit)")}});
    return row;
  };
  std::vector<Row> grid;
  for (std::size_t g = 0; g < grid_specs.size(); ++g) grid.push_back(slowmo_row(grid_specs[g], first, grid_jobs[g], 0));

  // The best setting by best validation accuracy (the test set only reports); every rank has the
  // rows, so every rank picks the same.
  std::size_t best = grid.size();
  for (std::size_t i = 0; i < grid.size(); ++i) {
    if (!study::has_status(grid[i], train::Status::completed)) continue;
    const double v = grid[i].number("best_validation_accuracy");
    if (!std::isnan(v) && (best == grid.size() || v > grid[best].number("best_validation_accuracy"))) best = i;
  }
  const bool none_completed = best == grid.size();
  if (none_completed) best = 0;  // the first setting stands in, so the table keeps its shape; said below
  const auto [best_alpha, best_beta] = settings[best];

  // The second work list: the best setting's further seeds and the other inner-buffer strategies.
  jobs.clear();
  std::vector<std::pair<study::LocalSpec, std::size_t>> second_specs;  ///< with their seed's index
  for (std::size_t i = 1; i < scale.seeds; ++i)
    second_specs.emplace_back(slowmo_spec(best_alpha, best_beta, local::InnerBuffers::maintain, i), i);
  second_specs.emplace_back(slowmo_spec(best_alpha, best_beta, local::InnerBuffers::reset, 0), 0);
  second_specs.emplace_back(slowmo_spec(best_alpha, best_beta, local::InnerBuffers::average, 0), 0);
  std::vector<std::size_t> second_jobs;
  for (const auto& spec : second_specs) second_jobs.push_back(is_alias(spec.first) ? none : add(spec.first, false));
  const std::vector<Row> second = ctx.run_all(work, jobs);
  if (!root) return;  // the rest is rank 0's: tables and plots

  std::vector<Row> slowmo = grid;  // every SlowMo run (or alias): the grid, the further seeds, reset, average
  for (std::size_t j = 0; j < second_specs.size(); ++j)
    slowmo.push_back(slowmo_row(second_specs[j].first, second, second_jobs[j], second_specs[j].second));
  std::vector<Row> best_rows{grid[best]};
  for (std::size_t i = 1; i < scale.seeds; ++i) best_rows.push_back(slowmo[grid.size() + i - 1]);
  const std::vector<Row> strategies = {slowmo[slowmo.size() - 2], grid[best], slowmo.back()};

  std::vector<Row> rows = slowmo;
  for (const auto* group : {&local_rows, &sync_rows, &single_rows}) rows.insert(rows.end(), group->begin(), group->end());
  study::write_rows(results / "summary.csv", summary_header(), rows);

  // The finding: Wang et al.'s claim, over the seeds.
  const std::string best_name = message("SlowMo alpha ", exact(best_alpha), ", beta ", exact(best_beta), ", buffers maintained");
  const std::string cost = message(study::rounds_cell(best_rows), " rounds against ", study::rounds_cell(local_rows));
  std::vector<study::Finding> findings = {
      {.claim = "SlowMo with beta > 0 does better than LocalSGD at the same K, H (Wang et al. 2020)",
       .kind = study::Claim::better,
       .a = study::test_evidence(message(best_name, " (best validation of the alpha x beta grid), K = ", k, ", H = ", h), best_rows),
       .b = study::test_evidence(message("LocalSGD, K = ", k, ", H = ", h, " (stage 5's runs)"), local_rows),
       .note = best_beta > 0.0 ? cost
                               : message(cost, "; the best-validated setting has beta = 0, so this does not test beta > 0"),
       .caveat = message("the alpha x beta grid was searched with seed 0 and ", study::rounds_cell(best_rows),
                         " rounds; slow momentum averages over rounds, and Wang et al. run thousands")}};
  for (auto& f : findings) f.test_images = prepared.test.size();
  study::write_findings(results / "findings.csv", findings);

  // Tables.
  const auto rounds_of = [](const Row& r) { return study::has_status(r, train::Status::skipped) ? "" : r.cell("rounds"); };
  std::vector<std::vector<std::string>> run_rows;
  for (const Row& r : slowmo)
    run_rows.push_back({r.cell("run"), r.cell("alpha"), r.cell("beta"), r.cell("inner_buffers"), r.cell("seed"), r.cell("status"),
                        r.cell("steps"), rounds_of(r), study::percent(r.number("test_accuracy")),
                        study::percent(r.number("best_validation_accuracy")), format_number(r.number("bytes_per_worker") / 1e6, 4),
                        format_number(r.number("seconds"), 4), r.cell("kind") == "alias" ? r.cell("source") : ""});
  const std::string run_table = study::markdown_table(
      {"run", "alpha", "beta", "inner buffers", "seed", "status", "steps per worker", "rounds", "test %", "best validation %",
       "MB sent per worker", "wall s", "note"},
      run_rows);

  std::vector<std::vector<std::string>> strategy_rows;
  for (const Row& r : strategies)
    strategy_rows.push_back({r.cell("inner_buffers"), r.cell("status"), study::percent(r.number("test_accuracy")),
                             study::percent(r.number("best_validation_accuracy")), rounds_of(r),
                             format_number(r.number("bytes_per_worker") / 1e6, 4), format_number(r.number("seconds"), 4)});
  const std::string strategy_table = study::markdown_table(
      {"inner buffers", "status", "test %", "best validation %", "rounds", "MB sent per worker", "wall s"}, strategy_rows);

  const auto compare_line = [](const std::string& name, const std::vector<Row>& rs) {
    std::string sources;
    for (const Row& r : rs) sources += (sources.empty() ? "" : "; ") + r.cell("source");
    return std::vector<std::string>{name, rs.front().cell("K"), rs.front().cell("H"), study::rounds_cell(rs),
                                    study::over_seeds(rs, "test_accuracy"), study::over_seeds(rs, "best_validation_accuracy"),
                                    sources};
  };
  const std::string compare_table = study::markdown_table(
      {"method", "K", "H", "rounds", "test % (mean, range)", "best validation % (mean, range)", "runs from"},
      {compare_line(message("SlowMo best (alpha ", exact(best_alpha), ", beta ", exact(best_beta), ", maintain)"), best_rows),
       compare_line(message("LocalSGD, H = ", h), local_rows),
       compare_line(message("synchronous SGD, global batch K x B = ", k * batch_size), sync_rows),
       compare_line(message("batch-B run (1 worker, batch ", batch_size, ", unscaled lr)"), single_rows)});

  std::ostringstream md;
  md << "## Stage 6: SlowMo on LocalSGD (K = " << k << ", H = " << h << ")\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << ". Model: " << study::model_label(prepared.info)
     << ", augmentation " << study::augmentation_label(study::augmentation_for(prepared.info)) << ".\n\n"
     << "Inner optimizer SGDM lr_B " << exact(inner.lr) << ", momentum " << exact(inner.momentum) << ", weight decay "
     << exact(inner.weight_decay) << " (" << inner.source << "); batch B = " << batch_size << " per worker; lr rule "
     << study::lr_rule_label(rule) << " (the one-worker batch-B run: unscaled); SlowMo's gamma is the inner lr of each "
     << "round's last step. " << epochs << " epochs for every run; IID shards. Outer step after the exact average x_avg "
     << "(Wang et al. 2020, Algorithm 1): u <- beta u + (x - x_avg) / gamma, x <- x - alpha gamma u. Test rule: the final "
     << "model on the test set, for every run; best validation is the best of the per-epoch validation accuracies.\n\n"
     << "### Every SlowMo run\n\n"
     << run_table << "\n"
     << (none_completed ? "No SlowMo run of the grid completed: the first setting stands in for the best.\n\n"
                        : message("Best setting by best validation accuracy at seed ", config.seed_of(0), ": alpha ",
                                  exact(best_alpha), ", beta ", exact(best_beta), "; run with ", scale.seeds, " seed(s).\n\n"))
     << "### Inner buffer strategies at alpha " << exact(best_alpha) << ", beta " << exact(best_beta) << ", seed "
     << config.seed_of(0) << "\n\n"
     << strategy_table << "\n### SlowMo against LocalSGD, synchronous SGD and the batch-B run (mean, range over seeds)\n\n"
     << compare_table << "\n### Findings\n\n"
     << study::findings_table(findings) << "\n";
  distopt::io::write_text(results / "table.md", md.str());
  std::printf("\nSlowMo runs (K = %zu, H = %zu)\n%s\nInner buffers at alpha %s, beta %s\n%s\n%s\n%s\n", k, h, run_table.c_str(),
              exact(best_alpha).c_str(), exact(best_beta).c_str(), strategy_table.c_str(), compare_table.c_str(),
              study::findings_table(findings).c_str());

  plots.require_ok("plot_bars.py", {(results / "summary.csv").string(), "--label", "run", "--value", "test_accuracy", "--percent",
                                    "--color-by", "kind", "-o", (results / "slowmo.png").string(), "--title",
                                    message("SlowMo vs LocalSGD, synchronous SGD and the batch-B run (K = ", k, ", H = ", h,
                                            "): test accuracy of the final model (%)\n", config.data_label())});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: results in %s; wall time %.1f s\n", stage_name, results.c_str(), seconds);
}

}  // namespace

int study_stages::stage6_slowmo(int argc, char** argv) {
  CLI::App app{"Stage 6 of the study: SlowMo (slow learning rate alpha, slow momentum beta) at stage 5's compared K, H: a "
               "grid over alpha x beta, the best over seeds, the inner-buffer strategies, against stage 5's LocalSGD, "
               "synchronous SGD and batch-B runs"};
  app.footer("Output: <results>/stage6_slowmo/{metrics.jsonl, summary.csv, table.md, findings.csv, slowmo.png}; checkpoints\n"
             "and per-run result.csv in <work>/stage6_slowmo/<run>/ (a re-run reuses finished runs and resumes cut ones).");
  study_cli::Flags flags;
  flags.add(app);
  std::string rule = "unscaled";
  app.add_option("--local-lr", rule,
                 "Inner lr of a K-worker run, as given to stage 5 (its runs are shared only when this matches): 'scaled' "
                 "(K x lr_B with 10% warmup from 0.1x) or 'unscaled' (lr_B)")
      ->check(CLI::IsMember({"scaled", "unscaled"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  const study::LrRule lr_rule = study::parse_lr_rule(rule);
  return study_cli::run_stage(flags, stage_name, [&](study::Work& work) { stage(flags.config, lr_rule, work); });
}
