// The whole study, stage after stage: what ./scripts/run runs. Each stage is its own program
// (examples/study/stage*.cpp, installed beside this one); a stage a previous run completed for
// the same configuration is skipped, and one that was interrupted continues from its
// checkpoints, so an interrupted `reproduce` picks up where it stopped. Before it starts it prints
// the plan of the chosen scale (runs, images, estimated time from a throughput probe); at the
// end it writes <results>/REPORT.md, opening with the findings table the stages computed.
#include "study_cli.hpp"

#include "common/findings.hpp"
#include "common/plan.hpp"
#include "common/plots.hpp"
#include "common/runs.hpp"
#include "common/study.hpp"

#include <distopt/core/parallel.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace study = distopt::study;
using distopt::message;

namespace {

const std::vector<std::pair<std::string, std::string>> stages = {
    {"stage1_data", "Data: split, statistics, shards, sample images"},
    {"stage2_lenet", "LeNet-5 trained with SGDM (Hsu et al.'s setting)"},
    {"stage3_centralized", "Centralized SGDM and AdamW: search, retrain with early stopping, test"},
    {"stage4_large_batch", "Large batches: LARS and LAMB against SGDM and AdamW"},
    {"stage5_localsgd", "LocalSGD against synchronous SGD at K x B, post-local SGD and batch B"},
    {"stage6_slowmo", "SlowMo against LocalSGD and the baselines"},
    {"stage7_diloco", "Beyond the study: DiLoCo, compressed messages, time-to-accuracy on a simulated network"},
};

/// Runs a stage program, inheriting stdout and stderr; its exit status, 127 if it cannot start.
int run(const fs::path& program, const std::vector<std::string>& args) {
  std::vector<std::string> command{program.string()};
  command.insert(command.end(), args.begin(), args.end());
  std::cout << std::flush;
  try {
    return study::run_program(command);
  } catch (const std::exception& e) {
    std::cerr << "reproduce: " << e.what() << '\n';
    return 127;
  }
}

/// "9 min 30 s" or "42 s".
std::string duration(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  if (s < 60) return message(s, " s");
  if (s < 3600) return message(s / 60, " min ", s % 60, " s");
  return message(s / 3600, " h ", (s % 3600) / 60, " min");
}

/// The plan of the chosen scale as a table, and its total estimate.
std::string plan_table(const study::Config& config, double* total_seconds) {
  const auto prepared = study::prepare_data(config);
  const study::SplitSizes sizes{prepared.train.size(), prepared.validation.size(), prepared.test.size()};
  const auto plans = study::plan_study(config.scale, sizes);
  const study::Throughput t = study::probe_throughput(prepared.info);
  std::vector<std::vector<std::string>> rows;
  double total = 0, images = 0;
  std::size_t runs = 0;
  for (const auto& p : plans) {
    const double s = study::estimated_seconds(p, t);
    total += s, images += p.train_images, runs += p.runs;
    rows.push_back({p.stage, message(p.runs), study::fixed(p.train_images / 1e6, 2), study::fixed(p.eval_images / 1e6, 2), duration(s)});
  }
  rows.push_back({"**total**", message(runs), study::fixed(images / 1e6, 2), "", "**" + duration(total) + "**"});
  if (total_seconds != nullptr) *total_seconds = total;
  return message("Plan of the ", config.mode(), " scale on ", config.data_label(), " (", sizes.train, " train / ", sizes.validation,
                 " validation / ", sizes.test, " test images), ", study::model_label(prepared.info), ". Throughput probe on this machine (",
                 distopt::parallel::max_threads(), " threads): ", study::fixed(t.train, 0), " training and ", study::fixed(t.eval, 0),
                 " evaluation images/s. An upper bound: early stopping, skipped cells and finished runs shorten it; building the "
                 "programs is not included.\n\n",
                 study::markdown_table({"stage", "runs", "training images (M)", "evaluation images (M)", "estimated time"}, rows));
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

  try {
    std::cout << "distopt study, " << config.mode() << " mode, on " << config.data_label() << "\n"
              << "results in " << fs::absolute(config.results).string() << ", caches and checkpoints in "
              << fs::absolute(config.work).string() << "\n\n";
    double estimate = 0;
    const std::string plan = plan_table(config, &estimate);
    std::cout << plan << '\n' << std::flush;
    if (plan_only) return 0;
    for (const std::string* name : {&only, &through})
      if (!name->empty() && std::none_of(stages.begin(), stages.end(), [&](const auto& s) { return s.first == *name; }))
        throw std::invalid_argument(message("no stage named '", *name, "' (stage1_data .. stage7_diloco)"));

    const fs::path here = fs::canonical("/proc/self/exe").parent_path();
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::pair<std::string, double>> times;
    bool past_through = false;
    for (const auto& [stage, title] : stages) {
      if (past_through) break;
      past_through = stage == through;
      if (!only.empty() && only != stage) continue;
      const auto stage_start = std::chrono::steady_clock::now();
      std::vector<std::string> stage_args = args;
      if (stage == "stage5_localsgd" || stage == "stage6_slowmo") stage_args.insert(stage_args.end(), {"--local-lr", local_lr});
      const int status = run(here / stage, stage_args);
      times.emplace_back(stage, std::chrono::duration<double>(std::chrono::steady_clock::now() - stage_start).count());
      if (status != 0) {
        std::cerr << "reproduce: " << stage << " failed (exit status " << status
                  << "); fix the cause and run reproduce again: completed stages are skipped\n";
        return status;
      }
    }
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::vector<study::Finding> findings;
    for (const auto& [stage, title] : stages) {
      const auto f = study::read_findings(config.results / stage / "findings.csv");
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
    for (const auto& [stage, title] : stages) {
      std::string took = "not run this time";
      for (const auto& [s, t] : times)
        if (s == stage) took = duration(t);
      report << "| [" << stage << "](" << stage << "/table.md) | " << title << " | " << took << " |\n";
    }
    report << "\nTotal: " << duration(total) << " (estimated before the start: " << duration(estimate) << ").\n\n"
           << "### Plan\n\n" << plan << '\n';
    for (const auto& [stage, title] : stages) {
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
