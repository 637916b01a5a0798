// The whole study, stage after stage: what ./scripts/run runs. Each stage is its own program
// (examples/study/stage*.cpp, installed beside this one); a stage a previous run completed for
// the same configuration is skipped, and one that was interrupted continues from its
// checkpoints, so an interrupted `reproduce` picks up where it stopped. At the end the stages'
// tables are gathered into <results>/REPORT.md and the main ones printed.
#include "study_cli.hpp"

#include <distopt/study/plots.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>


namespace fs = std::filesystem;

namespace {

const std::vector<std::pair<std::string, std::string>> stages = {
    {"stage1_data", "Data: CIFAR-100 (or synthetic), split, statistics, shards"},
    {"stage2_lenet", "LeNet-5 trained once with SGDM"},
    {"stage3_centralized", "Centralized SGDM and AdamW: search, retrain, test"},
    {"stage4_large_batch", "Large batches: LARS and LAMB against SGDM and AdamW"},
    {"stage5_localsgd", "LocalSGD: K workers x H local steps"},
    {"stage6_slowmo", "SlowMo against LocalSGD and the centralized baseline"},
};

/// Runs a stage program, inheriting stdout and stderr; its exit status, 127 if it cannot start.
int run(const fs::path& program, const std::vector<std::string>& args) {
  std::vector<std::string> command{program.string()};
  command.insert(command.end(), args.begin(), args.end());
  std::cout << std::flush;
  try {
    return distopt::study::run_program(command);
  } catch (const std::exception& e) {
    std::cerr << "reproduce: " << e.what() << '\n';
    return 127;
  }
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Reproduces the study: runs stage1_data .. stage6_slowmo in order, skipping completed stages, then writes "
               "<results>/REPORT.md. Quick mode (the default) runs small grids on synthetic data (7.3 min measured on 2 idle cores); "
               "--full --data DIR is the study's scale on real CIFAR-100."};
  study_cli::Flags flags;
  flags.add(app);
  std::string only;
  app.add_option("--only", only, "Run only this stage (e.g. stage3_centralized)");
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  const auto& config = flags.config;

  std::vector<std::string> args = {"--" + flags.scale, "--results", config.results.string(), "--work",
                                   config.work.string(), "--seed", std::to_string(config.seed), "--threads",
                                   std::to_string(config.threads)};
  if (!config.data.empty()) args.insert(args.end(), {"--data", config.data.string()});
  if (flags.force) args.push_back("--force");

  const fs::path here = fs::canonical("/proc/self/exe").parent_path();
  std::cout << "distopt study, " << config.mode() << " mode, on " << config.data_label() << "\n"
            << "results in " << fs::absolute(config.results).string() << ", caches and checkpoints in "
            << fs::absolute(config.work).string() << "\n";
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::pair<std::string, double>> times;
  for (const auto& [stage, title] : stages) {
    if (!only.empty() && only != stage) continue;
    const auto stage_start = std::chrono::steady_clock::now();
    const int status = run(here / stage, args);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - stage_start).count();
    times.emplace_back(stage, seconds);
    if (status != 0) {
      std::cerr << "reproduce: " << stage << " failed (exit status " << status
                << "); fix the cause and run reproduce again: completed stages are skipped\n";
      return status;
    }
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // REPORT.md: every stage's table, its plots, and the time it took in this run.
  std::ostringstream report;
  report << "# distopt study report\n\n"
         << "Mode **" << config.mode() << "**, data: **" << config.data_label() << "**.\n\n"
         << "Produced by `reproduce` (" << (config.synthetic() ? "./scripts/run" : "reproduce --data DIR")
         << "); each stage's metrics (`metrics.jsonl`), `summary.csv` and plots are in its folder.\n\n";
  if (config.synthetic())
    report << "> These numbers come from the library's **synthetic CIFAR-format data**, not from CIFAR-100. "
              "They show the pipeline and the methods' relative behaviour; for the study's numbers run "
              "`reproduce --full --data /path/to/cifar-100` (see README).\n\n";
  report << "| stage | what | seconds (this run) |\n|---|---|---|\n";
  for (const auto& [stage, title] : stages) {
    double seconds = 0;
    for (const auto& [s, t] : times)
      if (s == stage) seconds = t;
    report << "| [" << stage << "](" << stage << "/table.md) | " << title << " | " << static_cast<long>(seconds + 0.5) << " |\n";
  }
  report << "\nTotal: " << static_cast<long>(total + 0.5) << " s.\n\n";
  for (const auto& [stage, title] : stages) {
    const fs::path folder = config.results / stage;
    report << read_text(folder / "table.md") << "\n";
    std::vector<std::string> plots;
    if (fs::is_directory(folder))
      for (const auto& entry : fs::directory_iterator(folder))
        if (entry.path().extension() == ".png") plots.push_back(entry.path().filename().string());
    std::sort(plots.begin(), plots.end());
    for (const auto& p : plots) report << "![" << stage << " " << p << "](" << stage << "/" << p << ")\n";
    report << "\n";
  }
  distopt::study::write_text(config.results / "REPORT.md", report.str());
  std::cout << "\n" << read_text(config.results / "stage3_centralized" / "table.md") << "\n"
            << read_text(config.results / "stage5_localsgd" / "table.md") << "\n"
            << "study complete in " << static_cast<long>(total + 0.5) << " s; report: "
            << fs::absolute(config.results / "REPORT.md").string() << "\n";
  return 0;
}
