// The whole study, stage after stage: what ./scripts/run runs. Each stage is a program of its own
// (examples/study/stage*.cpp, built beside this one), which reproduce starts in turn; under mpirun
// it calls their entry points in its own process instead, so that one MPI job runs every stage
// over its rank groups. A stage a previous run completed for the same configuration is skipped,
// and one that was interrupted continues from its checkpoints, so an interrupted `reproduce`
// picks up where it stopped. Before it starts it prints the plan of the chosen scale (runs,
// images, estimated time from a throughput probe); at the end it writes <results>/REPORT.md,
// opening with the findings table the stages computed.
#include "stages.hpp"
#include "study_cli.hpp"

#include "common/findings.hpp"
#include "common/plan.hpp"
#include "common/plots.hpp"
#include "common/runs.hpp"
#include "common/study.hpp"

#include <distopt/core/file_lock.hpp>
#include <distopt/core/parallel.hpp>
#include <distopt/train/interrupt.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace study = distopt::study;
using distopt::message;

namespace {

struct Stage {
  std::string name;
  std::string title;
  int (*entry)(int, char**);
};

const std::vector<Stage> stages = {
    {"stage1_data", "Data: split, statistics, shards, sample images", study_stages::stage1_data},
    {"stage2_lenet", "LeNet-5 trained with SGDM (Hsu et al.'s setting)", study_stages::stage2_lenet},
    {"stage3_centralized", "Centralized SGDM and AdamW: search, retrain with early stopping, test", study_stages::stage3_centralized},
    {"stage4_large_batch", "Large batches: LARS and LAMB against SGDM and AdamW", study_stages::stage4_large_batch},
    {"stage5_localsgd", "LocalSGD against synchronous SGD at K x B, post-local SGD and batch B", study_stages::stage5_localsgd},
    {"stage6_slowmo", "SlowMo against LocalSGD and the baselines", study_stages::stage6_slowmo},
    {"stage7_diloco", "Beyond the study: DiLoCo, compressed messages, time-to-accuracy on a simulated network",
     study_stages::stage7_diloco},
};

/// Runs a stage with `args` as its command line; its exit status. Under an MPI launcher the stage
/// runs in this process (a rank cannot initialise MPI twice); otherwise as its own program beside
/// this one, in a fresh process: measured side by side (2-core AMD EPYC, quick scale, stages 1-4),
/// stages 3 and 4 run 43 s and 19 s as programs of their own and 55 s and 23 s after earlier
/// stages in one process.
int run(const Stage& stage, const std::vector<std::string>& args) {
  std::cout << std::flush;
  if (study_cli::launched_ranks() == 0) {
    static const fs::path here = fs::canonical("/proc/self/exe").parent_path();
    std::vector<std::string> command{(here / stage.name).string()};
    command.insert(command.end(), args.begin(), args.end());
    try {
      return study::run_program(command);
    } catch (const std::exception& e) {
      std::cerr << "reproduce: " << e.what() << '\n';
      return 127;
    }
  }
  std::vector<std::string> words{stage.name};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const int status = stage.entry(static_cast<int>(words.size()), argv.data());
  std::cout << std::flush;
  return status;
}

/// "9 min 30 s" or "42 s".
std::string duration(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  if (s < 60) return message(s, " s");
  if (s < 3600) return message(s / 60, " min ", s % 60, " s");
  return message(s / 3600, " h ", (s % 3600) / 60, " min");
}

/// The plan of the chosen scale as a table, with its estimate on one group of ranks (this machine),
/// on 8 and 64 such groups, and on this job's `groups`; `total_seconds` gets the last.
std::string plan_table(const study::Config& config, int groups, double* total_seconds) {
  const auto prepared = study::prepare_data(config);
  const study::SplitSizes sizes{prepared.train.size(), prepared.validation.size(), prepared.test.size()};
  const auto plans = study::plan_study(config.scale, sizes);
  const study::Throughput t = study::probe_throughput(prepared.info);
  std::vector<std::size_t> counts = {1, 8, 64};
  const auto job = static_cast<std::size_t>(groups);
  if (std::find(counts.begin(), counts.end(), job) == counts.end()) counts.push_back(job);
  std::vector<std::string> header = {"stage", "runs", "training images (M)", "evaluation images (M)"};
  for (const std::size_t g : counts)
    header.push_back(message(g == 1 ? "time on this machine" : message("on ", g, " groups"), g == job && g > 1 ? " (this job)" : ""));
  std::vector<std::vector<std::string>> rows;
  std::vector<double> totals(counts.size(), 0.0);
  double images = 0;
  std::size_t runs = 0;
  for (const auto& p : plans) {
    images += p.train_images, runs += p.runs;
    std::vector<std::string> row = {p.stage, message(p.runs), study::fixed(p.train_images / 1e6, 2), study::fixed(p.eval_images / 1e6, 2)};
    for (std::size_t c = 0; c < counts.size(); ++c) {
      const double s = study::estimated_seconds(p, t, counts[c]);
      totals[c] += s;
      row.push_back(duration(s));
    }
    rows.push_back(std::move(row));
  }
  std::vector<std::string> total_row = {"**total**", message(runs), study::fixed(images / 1e6, 2), ""};
  for (const double s : totals) total_row.push_back("**" + duration(s) + "**");
  rows.push_back(std::move(total_row));
  if (total_seconds != nullptr)
    *total_seconds = totals[static_cast<std::size_t>(std::find(counts.begin(), counts.end(), job) - counts.begin())];
  return message("Plan of the ", config.mode(), " scale on ", config.data_label(), " (", sizes.train, " train / ", sizes.validation,
                 " validation / ", sizes.test, " test images), ", study::model_label(prepared.info), ". Throughput probe on this machine (",
                 distopt::parallel::max_threads(), " threads): ", study::fixed(t.train, 0), " training and ", study::fixed(t.eval, 0),
                 " evaluation images/s. On N groups: N groups of ranks each as fast as this machine, taking each stage's runs in "
                 "order as they free up (a stage's second list waits for its first; stages run one after another). An upper bound: "
                 "early stopping, skipped cells and finished runs shorten it; building the programs is not included.\n\n",
                 study::markdown_table(header, rows));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Reproduces the study: runs stage1_data .. stage7_diloco in order, skipping completed stages, then writes "
               "<results>/REPORT.md opening with the findings table. Quick mode (the default) is the study's protocol on 30,000 "
               "Fashion-MNIST training images at a few epochs; --standard the study's grids on all of the data; --full its scale."};
  study_cli::Flags flags;
  flags.add(app);
  std::string only;
  bool plan_only = false;
  app.add_option("--only", only, "Run only this stage (e.g. stage3_centralized)");
  std::string through;
  app.add_option("--through", through, "Run the stages in order up to and including this one (e.g. stage3_centralized)");
  app.add_flag("--plan", plan_only, "Print the runs, images and estimated time of the chosen scale, and exit");
  std::string local_lr = "unscaled";
  app.add_option("--local-lr", local_lr, "Inner lr rule of stages 5 and 6: 'unscaled' (lr_B) or 'scaled' (K x lr_B with warmup)")
      ->check(CLI::IsMember({"scaled", "unscaled"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  const auto& config = flags.config;
  const std::vector<std::string> args = flags.forwarded();

  // Under mpirun every rank runs this program; rank 0 alone plans, prints and reports, while the
  // others wait asleep, so that its throughput probe has the machine to itself.
  const bool root = study_cli::launched_rank() == 0;
  [[maybe_unused]] const bool mpi = !plan_only && study_cli::MpiSession::active();
  const int groups = std::max(1, study_cli::launched_ranks() / flags.ranks_per_run);
  // Signals go on to the stage program running (run_program forwards them), which checkpoints and
  // stops; this process waits for it, then stops too.
  const distopt::train::StopOnSignals signals;
  try {
    // One driver per work folder (with --shared-work several jobs share it on purpose: their
    // runs are locked one by one). A driver killed earlier holds nothing: its lock died with it.
    std::optional<distopt::io::FileLock> driver;
    if (root && !plan_only && !flags.shared_work) {
      const fs::path lock = config.work / "reproduce.lock";
      driver = distopt::io::FileLock::try_acquire(lock);
      if (!driver)
        throw std::runtime_error(message("the work folder '", config.work.string(), "' is in use by another reproduce (",
                                         distopt::io::FileLock::holder(lock), "); wait for it, or stop it first"));
    }
    for (const std::string* name : {&only, &through})
      if (!name->empty() && std::none_of(stages.begin(), stages.end(), [&](const Stage& s) { return s.name == *name; }))
        throw std::invalid_argument(message("no stage named '", *name, "' (stage1_data .. stage7_diloco)"));
    double estimate = 0;
    std::string plan;
    if (root) {
      std::cout << "distopt study, " << config.mode() << " mode, on " << config.data_label() << "\n"
                << "results in " << fs::absolute(config.results).string() << ", caches and checkpoints in "
                << fs::absolute(config.work).string() << "\n\n";
      plan = plan_table(config, groups, &estimate);
      std::cout << plan << '\n' << std::flush;
    }
    if (plan_only) return 0;
#if defined(DISTOPT_STUDY_MPI)
    if (mpi) distopt::local::MpiCommunicator().barrier();
#endif

    const auto start = std::chrono::steady_clock::now();
    std::vector<std::pair<std::string, double>> times;
    bool past_through = false;
    for (const Stage& stage : stages) {
      if (past_through) break;
      past_through = stage.name == through;
      if (!only.empty() && only != stage.name) continue;
      const auto stage_start = std::chrono::steady_clock::now();
      std::vector<std::string> stage_args = args;
      if (stage.name == "stage5_localsgd" || stage.name == "stage6_slowmo") stage_args.insert(stage_args.end(), {"--local-lr", local_lr});
      const int status = run(stage, stage_args);
      times.emplace_back(stage.name, std::chrono::duration<double>(std::chrono::steady_clock::now() - stage_start).count());
      if (status == 128 + SIGINT || status == 128 + SIGTERM || status == 128 + SIGHUP) {
        std::cerr << "reproduce: stopped during " << stage.name << " (signal " << status - 128
                  << "); the same command continues: completed stages and runs are kept, the cut run resumes\n";
        return status;
      }
      if (status != 0) {
        std::cerr << "reproduce: " << stage.name << " failed (exit status " << status
                  << "); fix the cause and run reproduce again: completed stages are skipped\n";
        return status;
      }
    }
    if (!root) return 0;
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::vector<study::Finding> findings;
    for (const Stage& stage : stages) {
      const auto f = study::read_findings(config.results / stage.name / "findings.csv");
      findings.insert(findings.end(), f.begin(), f.end());
    }
    std::ostringstream report;
    report << "# distopt study report\n\n"
           << "Mode **" << config.mode() << "**, data: **" << config.data_label() << "**.\n\n"
           << "## Findings\n\n"
           << "Each claim of the papers the study follows, the runs that test it (test accuracy over seeds: mean and range) and "
              "the verdict computed from them: a difference no larger than the larger range over the seeds is inside the noise; "
              "a `matches` claim holds when A is not worse than B by more than the noise.\n\n"
           << study::findings_table(findings) << '\n';
    if (config.synthetic)
      report << "> These numbers come from the library's **synthetic CIFAR-format data**, not from real images.\n\n";
    report << "## Stages\n\n| stage | what | time (this run) |\n|---|---|---|\n";
    for (const Stage& stage : stages) {
      std::string took = "not run this time";
      for (const auto& [s, t] : times)
        if (s == stage.name) took = duration(t);
      // Only files that are there are linked: a stage not run has no table.
      const bool table = fs::exists(config.results / stage.name / "table.md");
      report << "| " << (table ? message("[", stage.name, "](", stage.name, "/table.md)") : stage.name) << " | " << stage.title
             << " | " << took << (table ? "" : " (no results)") << " |\n";
    }
    report << "\nTotal: " << duration(total) << " (estimated before the start: " << duration(estimate) << ").\n\n"
           << "### Plan\n\n" << plan << '\n';
    for (const Stage& stage_entry : stages) {
      const std::string& stage = stage_entry.name;
      const fs::path folder = config.results / stage;
      report << distopt::io::read_text_if_exists(folder / "table.md").value_or("") << "\n";
      std::vector<std::string> pngs;
      if (fs::is_directory(folder))
        for (const auto& entry : fs::directory_iterator(folder))
          if (entry.path().extension() == ".png") pngs.push_back(entry.path().filename().string());
      std::sort(pngs.begin(), pngs.end());
      for (const auto& p : pngs) report << "![" << stage << " " << p << "](" << stage << "/" << p << ")\n";
      report << "\n";
    }
    distopt::io::write_text(config.results / "REPORT.md", report.str());
    std::cout << "\n## Findings\n\n" << study::findings_table(findings) << "\nstudy complete in " << duration(total) << " (estimated "
              << duration(estimate) << "); report: " << fs::absolute(config.results / "REPORT.md").string() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "reproduce: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
