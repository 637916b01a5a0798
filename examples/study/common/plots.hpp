// Drawing the study's plots with the python scripts of tools/ (plot.py, plot_heatmap.py,
// plot_bars.py, plot_batch_sweep.py). The library does not know where the source tree or a
// python with matplotlib is, so the programs pass both (their build defines DISTOPT_TOOLS_DIR and
// DISTOPT_PYTHON).
#pragma once

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>

#include "distopt/core/error.hpp"

extern char** environ;  // NOLINT: POSIX; the child gets our environment (MPLBACKEND, HOME)

namespace distopt::study {

/// Runs `program args...` without a shell (paths need no quoting) and returns its exit status
/// (128 + the signal when it was killed). Throws when the program cannot be started.
[[nodiscard]] inline int run_program(const std::vector<std::string>& args) {
  require(!args.empty(), "run_program: no program");
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (const int err = ::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ); err != 0)
    fail<std::runtime_error>("cannot start '", args[0], "': ", std::generic_category().message(err));
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) fail<std::runtime_error>("waitpid for '", args[0], "' failed");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/// The plot scripts: `tools` the folder holding them, `python` the interpreter to run them with.
struct PlotScripts {
  std::filesystem::path tools;
  std::filesystem::path python;

  /// Runs `script` with `args` and returns its exit status; stdout is flushed first so our
  /// lines come before the child's.
  [[nodiscard]] int run(const std::string& script, const std::vector<std::string>& args) const {
    std::fflush(stdout);
    std::cout << std::flush;
    std::vector<std::string> all = {python.string(), (tools / script).string()};
    all.insert(all.end(), args.begin(), args.end());
    return run_program(all);
  }
  /// Runs `script`; a failure is an error naming the script and its exit status.
  void require_ok(const std::string& script, const std::vector<std::string>& args) const {
    const int status = run(script, args);
    require<std::runtime_error>(status == 0, "plot: ", python.string(), " ", (tools / script).string(), " exited with ", status);
  }
  /// Runs `script` to draw `png`; a failure is only a warning on stderr (the tables hold the
  /// numbers, so a missing matplotlib must not fail a stage of hours). Returns true when drawn.
  bool draw(const std::string& script, const std::vector<std::string>& args, const std::filesystem::path& png) const {
    int status = 0;
    try {
      status = run(script, args);
    } catch (const std::exception& e) {
      std::cerr << "plot: " << e.what() << '\n';
      status = -1;
    }
    if (status == 0) {
      std::cout << "plot: " << png.string() << '\n';
      return true;
    }
    std::cerr << "plot: warning: " << (tools / script).string() << " failed (" << status << "); no " << png.string() << '\n';
    return false;
  }
  /// Training curves of the runs `run_ids` recorded in a stage's shared `metrics` file (every
  /// run's records carry its id) into `png` with plot.py; a failure is a warning as in `draw`.
  bool curves(const std::filesystem::path& metrics, const std::vector<std::string>& run_ids, const std::filesystem::path& png,
              const std::string& title) const {
    std::vector<std::string> args{metrics.string()};
    for (const auto& id : run_ids) args.insert(args.end(), {"--run", id});
    args.insert(args.end(), {"-o", png.string(), "--title", title});
    return draw("plot.py", args, png);
  }
};

}  // namespace distopt::study
