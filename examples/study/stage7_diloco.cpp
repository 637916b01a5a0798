// Stage 7, beyond the study: DiLoCo (Douillard et al. 2023: inner AdamW, outer Nesterov SGD on
// the pseudo-gradient) against SlowMo, LocalSGD and synchronous data parallelism (H = 1), with and
// without compressed messages (fp16, int8 per block, top-k with error feedback), at the K, H that
// stages 5 and 6 compare. Every run records its test accuracy, steps and rounds after every epoch
// and the compute time of one worker's step; from those and the bytes a round sends, a simulated
// wall clock for K machines on a network of 1, 10 and 100 Gbit/s gives accuracy against time.
//
//   stage7_diloco [--quick|--standard|--full|--smoke] [--data DIR] [--results DIR] [--work DIR] ...
//
// Writes <results>/stage7_diloco/: metrics.jsonl, summary.csv, time_to_accuracy.csv, table.md,
// findings.csv and time_to_accuracy.png; checkpoints and a result.csv per run in
// <work>/stage7_diloco/<run>/. Under an MPI launcher its runs spread over the job's rank groups, as every stage's do.
#include "stages.hpp"
#include "study_cli.hpp"

#include <distopt/core/error.hpp>
#include <distopt/local/communicator.hpp>
#include <distopt/local/compression.hpp>
#include "common/findings.hpp"
#include "common/local_runs.hpp"
#include "common/plan.hpp"
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
#include <map>
#include <memory>
#include <optional>
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
using distopt::io::format_number;
using study::exact;
using study::Row;

constexpr const char* stage_name = "stage7_diloco";
const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};

/// The networks the simulated clock runs on: bandwidth in Gbit/s, and every message's latency.
constexpr std::array<double, 3> bandwidths_gbit = {1.0, 10.0, 100.0};
constexpr double latency_seconds = 20e-6;

/// One method of the comparison: a name, and what its runs are.
struct Method {
  std::string name;
  std::string kind;  ///< sync, localsgd, slowmo, diloco (the plot's colour groups)
  std::size_t h = 1;
  std::optional<local::SlowMoOptions> slowmo{};
  std::optional<study::DilocoOptions> diloco{};
  local::Compression compression{};
};

std::string seeded(const std::string& id, std::size_t i) { return i == 0 ? id : message(id, "_s", i); }

/// A method's curve over its seeds: per epoch the mean test accuracy and the mean simulated time
/// at each bandwidth (seeds that did not complete are left out).
struct MeanCurve {
  std::vector<double> accuracy;
  std::vector<std::array<double, bandwidths_gbit.size()>> seconds;
  double bytes_per_round = 0;  ///< per worker
  double step_seconds = 0;     ///< of the method's inner optimizer
};

/// The compute time of one worker step on one core for an inner optimizer: the median over every
/// completed run that uses it. Each run measures its own, but the work of a step is the same for
/// every method with the same inner optimizer, so one time for all keeps timer noise (a few
/// percent between runs) out of the comparison: methods differ by accuracy and communication.
double median_step_seconds(const std::vector<Row>& rows, const std::string& inner) {
  std::vector<double> v;
  for (const Row& r : rows)
    if (r.cell("inner") == inner && study::has_status(r, train::Status::completed) && std::isfinite(r.number("step_seconds")))
      v.push_back(r.number("step_seconds"));
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

MeanCurve mean_curve(const std::vector<Row>& rows, const Method& m, std::size_t k, double step_seconds) {
  MeanCurve c;
  std::size_t used = 0;
  for (const Row& r : rows) {
    if (!study::has_status(r, train::Status::completed)) continue;
    const auto acc = study::split_values(r.cell("curve_test_accuracy"));
    const auto steps = study::split_values(r.cell("curve_steps"));
    const auto rounds = study::split_values(r.cell("curve_rounds"));
    const auto values = static_cast<std::int64_t>(r.number("values"));
    if (acc.empty() || acc.size() != steps.size() || acc.size() != rounds.size()) continue;
    if (c.accuracy.empty()) {
      c.accuracy.assign(acc.size(), 0.0);
      c.seconds.assign(acc.size(), {});
    }
    if (acc.size() != c.accuracy.size()) continue;
    ++used;
    // One round's communication at each bandwidth (the bytes are the same at all of them).
    std::array<double, bandwidths_gbit.size()> sync{};
    for (std::size_t b = 0; b < bandwidths_gbit.size(); ++b) {
      const local::NetworkModel network{.latency = latency_seconds, .bandwidth = bandwidths_gbit[b] * 1e9 / 8.0};
      const local::CommunicationCost per_round = local::sync_cost(m.compression, values, sizeof(float), k, network);
      sync[b] = per_round.modelled_seconds;
      if (b == 0) c.bytes_per_round += per_round.bytes_per_worker;
    }
    c.step_seconds += step_seconds;
    for (std::size_t e = 0; e < acc.size(); ++e) {
      c.accuracy[e] += acc[e];
      for (std::size_t b = 0; b < bandwidths_gbit.size(); ++b) c.seconds[e][b] += steps[e] * step_seconds + rounds[e] * sync[b];
    }
  }
  if (used == 0) return {};
  const auto n = static_cast<double>(used);
  for (auto& a : c.accuracy) a /= n;
  for (auto& row : c.seconds)
    for (auto& s : row) s /= n;
  c.bytes_per_round /= n;
  c.step_seconds /= n;
  return c;
}

/// "12.3 s" or "n/a": the simulated time at which `curve` first reaches `target` at bandwidth b.
std::optional<double> time_to(const MeanCurve& curve, double target, std::size_t b) {
  for (std::size_t e = 0; e < curve.accuracy.size(); ++e)
    if (curve.accuracy[e] >= target) return curve.seconds[e][b];
  return std::nullopt;
}

std::string seconds_cell(std::optional<double> s) { return s ? format_number(*s, 4) : "not reached"; }

void stage(const study::Config& config, study::Work& work_list) {
  const auto start = std::chrono::steady_clock::now();
  const bool root = work_list.root();
  auto& comm = work_list.world();
  const study::Scale& scale = config.scale;
  distopt::require(scale.seeds > 0, "Scale.seeds must be positive");
  const std::size_t k = scale.compare_workers, h = scale.compare_steps;
  const fs::path results = config.results / stage_name;
  const fs::path work = config.work / stage_name;
  if (root) fs::create_directories(results);

  const distopt::data::PreparedData prepared = study::prepare_data(config, comm);
  distopt::require(k <= prepared.train.size(), "K = ", k, " workers for ", prepared.train.size(), " training images");
  const study::SgdmSetting inner = study::stage3_best_sgdm(config, comm);
  const study::TunedSetting adamw = study::stage3_best(config, "adamw", comm);
  const std::size_t epochs = scale.scaled(scale.epochs_local);
  if (root) {
    std::printf("DiLoCo, SlowMo, LocalSGD and synchronous SGD at K = %zu workers, H = %zu local steps\n", k, h);
    study::print_local_setup(prepared, inner, study::LrRule::unscaled);
    std::printf("DiLoCo's inner optimizer: AdamW lr %s weight decay %s, from %s\n", exact(adamw.lr).c_str(),
                exact(adamw.weight_decay).c_str(), adamw.source.c_str());
  }
  study::LocalRuns ctx{config, prepared, distopt::data::Normalizer(prepared.stats), inner, epochs, results / "metrics.jsonl",
                       /*width=*/26};
  ctx.adamw = adamw;

  const local::Compression fp16{.codec = local::Codec::fp16};
  const local::Compression int8{.codec = local::Codec::int8, .block = 256};
  const local::Compression top{.codec = local::Codec::topk, .fraction = 0.05, .error_feedback = true};
  const local::SlowMoOptions slowmo{.alpha = 1.0, .beta = 0.5};
  const study::DilocoOptions diloco{};
  const std::vector<Method> methods = {
      {.name = "sync", .kind = "sync", .h = 1},
      {.name = "sync fp16", .kind = "sync", .h = 1, .compression = fp16},
      {.name = message("localsgd H", h), .kind = "localsgd", .h = h},
      {.name = message("localsgd H", h, " int8"), .kind = "localsgd", .h = h, .compression = int8},
      {.name = message("slowmo H", h), .kind = "slowmo", .h = h, .slowmo = slowmo},
      {.name = message("slowmo H", h, " int8"), .kind = "slowmo", .h = h, .slowmo = slowmo, .compression = int8},
      {.name = message("diloco H", h), .kind = "diloco", .h = h, .diloco = diloco},
      {.name = message("diloco H", h, " fp16"), .kind = "diloco", .h = h, .diloco = diloco, .compression = fp16},
      {.name = message("diloco H", h, " int8"), .kind = "diloco", .h = h, .diloco = diloco, .compression = int8},
      {.name = message("diloco H", h, " ", top.label()), .kind = "diloco", .h = h, .diloco = diloco, .compression = top},
  };

  distopt::require(methods.size() == study::stage7_methods, "stage 7 compares ", methods.size(), " methods, its plan counts ",
                   study::stage7_methods);
  // Every method over every seed: one work list.
  std::vector<study::LocalJob> jobs;
  for (const Method& m : methods)
    for (std::size_t i = 0; i < scale.seeds; ++i) {
      std::string id = m.name;
      std::replace(id.begin(), id.end(), ' ', '_');
      std::replace(id.begin(), id.end(), '%', 'p');
      std::replace(id.begin(), id.end(), '+', '_');
      const study::LocalSpec s{.id = seeded(id, i), .k = k, .h = m.h, .seed = config.seed_of(i), .rule = study::LrRule::unscaled,
                               .slowmo = m.slowmo, .diloco = m.diloco, .compression = m.compression, .curve = true};
      jobs.push_back({.spec = s, .folder = work / s.id});
    }
  std::vector<Row> all = ctx.run_all(work_list, jobs);
  std::vector<std::vector<Row>> by_method;
  for (std::size_t j = 0; j < all.size(); ++j) {
    const Method& m = methods[j / scale.seeds];
    all[j]["kind"] = m.kind;
    all[j]["method"] = m.name;
    if (j % scale.seeds == 0) by_method.emplace_back();
    by_method.back().push_back(all[j]);
  }
  if (!root) return;  // the rest is rank 0's: tables and plots

  std::vector<std::string> header = study::local_result_header;
  header.insert(header.end(), study::curve_header.begin(), study::curve_header.end());
  header.insert(header.end(), {"kind", "method", "source"});
  study::write_rows(results / "summary.csv", header, all);

  // The simulated clock, per method over its seeds, and the target: 95% of the synchronous
  // baseline's final accuracy (a level every sensible method should reach in the budget).
  std::vector<MeanCurve> curves;
  const double sgdm_step = median_step_seconds(all, "sgdm"), adamw_step = median_step_seconds(all, "adamw");
  for (std::size_t i = 0; i < methods.size(); ++i)
    curves.push_back(mean_curve(by_method[i], methods[i], k, methods[i].diloco ? adamw_step : sgdm_step));
  const double sync_final = curves.front().accuracy.empty() ? std::nan("") : curves.front().accuracy.back();
  const double target = 0.95 * sync_final;

  std::ostringstream csv;
  csv << "method,kind,bandwidth_gbit,epoch,simulated_seconds,test_accuracy,target\n";
  for (std::size_t i = 0; i < methods.size(); ++i)
    for (std::size_t b = 0; b < bandwidths_gbit.size(); ++b)
      for (std::size_t e = 0; e < curves[i].accuracy.size(); ++e)
        csv << methods[i].name << ',' << methods[i].kind << ',' << format_number(bandwidths_gbit[b]) << ',' << e + 1 << ','
            << exact(curves[i].seconds[e][b]) << ',' << exact(curves[i].accuracy[e]) << ',' << exact(target) << '\n';
  distopt::io::write_text(results / "time_to_accuracy.csv", csv.str());

  std::vector<std::vector<std::string>> rows;
  for (std::size_t i = 0; i < methods.size(); ++i) {
    const MeanCurve& c = curves[i];
    std::vector<std::string> line{methods[i].name, message(methods[i].h), methods[i].compression.label(), study::rounds_cell(by_method[i]),
                                  study::over_seeds(by_method[i], "test_accuracy"), format_number(c.bytes_per_round / 1e6, 4),
                                  format_number(by_method[i].front().number("bytes_per_worker") / 1e6, 4),
                                  format_number(c.step_seconds * 1e3, 3)};
    for (std::size_t b = 0; b < bandwidths_gbit.size(); ++b) line.push_back(seconds_cell(c.accuracy.empty() ? std::nullopt : time_to(c, target, b)));
    for (std::size_t b = 0; b < bandwidths_gbit.size(); ++b)
      line.push_back(c.accuracy.empty() ? "n/a" : format_number(c.seconds.back()[b], 4));
    rows.push_back(line);
  }
  std::vector<std::string> table_header{"method", "H", "message", "rounds", "test % (mean, range)", "MB per round per worker",
                                        "MB sent per worker (seed 0)", "ms per worker step"};
  for (const double g : bandwidths_gbit) table_header.push_back(message("s to ", study::percent(target), "% at ", format_number(g), " Gbit/s"));
  for (const double g : bandwidths_gbit) table_header.push_back(message("s in all at ", format_number(g), " Gbit/s"));
  const std::string table = study::markdown_table(table_header, rows);

  // The findings: DiLoCo's claim (quality of data parallelism with far fewer bytes) and
  // OpenDiLoCo's (FP16 pseudo-gradients cost nothing).
  const auto index_of = [&](const std::string& name) {
    return static_cast<std::size_t>(std::find_if(methods.begin(), methods.end(), [&](const Method& m) { return m.name == name; }) -
                                    methods.begin());
  };
  const std::size_t dl = index_of(message("diloco H", h)), dl16 = index_of(message("diloco H", h, " fp16"));
  const double bytes_ratio = by_method[0].front().number("bytes_per_worker") / by_method[dl].front().number("bytes_per_worker");
  std::vector<study::Finding> findings = {
      {.claim = "DiLoCo matches synchronous data parallelism at the same budget while sending far fewer bytes (Douillard et al. 2023)",
       .kind = study::Claim::matches,
       .a = study::test_evidence(message("DiLoCo (inner AdamW, outer Nesterov lr 0.7, momentum 0.9), K = ", k, ", H = ", h), by_method[dl]),
       .b = study::test_evidence(message("synchronous SGD, K = ", k, ", H = 1 (global batch ", k * study::local_batch_size, ")"), by_method[0]),
       .note = message(study::rounds_cell(by_method[dl]), " rounds against ", study::rounds_cell(by_method[0]), "; ",
                       format_number(bytes_ratio, 3), " times fewer bytes per worker"),
       .caveat = message("H = ", h, " and ", epochs, " epochs, where Douillard et al. use H = 500 on language models of 60M-400M "
                         "parameters; the inner AdamW and SGDM settings come from stage 3's centralized search")},
      {.claim = "FP16 pseudo-gradients do not cost DiLoCo accuracy (Jaghouar et al. 2024, OpenDiLoCo)",
       .kind = study::Claim::matches,
       .a = study::test_evidence(message("DiLoCo, fp16 messages, K = ", k, ", H = ", h), by_method[dl16]),
       .b = study::test_evidence(message("DiLoCo, float32, K = ", k, ", H = ", h), by_method[dl]),
       .note = "half the bytes per round"}};
  for (auto& f : findings) f.test_images = prepared.test.size();
  study::write_findings(results / "findings.csv", findings);

  std::ostringstream md;
  md << "## Stage 7: DiLoCo, compression and time-to-accuracy (K = " << k << ", H = " << h << ")\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << ". Model: " << study::model_label(prepared.info) << " ("
     << by_method[0].front().cell("values") << " float32 values per message uncompressed), augmentation "
     << study::augmentation_label(study::augmentation_for(prepared.info)) << ". " << epochs << " epochs for every run, "
     << scale.seeds << " seed(s), IID shards, batch " << study::local_batch_size << " per worker, cosine lr from the inner lr "
     << "(unscaled), test accuracy of the global model after every epoch.\n\n"
     << "Inner SGDM (sync, LocalSGD, SlowMo) lr " << exact(inner.lr) << ", momentum " << exact(inner.momentum) << ", weight decay "
     << exact(inner.weight_decay) << " (" << inner.source << "); DiLoCo's inner AdamW lr " << exact(adamw.lr) << ", weight decay "
     << exact(adamw.weight_decay) << " (" << adamw.source << "), outer SGD with Nesterov momentum, lr " << exact(diloco.lr)
     << ", momentum " << exact(diloco.momentum) << ", on delta = x - x_avg. SlowMo alpha " << exact(slowmo.alpha) << ", beta "
     << exact(slowmo.beta) << " (fixed here; stage 6 searches it). Messages: fp16 and int8 (one float32 scale per "
     << int8.block << " values) carry the pseudo-gradient, top-k the " << format_number(top.fraction * 100) << "% largest with "
     << "error feedback.\n\n"
     << "**Simulated clock.** K = " << k << " machines, each computing its worker's steps at the time measured here for one "
     << "worker step on one core (SGDM " << format_number(sgdm_step * 1e3, 3) << " ms, AdamW " << format_number(adamw_step * 1e3, 3)
     << " ms: the median over the runs with that inner optimizer, each run's own in summary.csv), and a network of the given bandwidth with " << latency_seconds * 1e6
     << " us per message: float32 and the casts as a ring all-reduce in their format, int8 and top-k as a ring all-gather of "
     << "the payloads. Time at epoch e = steps(e) x step time + rounds(e) x the round's modelled communication; compute and "
     << "communication do not overlap. Times to accuracy are to " << study::percent(target) << "% test accuracy (95% of the "
     << "synchronous run's final " << study::percent(sync_final) << "%), at the first epoch whose mean over seeds reaches it.\n\n"
     << table << "\n### Findings\n\n" << study::findings_table(findings) << "\n";
  distopt::io::write_text(results / "table.md", md.str());
  std::printf("\nTime to accuracy (K = %zu, H = %zu)\n%s\n%s\n", k, h, table.c_str(), study::findings_table(findings).c_str());

  plots.draw("plot_time_to_accuracy.py",
             {(results / "time_to_accuracy.csv").string(), "-o", (results / "time_to_accuracy.png").string(), "--title",
              message("Test accuracy against simulated time, K = ", k, " machines (", config.data_label(),
                      ", mean over seeds); dashed: ", study::percent(target), "%")},
             results / "time_to_accuracy.png");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: results in %s; wall time %.1f s\n", stage_name, results.c_str(), seconds);
}

}  // namespace

int study_stages::stage7_diloco(int argc, char** argv) {
  CLI::App app{"Stage 7, beyond the study: DiLoCo (inner AdamW, outer Nesterov SGD) against SlowMo, LocalSGD and synchronous SGD, "
               "with compressed messages, and test accuracy against a simulated wall clock at 1, 10 and 100 Gbit/s"};
  app.footer("Output: <results>/stage7_diloco/{metrics.jsonl, summary.csv, time_to_accuracy.csv, table.md, findings.csv,\n"
             "time_to_accuracy.png}; checkpoints and per-run result.csv in <work>/stage7_diloco/<run>/.");
  study_cli::Flags flags;
  flags.add(app);
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  return study_cli::run_stage(flags, stage_name, [&](study::Work& work) { stage(flags.config, work); });
}
