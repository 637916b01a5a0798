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

#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "distopt/core/error.hpp"
#include "distopt/train/interrupt.hpp"

namespace distopt::study {

/// Runs `program args...` without a shell (paths need no quoting) and returns its exit status
/// (128 + the signal when it was killed). Throws when the program cannot be started.
///
/// The child dies with this process (PR_SET_PDEATHSIG: SIGTERM, which a stage program answers by
/// checkpointing and stopping), so killing a driver, even with SIGKILL, leaves no program training
/// on. It runs in a process group of its own, so a Ctrl-C at the terminal reaches it once, through
/// this process: while it runs, the signals StopOnSignals handles are forwarded to it
/// (train::forward_signals_to) and this process waits for it to stop.
[[nodiscard]] inline int run_program(const std::vector<std::string>& args) {
  require(!args.empty(), "run_program: no program");
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const ::pid_t parent = ::getpid();
  const ::pid_t pid = ::fork();
  if (pid < 0) fail<std::runtime_error>("cannot start '", args[0], "': ", std::generic_category().message(errno));
  if (pid == 0) {
    // Async-signal-safe calls only between fork and exec (the parent may have other threads).
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(128 + SIGTERM);  // the parent died before prctl took effect
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  train::forward_signals_to(pid);
  int status = 0;
  ::pid_t waited = 0;
  while ((waited = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  train::forward_signals_to(0);
  if (waited < 0) fail<std::runtime_error>("waitpid for '", args[0], "' failed");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) fail<std::runtime_error>("cannot start '", args[0], "' (exit status 127)");
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
