// Stopping a run cleanly on SIGINT, SIGTERM and SIGHUP.
//
// Without a handler those signals end a training program at once: up to an epoch of work is
// lost and no summary says what happened. With a StopOnSignals in scope the first signal only
// asks the run to stop: train::run finishes the step in progress, writes a checkpoint that
// --resume continues from to the same bits (mid-epoch for a centralized run, at the end of the
// round's epoch for a local one) and a summary with status "interrupted"; the program then exits
// with 128 + the signal, as a shell expects. A second signal ends the process at once.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <sys/types.h>

#include <atomic>
#include <cstddef>

namespace distopt::train {

namespace detail::interrupt {
inline std::atomic<int> requested{0};
inline std::atomic<::pid_t> forward_to{0};
inline constexpr int handled[] = {SIGINT, SIGTERM, SIGHUP};

inline void on_signal(int sig) {
  // Only async-signal-safe calls here: atomics, kill(2), write(2), signal(2), raise(3).
  if (const ::pid_t child = forward_to.load(); child > 0) ::kill(child, sig);
  if (requested.exchange(sig) != 0) {
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  constexpr char note[] = "\nstopping after the current step (a checkpoint and a summary follow; signal again to exit at once)\n";
  (void)!::write(STDERR_FILENO, note, sizeof note - 1);
}
}  // namespace detail::interrupt

/// The signal that asked the run to stop (SIGINT, SIGTERM, SIGHUP), or 0.
[[nodiscard]] inline int stop_requested() noexcept { return detail::interrupt::requested.load(std::memory_order_relaxed); }

/// Asks the run to stop as that signal would (tests, or a program's own reasons); 0 withdraws.
inline void request_stop(int sig) noexcept { detail::interrupt::requested.store(sig, std::memory_order_relaxed); }

/// Sends every signal that arrives on to `child` as well (0: to nobody): a driver forwards the
/// signals to the program it runs and waits for it to stop cleanly.
inline void forward_signals_to(::pid_t child) noexcept { detail::interrupt::forward_to.store(child); }

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP while it lives (the earlier ones are put
/// back at the end). One per process, in main.
class StopOnSignals {
 public:
  StopOnSignals() {
    struct sigaction action {};
    action.sa_handler = detail::interrupt::on_signal;
    sigemptyset(&action.sa_mask);
    // Interrupted system calls restart: the signal only sets a flag (and forwards), the code
    // that polls it decides what to do.
    action.sa_flags = SA_RESTART;
    for (std::size_t i = 0; i < count; ++i) ::sigaction(detail::interrupt::handled[i], &action, &previous_[i]);
  }
  ~StopOnSignals() {
    for (std::size_t i = 0; i < count; ++i) ::sigaction(detail::interrupt::handled[i], &previous_[i], nullptr);
  }
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;

  /// The exit status of a program stopped by `sig`: 128 + sig.
  [[nodiscard]] static int exit_status(int sig) noexcept { return 128 + sig; }

 private:
  static constexpr std::size_t count = sizeof detail::interrupt::handled / sizeof detail::interrupt::handled[0];
  struct sigaction previous_[count] {};
};

}  // namespace distopt::train
