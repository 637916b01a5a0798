// Flags every stage program and the driver share: scale, data, output folders, seed, threads.
#pragma once

#include <CLI/CLI.hpp>

#include <distopt/study/study.hpp>

#include <omp.h>

#include <cstdlib>
#include <iostream>
#include <string>

namespace study_cli {

/// The shared flags; call `finish` after parsing.
struct Flags {
  distopt::study::Config config;
  bool full = false;
  bool force = false;
  std::string data;

  void add(CLI::App& app) {
    app.add_flag("--quick", [this](std::int64_t) { full = false; }, "Quick mode (default): small data, few epochs, small grids");
    app.add_flag("--full", full, "The study's scale: all of the data, 150 epochs, full grids (hours to days on a CPU)");
    app.add_option("--data", data,
                   "CIFAR-100 folder (holding cifar-100-binary/); default: $DISTOPT_DATA, else synthetic CIFAR-format data");
    app.add_option("--results", config.results, "Folder for tables, metrics and plots")->capture_default_str();
    app.add_option("--work", config.work, "Folder for data caches and checkpoints")->capture_default_str();
    app.add_option("--seed", config.seed, "Seed of data, splits, shards, initial weights and loaders")->capture_default_str();
    app.add_option("--threads", config.threads, "OpenMP threads (0: all cores)")->check(CLI::NonNegativeNumber)->capture_default_str();
    app.add_flag("--force", force, "Run the stage even if a previous run completed it");
  }

  void finish() {
    if (full) config.scale = distopt::study::Scale::full();
    config.data = data;
    distopt::study::apply_environment(config);
    if (config.threads > 0) omp_set_num_threads(config.threads);
  }
};

/// Runs `body` unless the stage is already done (and not forced); marks it done afterwards.
/// Returns the process exit code; any exception becomes a one-line message and exit code 1.
template <class Body>
int run_stage(const Flags& flags, const std::string& stage, Body&& body) {
  try {
    const distopt::study::StageMarker marker(flags.config, stage);
    if (marker.done() && !flags.force) {
      std::cout << stage << ": already completed for this configuration (results in "
                << (flags.config.results / stage).string() << "); --force runs it again\n";
      return 0;
    }
    std::cout << "== " << stage << " (" << flags.config.mode() << ", " << flags.config.data_label() << ")\n" << std::flush;
    body();
    marker.mark_done();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << stage << ": error: " << e.what() << '\n';
    return 1;
  }
}

}  // namespace study_cli
