// Numbers on the command line are numbers: CLI11's Range lets NaN through (every comparison with
// NaN is false) and prints its bounds with six decimals ("[0.000000 - 1000.000000]" for a range
// that starts at 1e-12). These validators refuse NaN and infinities and print the real bounds.
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <string>

#include "distopt/core/error.hpp"
#include "distopt/core/io.hpp"

namespace distopt::cli {

/// A finite number in [low, high] (or [low, high) with `open_high`).
inline CLI::Validator number_in(double low, double high, bool open_high = false) {
  const std::string range = message("[", io::format_number(low, 10), ", ", io::format_number(high, 10), open_high ? ")" : "]");
  return CLI::Validator(
      [low, high, open_high, range](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v)) return message("'", text, "' is not a number");
        if (!std::isfinite(v)) return message("'", text, "' is not a finite number (the range is ", range, ")");
        if (v < low || v > high || (open_high && v == high)) return message(text, " is not in ", range);
        return {};
      },
      message("in ", range));
}

}  // namespace distopt::cli
