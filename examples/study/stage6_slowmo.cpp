// Stage 6 of the study: SlowMo (Wang et al. 2020) on the best LocalSGD setting of stage 5. The
// workers' average becomes a slow outer step with slow learning rate alpha and slow momentum beta;
// a grid over the scale's alphas x betas (inner buffers maintained), the three inner-buffer
// strategies (reset, maintain, average) at alpha 1, beta 0.5, and the references: LocalSGD at the
// same K, H (SlowMo alpha 1, beta 0 is LocalSGD bit for bit, so it is not run twice) and the
// centralized SGDM run, both taken from stage 5 when it ran them with this configuration.
//
//   stage6_slowmo [--quick|--full] [--workers K] [--local-steps H] [--data DIR] [--results DIR] [--work DIR] ...
//
// K and H: --workers/--local-steps when given, else <results>/stage5_localsgd/best.json (stage 5
// completed for this configuration), else K = 4, H = 16.
// Writes <results>/stage6_slowmo/: metrics.jsonl, summary.csv, table.md and slowmo.png
// (tools/plot_bars.py); checkpoints and a result.csv per run in <work>/stage6_slowmo/<run>/.
// Like stage 5, it runs unchanged under an MPI launcher (`mpirun -np 2 stage6_slowmo --threads 1`).
#include "study_cli.hpp"

#include <distopt/core/error.hpp>
#include <distopt/local/local_trainer.hpp>
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
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
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

constexpr const char* stage_name = "stage6_slowmo";
constexpr const char* stage5_name = "stage5_localsgd";
constexpr std::size_t batch_size = study::local_batch_size;  // per worker, as the centralized run of the study
const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};

/// Columns of a run folder's result.csv (stage 5 writes a subset; the missing ones read empty).
const std::vector<std::string> result_header = {
    "run", "K", "H", "inner_buffers", "lr", "momentum", "weight_decay", "batch_size", "status", "epochs", "steps",
    "validation_accuracy", "best_validation_accuracy", "best_epoch", "test_accuracy", "test_loss", "rounds",
    "bytes_per_worker", "modelled_seconds", "sync_seconds", "allreduce_seconds", "ranks", "seconds", "message"};

/// Columns of the stage's summary.csv.
const std::vector<std::string> summary_header = {
    "run", "kind", "K", "H", "alpha", "beta", "inner_buffers", "lr", "momentum", "weight_decay", "batch_size", "status",
    "epochs", "steps", "validation_accuracy", "best_validation_accuracy", "best_epoch", "test_accuracy", "test_loss", "rounds",
    "bytes_per_worker", "modelled_seconds", "sync_seconds", "allreduce_seconds", "ranks", "seconds", "source", "message"};

/// Saves the row in its run folder: the marker that the run is finished.
void save_result(const fs::path& folder, const Row& row) { study::write_rows(folder / "result.csv", result_header, {row}); }

/// The unsigned integer after "key": in a small JSON object such as best.json, if there is one.
std::optional<std::size_t> json_size(const std::string& text, const std::string& key) {
  const std::size_t at = text.find(message("\"", key, "\""));
  if (at == std::string::npos) return std::nullopt;
  std::size_t i = text.find(':', at);
  if (i == std::string::npos) return std::nullopt;
  ++i;
  while (i < text.size() && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n')) ++i;
  std::size_t value = 0, digits = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i, ++digits)
    value = value * 10 + static_cast<std::size_t>(text[i] - '0');
  if (digits == 0 || value == 0) return std::nullopt;
  return value;
}

/// K and H: the flags when given, else stage 5's best.json (of this configuration), else the defaults.
struct Setting {
  std::size_t workers = 4;
  std::size_t local_steps = 16;
  bool from_flags = false;
};

std::pair<std::size_t, std::size_t> choose_setting(const study::Config& config, const Setting& setting, std::string& why) {
  if (setting.from_flags) {
    why = "--workers/--local-steps";
    return {setting.workers, setting.local_steps};
  }
  const fs::path file = config.results / stage5_name / "best.json";
  if (fs::exists(file)) {
    if (!study::StageMarker(config, stage5_name).done()) {
      why = message("defaults (", file.string(), " is not of this configuration: stage 5 not completed for it)");
      return {setting.workers, setting.local_steps};
    }
    const std::string text = study::read_text(file);
    const auto k = json_size(text, "K"), h = json_size(text, "H");
    distopt::require(k && h, "'", file.string(), "': no positive integer fields \"K\" and \"H\"");
    why = message("stage 5's best (", file.string(), ")");
    return {*k, *h};
  }
  why = message("defaults (no ", file.string(), ")");
  return {setting.workers, setting.local_steps};
}

template <class Comm>
void stage(const study::Config& config, const Setting& setting, Comm& comm) {
  const auto start = std::chrono::steady_clock::now();
  const bool root = comm.rank() == 0;
  const study::Scale& scale = config.scale;
  distopt::require(!scale.slowmo_alphas.empty() && !scale.slowmo_betas.empty(),
                   "Scale.slowmo_alphas and Scale.slowmo_betas must not be empty");
  const fs::path results = config.results / stage_name;
  const fs::path work = config.work / stage_name;
  if (root) fs::create_directories(results);

  // Rank 0 reads stage 5's choice; every rank must train the same K and H.
  std::string why;
  std::size_t chosen[2] = {0, 0};
  if (root) std::tie(chosen[0], chosen[1]) = choose_setting(config, setting, why);
  distopt::local::broadcast_value(comm, chosen);
  distopt::local::broadcast_value(comm, why);
  const std::size_t k = chosen[0], h = chosen[1];
  const distopt::data::PreparedData prepared = study::prepare_data(config, comm);
  distopt::require(k <= prepared.train.size(), "K = ", k, " workers for ", prepared.train.size(), " training images");
  const study::SgdmSetting inner = study::stage3_best_sgdm(config, comm);
  if (root) {
    std::printf("SlowMo at K = %zu workers, H = %zu local steps, from %s\n", k, h, why.c_str());
    std::printf("data: %zu train, %zu validation, %zu test images\n", prepared.train.size(), prepared.validation.size(),
                prepared.test.size());
    std::printf("inner optimizer: SGDM lr %s momentum %s weight decay %s, from %s\n", exact(inner.lr).c_str(),
                exact(inner.momentum).c_str(), exact(inner.weight_decay).c_str(), inner.source.c_str());
  }
  const study::LocalRuns ctx{config, prepared, distopt::data::Normalizer(prepared.stats), inner, scale.epochs_final,
                             root ? std::make_shared<train::JsonLinesSink>(results / "metrics.jsonl", /*append=*/true) : nullptr,
                             /*width=*/26};

  // The LocalSGD reference at K, H first: from stage 5 when it ran it with this configuration.
  Row localsgd;
  {
    const fs::path stage5_folder = config.work / stage5_name / message("K", k, "_H", h);
    const std::string description = study::localsgd_description(k, h);
    if (const auto done = study::finished_on_root(study::RunFolder(stage5_folder, ctx.stamp(description)), comm)) {
      if (root) {
        localsgd = *done;
        localsgd["source"] = message("stage 5 (", stage5_folder.string(), ")");
        std::printf("  %-26s from stage 5: test acc %s%%\n", "localsgd", study::percent(localsgd.number("test_accuracy")).c_str());
      }
    } else {
      const fs::path folder = work / message("localsgd_K", k, "_H", h);
      localsgd = ctx.run_local("localsgd", folder, description, description, local::LocalSgd{}, k, h, local::InnerBuffers::maintain,
                               comm);
      localsgd["run"] = "localsgd";
      if (root) save_result(folder, localsgd);
      localsgd["source"] = "run here";
    }
    localsgd["run"] = "localsgd";
    localsgd["kind"] = "localsgd";
    localsgd["inner_buffers"] = "maintain";
  }

  // SlowMo runs: the alpha x beta grid (maintain), then the buffer strategies at (1, 0.5).
  std::vector<Row> slowmo;  // every SlowMo run made here, in order
  const auto slowmo_run = [&](double alpha, double beta, local::InnerBuffers buffers) -> Row {
    const std::string id = message("slowmo_a", exact(alpha), "_b", exact(beta), "_", study::buffers_name(buffers));
    for (const Row& r : slowmo)
      if (r.cell("run") == id) return r;
    // alpha 1, beta 0 with maintained buffers is LocalSGD to the bit (outer.hpp): not run twice.
    if (alpha == 1.0 && beta == 0.0 && buffers == local::InnerBuffers::maintain) {
      Row alias = localsgd;
      alias["run"] = id;
      alias["source"] = "= localsgd (SlowMo alpha 1, beta 0 is LocalSGD bit for bit)";
      alias["kind"] = "alias";
      return alias;
    }
    const fs::path folder = work / id;
    const std::string description = message("slowmo K=", k, " H=", h, " alpha=", exact(alpha), " beta=", exact(beta),
                                            " inner_buffers=", study::buffers_name(buffers));
    Row row = ctx.run_local(id, folder, description, description, local::SlowMo({.alpha = alpha, .beta = beta}), k, h, buffers, comm);
    if (root) save_result(folder, row);
    row["kind"] = "slowmo";
    row["alpha"] = exact(alpha);
    row["beta"] = exact(beta);
    row["source"] = "run here";
    slowmo.push_back(row);
    return row;
  };
  std::map<std::pair<double, double>, Row> grid;
  for (const double alpha : scale.slowmo_alphas)
    for (const double beta : scale.slowmo_betas) grid[{alpha, beta}] = slowmo_run(alpha, beta, local::InnerBuffers::maintain);
  const double buffer_alpha = 1.0, buffer_beta = 0.5;
  std::vector<Row> strategies;
  for (const auto b : {local::InnerBuffers::reset, local::InnerBuffers::maintain, local::InnerBuffers::average})
    strategies.push_back(slowmo_run(buffer_alpha, buffer_beta, b));
  if (!root) return;  // the rest is rank 0's: the centralized reference, tables and plots

  // The centralized reference last (one process: under MPI the other ranks are done by now).
  Row central;
  {
    const fs::path stage5_folder = config.work / stage5_name / "centralized";
    if (auto done = study::RunFolder(stage5_folder, ctx.stamp("centralized sgdm")).finished()) {
      central = *done;
      central["source"] = message("stage 5 (", stage5_folder.string(), ")");
      std::printf("  %-26s from stage 5: test acc %s%%\n", "centralized", study::percent(central.number("test_accuracy")).c_str());
    } else {
      central = ctx.run_centralized(work / "centralized");
      save_result(work / "centralized", central);
      central["source"] = "run here";
    }
    central["kind"] = "centralized";
  }

  std::vector<Row> rows = slowmo;
  rows.push_back(localsgd);
  rows.push_back(central);
  for (Row& r : rows) {
    if (r.cell("kind") == "localsgd") r["alpha"] = "1", r["beta"] = "0";
  }
  study::write_rows(results / "summary.csv", summary_header, rows);

  // The best SlowMo run by validation accuracy of its final model (the test set only reports).
  const Row* best = nullptr;
  for (const Row& r : slowmo) {
    if (r.cell("status") != "completed") continue;
    const double v = r.number("validation_accuracy");
    if (!std::isnan(v) && (best == nullptr || v > best->number("validation_accuracy"))) best = &r;
  }

  // Tables.
  std::vector<std::string> grid_header = {"alpha \\ beta"};
  for (const double beta : scale.slowmo_betas) grid_header.push_back(message("beta = ", exact(beta)));
  std::vector<std::vector<std::string>> grid_rows;
  for (const double alpha : scale.slowmo_alphas) {
    std::vector<std::string> line{message("alpha = ", exact(alpha))};
    for (const double beta : scale.slowmo_betas) {
      const Row& r = grid.at({alpha, beta});
      line.push_back(r.cell("kind") == "alias" ? message(percent_cell(r, "test_accuracy"), " (= LocalSGD)")
                                                : percent_cell(r, "test_accuracy"));
    }
    grid_rows.push_back(std::move(line));
  }
  const std::string grid_table = study::markdown_table(grid_header, grid_rows);

  std::vector<std::vector<std::string>> strategy_rows;
  for (const Row& r : strategies)
    strategy_rows.push_back({r.cell("inner_buffers"), r.cell("status"), study::percent(r.number("validation_accuracy")),
                             study::percent(r.number("test_accuracy")), r.cell("rounds"),
                             format_number(r.number("bytes_per_worker") / 1e6, 4),
                             format_number(r.number("modelled_seconds"), 4), r.cell("ranks").empty() ? "1" : r.cell("ranks"),
                             format_number(r.number("allreduce_seconds"), 3), format_number(r.number("seconds"), 4)});
  const std::string strategy_table = study::markdown_table(
      {"inner buffers", "status", "validation %", "test %", "rounds", "MB sent per worker", "modelled all-reduce s", "processes",
       "measured all-reduce s", "wall s"},
      strategy_rows);

  const auto comparison_line = [](const std::string& name, const Row& r) {
    return std::vector<std::string>{name, r.cell("status"), study::percent(r.number("validation_accuracy")),
                                    study::percent(r.number("test_accuracy")), r.cell("rounds"),
                                    format_number(r.number("bytes_per_worker") / 1e6, 4),
                                    format_number(r.number("seconds"), 4)};
  };
  std::vector<std::vector<std::string>> comparison_rows;
  if (best != nullptr)
    comparison_rows.push_back(comparison_line(message("SlowMo best (alpha ", best->cell("alpha"), ", beta ", best->cell("beta"),
                                                      ", ", best->cell("inner_buffers"), ")"),
                                              *best));
  comparison_rows.push_back(comparison_line(message("LocalSGD (K ", k, ", H ", h, ")"), localsgd));
  comparison_rows.push_back(comparison_line("centralized SGDM", central));
  const std::string comparison_table = study::markdown_table(
      {"method", "status", "validation %", "test %", "rounds", "MB sent per worker", "wall s"}, comparison_rows);

  // Observations, from the numbers.
  std::ostringstream notes;
  const double local_test = localsgd.number("test_accuracy"), central_test = central.number("test_accuracy");
  if (best != nullptr) {
    const double best_test = best->number("test_accuracy");
    notes << "The best SlowMo run by validation accuracy (alpha " << best->cell("alpha") << ", beta " << best->cell("beta")
          << ", " << best->cell("inner_buffers") << ") reaches " << study::percent(best_test) << "% test accuracy: "
          << signed_points(best_test - local_test) << " points against LocalSGD and " << signed_points(best_test - central_test)
          << " against the centralized run, with " << best->cell("rounds") << " rounds (LocalSGD: " << localsgd.cell("rounds")
          << "). ";
  } else {
    notes << "No SlowMo run completed with a validation accuracy. ";
  }
  const Row* best_strategy = nullptr;
  for (const Row& r : strategies)
    if (r.cell("status") == "completed" && !std::isnan(r.number("validation_accuracy")) &&
        (best_strategy == nullptr || r.number("validation_accuracy") > best_strategy->number("validation_accuracy")))
      best_strategy = &r;
  if (best_strategy != nullptr) {
    std::string leaders;
    for (const Row& r : strategies)
      if (r.number("validation_accuracy") == best_strategy->number("validation_accuracy"))
        leaders += message(leaders.empty() ? "'" : ", '", r.cell("inner_buffers"), "'");
    notes << "At alpha " << exact(buffer_alpha) << ", beta " << exact(buffer_beta) << " the " << leaders
          << " buffers validate best (" << study::percent(best_strategy->number("validation_accuracy")) << "%)";
    const double maintain_bytes = strategies[1].number("bytes_per_worker"),
                 average_bytes = strategies[2].number("bytes_per_worker");
    if (maintain_bytes > 0 && average_bytes > 0)
      notes << "; averaging them sends " << format_number(average_bytes / maintain_bytes, 3) << " times the bytes of keeping them";
    notes << ".";
  }

  std::ostringstream md;
  md << "## Stage 6: SlowMo on LocalSGD (K = " << k << ", H = " << h << ")\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << "\n\n"
     << "K and H from " << why << ". Inner optimizer SGDM lr " << exact(inner.lr) << ", momentum " << exact(inner.momentum)
     << ", weight decay " << exact(inner.weight_decay) << " (" << inner.source << "); batch " << batch_size
     << " per worker; cosine schedule over the run's global steps (SlowMo's gamma is the inner lr of each round's last step); "
     << ctx.epochs << " epochs; IID shards. Outer step after the exact average x_avg (Wang et al. 2020, Algorithm 1): "
        "u <- beta u + (x - x_avg) / gamma, x <- x - alpha gamma u.\n\n"
     << "### Test accuracy (%), alpha x beta, inner buffers maintained\n\n"
     << grid_table << "\n### Inner buffer strategies at alpha " << exact(buffer_alpha) << ", beta " << exact(buffer_beta) << "\n\n"
     << strategy_table << "\n### SlowMo against LocalSGD and centralized SGDM\n\n"
     << comparison_table << "\nLocalSGD: " << localsgd.cell("source") << "; centralized: " << central.cell("source")
     << " (run_training tests the weights of its best validation epoch, epoch " << central.cell("best_epoch") << " of "
     << central.cell("epochs") << "; LocalTrainer the final model).\n\n"
     << notes.str() << "\n";
  study::write_text(results / "table.md", md.str());
  std::printf("\nSlowMo test accuracy (%%), alpha x beta (K = %zu, H = %zu)\n%s\nInner buffers at alpha %s, beta %s\n%s\n%s\n%s\n", k, h,
              grid_table.c_str(), exact(buffer_alpha).c_str(), exact(buffer_beta).c_str(), strategy_table.c_str(),
              comparison_table.c_str(), notes.str().c_str());

  plots.require_ok("plot_bars.py", {(results / "summary.csv").string(), "--label", "run", "--value", "test_accuracy", "--percent",
                            "--color-by", "kind", "-o", (results / "slowmo.png").string(), "--title",
                            message("SlowMo vs LocalSGD (K = ", k, ", H = ", h, ") vs centralized: test accuracy (%)\n",
                                    config.data_label())});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: results in %s; wall time %.1f s\n", stage_name, results.c_str(), seconds);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Stage 6 of the study: SlowMo (slow learning rate alpha, slow momentum beta) on the best LocalSGD setting of "
               "stage 5, a grid over alpha x beta and the three inner-buffer strategies, against LocalSGD and centralized SGDM"};
  app.footer("Output: <results>/stage6_slowmo/{metrics.jsonl, summary.csv, table.md, slowmo.png}; checkpoints and per-run\n"
             "result.csv in <work>/stage6_slowmo/<run>/ (a re-run reuses finished runs and resumes cut ones).");
  study_cli::Flags flags;
  flags.add(app);
  Setting setting;
  auto* workers = app.add_option("--workers", setting.workers,
                                 "K, the workers (with --local-steps; default: K of stage 5's best.json, else 4)")
                      ->check(CLI::PositiveNumber);
  auto* local_steps = app.add_option("--local-steps", setting.local_steps,
                                     "H, the local steps between averages (default: H of stage 5's best.json, else 16)")
                          ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  setting.from_flags = workers->count() > 0 || local_steps->count() > 0;
  return study_cli::run_local_stage(flags, stage_name, [&](auto& comm) { stage(flags.config, setting, comm); });
}
