// Flags every stage program and the driver share (scale, data, output folders, seed, threads),
// and how a stage runs: once per configuration, in one process or over the rank groups of an MPI job.
#pragma once

#include <CLI/CLI.hpp>

#include <distopt/local/communicator.hpp>
#include "common/numbers_cli.hpp"
#include "common/runs.hpp"
#include "common/study.hpp"
#include "common/work.hpp"

#if defined(DISTOPT_STUDY_MPI)
#include <distopt/local/mpi.hpp>
#endif

#include <omp.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

namespace study_cli {

/// The shared flags; call `finish` after parsing.
struct Flags {
  distopt::study::Config config;
  std::string scale = "quick";
  bool force = false;
  int ranks_per_run = 1;
  bool shared_work = false;
  std::string data;
  double epochs_scale = 1.0;

  void add(CLI::App& app) {
    app.add_flag_callback("--quick", [this] { scale = "quick"; },
                          "Quick mode (default): the study's protocol on 30,000 Fashion-MNIST training images at a few epochs");
    app.add_flag_callback("--standard", [this] { scale = "standard"; },
                          "The study's grids on all of the data at reduced epochs (an afternoon on 2 cores for Fashion-MNIST)");
    app.add_flag_callback("--full", [this] { scale = "full"; },
                          "The study's scale: all of the data, 150 epochs, full grids (days on a CPU)");
    app.add_flag_callback("--smoke", [this] { scale = "smoke"; },
                          "A pass through the stage in seconds on 300 images (for tests; the numbers mean nothing)");
    app.add_option("--data", data,
                   "CIFAR-100 folder (holding cifar-100-binary/) or a folder of IDX files (MNIST, Fashion-MNIST); default: "
                   "$DISTOPT_DATA, else Debian's Fashion-MNIST (/usr/share/datasets/fashion-mnist)");
    app.add_flag("--synthetic", config.synthetic,
                 "Use the library's synthetic CIFAR-format data (generated into <work>/data, read through the CIFAR-100 reader)");
    app.add_option("--epochs-scale", epochs_scale, "Multiply every epoch count of the scale (e.g. 0.2 to run the full grids shorter)")
        ->check(distopt::cli::number_in(1e-3, 1e3));
    app.add_option("--results", config.results, "Folder for tables, metrics and plots")->capture_default_str();
    app.add_option("--work", config.work, "Folder for data caches and checkpoints")->capture_default_str();
    app.add_option("--seed", config.seed, "Base seed of data, splits, shards, initial weights and loaders (seeds seed, seed + 1, ...)")
        ->capture_default_str();
    app.add_option("--threads", config.threads, "OpenMP threads (0: all cores; under mpirun, per rank)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_flag("--force", force, "Run the stage even if a previous run completed it");
    app.add_option("--ranks-per-run", ranks_per_run,
                   "Under mpirun: the ranks of one training run (a LocalSGD cell's workers spread over them); the job's ranks form "
                   "groups of this size, and each group takes the stage's next run when it finishes one")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_flag("--shared-work", shared_work,
                 "Every rank sees the same --work folder (a shared file system): each group writes its run folders there under a "
                 "lock file, so that jobs pointed at one folder never train the same run");
  }

  /// The flags to hand on to a stage program (reproduce runs every stage with its own).
  [[nodiscard]] std::vector<std::string> forwarded() const {
    std::vector<std::string> args = {"--" + scale, "--results", config.results.string(), "--work", config.work.string(),
                                     "--seed", std::to_string(config.seed), "--threads", std::to_string(config.threads)};
    if (!data.empty()) args.insert(args.end(), {"--data", data});
    if (config.synthetic) args.push_back("--synthetic");
    if (epochs_scale != 1.0) args.insert(args.end(), {"--epochs-scale", distopt::io::format_number(epochs_scale, 17)});
    if (force) args.push_back("--force");
    if (ranks_per_run != 1) args.insert(args.end(), {"--ranks-per-run", std::to_string(ranks_per_run)});
    if (shared_work) args.push_back("--shared-work");
    return args;
  }

  void finish() {
    if (scale == "standard") config.scale = distopt::study::Scale::standard();
    if (scale == "full") config.scale = distopt::study::Scale::full();
    if (scale == "smoke") config.scale = distopt::study::Scale::smoke();
    config.scale.epochs_scale = epochs_scale;
    if (epochs_scale != 1.0) config.scale.name += distopt::message("-x", distopt::io::format_number(epochs_scale));
    config.data = data;
    distopt::study::apply_environment(config);
    if (config.threads > 0) omp_set_num_threads(config.threads);
  }
};

/// The number of processes an MPI launcher started this one among (mpirun or mpiexec of OpenMPI
/// or MPICH, Slurm's srun with PMI); 0 when no launcher started it.
inline int launched_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') return std::atoi(value);
  return 0;
}

/// This process's rank among them (0 without a launcher): reproduce prints and reports on rank 0
/// alone before MPI is initialised.
inline int launched_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK"})
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') return std::atoi(value);
  return 0;
}

/// MPI for the whole process, initialised by the first stage that runs under a launcher (one
/// MPI_Init per process: reproduce runs every stage in its own process) and finalised at exit.
class MpiSession {
 public:
  /// True when this process runs under an MPI launcher and MPI is initialised.
  static bool active() {
#if defined(DISTOPT_STUDY_MPI)
    static MpiSession session;
    return session.active_;
#else
    return false;
#endif
  }

 private:
#if defined(DISTOPT_STUDY_MPI)
  MpiSession() {
    if (launched_ranks() == 0) return;
    int provided = 0;
    // Several groups need rank 0's coordinator thread to talk while its main thread trains.
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    active_ = true;
  }
  ~MpiSession() {
    if (active_) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
#endif
  bool active_ = false;
};

/// Runs `body(work)` unless the stage is already done (and not forced); marks it done afterwards.
/// Collective over the job's ranks: rank 0 decides, prints and marks. Returns the exit code; an
/// exception becomes a one-line message (naming the rank when there are several) and exit code 1,
/// and under MPI ends the job: the other ranks may be waiting for this one in a collective.
template <class Body>
int run_stage_on(const Flags& flags, const std::string& stage, distopt::study::Work& work, Body&& body) {
  const bool root = work.root();
  auto& comm = work.world();
  try {
    const distopt::study::RunFolder folder = distopt::study::stage_folder(flags.config, stage);
    bool done = root && folder.finished() && !flags.force;
    distopt::local::broadcast_value(comm, done);
    if (done) {
      if (root)
        std::cout << stage << ": already completed for this configuration (results in " << folder.path().string()
                  << "); --force runs it again\n";
      return 0;
    }
    const auto start = std::chrono::steady_clock::now();
    if (root) {
      (void)folder.claim();
      std::cout << "== " << stage << " (" << flags.config.mode() << ", " << flags.config.data_label();
      if (work.ranks() > 1)
        std::cout << ", " << work.ranks() << " MPI ranks in " << work.groups() << " group(s) of " << work.options().ranks_per_run;
      if (work.options().shared) std::cout << ", shared work folder";
      std::cout << ")\n" << std::flush;
    }
    comm.barrier();  // the folder is claimed before any rank writes into it
    body(work);
    if (root)
      folder.finish({{"stage", stage},
                     distopt::study::status_cell(distopt::train::Status::completed),
                     {"seconds", distopt::io::format_number(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 4)}});
    comm.barrier();  // ranks done early sleep here while rank 0 finishes alone (tables, plots)
    return 0;
  } catch (const distopt::study::Stopped& e) {
    std::cerr << stage << ": " << e.what() << " after a checkpoint of the run in progress; the same command continues it"
              << " (finished runs are kept)\n";
    return distopt::train::StopOnSignals::exit_status(e.signal());
  } catch (const std::exception& e) {
    std::cerr << stage << ": error" << (work.ranks() > 1 ? distopt::message(" on rank ", comm.rank()) : std::string()) << ": "
              << e.what() << '\n';
#if defined(DISTOPT_STUDY_MPI)
    if (work.ranks() > 1) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    return 1;
  }
}

/// A stage: `body(work)` over the runs' work list, in this process alone or, when an MPI launcher
/// started it (so `mpirun -np 4 stage3_centralized` works unchanged), over the job's rank groups.
template <class Body>
int run_stage(const Flags& flags, const std::string& stage, Body&& body) {
#if !defined(DISTOPT_STUDY_MPI)
  if (launched_ranks() > 1) {
    std::cerr << stage << ": started as one of " << launched_ranks()
              << " processes by an MPI launcher, but built without MPI (install libopenmpi-dev and rebuild)\n";
    return 1;
  }
#endif
  const distopt::study::WorkOptions options{.ranks_per_run = flags.ranks_per_run, .shared = flags.shared_work};
  // SIGINT, SIGTERM and SIGHUP stop the run in progress after its step, with a checkpoint.
  const distopt::train::StopOnSignals signals;
  try {
#if defined(DISTOPT_STUDY_MPI)
    distopt::study::Work work(options, MpiSession::active());
#else
    distopt::study::Work work(options);
#endif
    return run_stage_on(flags, stage, work, body);
  } catch (const std::exception& e) {  // the groups could not be formed
    std::cerr << stage << ": " << e.what() << '\n';
#if defined(DISTOPT_STUDY_MPI)
    if (MpiSession::active()) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    return 1;
  }
}

}  // namespace study_cli
