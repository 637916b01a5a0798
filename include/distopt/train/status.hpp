// How a run ended: one enum for runs, trials, study cells and stages, spelled one way in files.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace distopt::train {

/// How a run ended.
enum class Status : std::uint8_t {
  completed,      ///< every planned epoch ran
  early_stopped,  ///< stopped by early stopping (its best weights are the result)
  diverged,       ///< a loss or gradient stopped being finite
  interrupted,    ///< stopped before its end by request (a test's stop_after); resumable
  skipped,        ///< not run: its planner decided it would say nothing (too few rounds, say)
  failed          ///< threw an error other than diverging (a search keeps going past it)
};

inline constexpr std::array<std::string_view, 6> status_names = {"completed", "early_stopped", "diverged",
                                                                 "interrupted", "skipped", "failed"};

/// The status as it appears in records, CSV cells and tables.
[[nodiscard]] constexpr std::string_view to_string(Status s) noexcept { return status_names[static_cast<std::size_t>(s)]; }

/// The status a cell or record spells; nothing for any other text (an empty cell, an older file).
[[nodiscard]] constexpr std::optional<Status> parse_status(std::string_view text) noexcept {
  for (std::size_t i = 0; i < status_names.size(); ++i)
    if (status_names[i] == text) return static_cast<Status>(i);
  return std::nullopt;
}

/// True for a run that reached its end (completed or stopped early): its numbers are results.
[[nodiscard]] constexpr bool finished(Status s) noexcept { return s == Status::completed || s == Status::early_stopped; }
[[nodiscard]] constexpr bool finished(std::optional<Status> s) noexcept { return s && finished(*s); }

}  // namespace distopt::train
