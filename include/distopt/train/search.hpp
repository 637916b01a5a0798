// Hyperparameter search: grid and random trials over named options,
// run one after another or several at once, ranked by validation accuracy and tabulated.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <limits>
#include <mutex>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <omp.h>

#include "distopt/core/io.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/train/metrics.hpp"
#include "distopt/train/run.hpp"

namespace distopt::train {

/// One named axis of a search space: a list of values, or a range to draw from.
///
/// A list serves both searches: grid_trials takes every value, random_trials picks one uniformly
/// (integers such as a batch size are lists: `Dimension::choice("batch_size", {64, 128, 256})`).
/// A range only serves random search: uniform on [low, high), or log-uniform, exp of a uniform
/// draw on [log low, log high), which spends as many trials on 1e-4..1e-3 as on 1e-2..1e-1 — the
/// right prior for a learning rate or weight decay (Bergstra & Bengio, "Random search for
/// hyper-parameter optimization", JMLR 2012).
struct Dimension {
  enum class Kind { values, uniform, log_uniform };

  std::string name{};  ///< the option's name: letters, digits, '_', '-' and '.' (it goes into folder names)
  Kind kind = Kind::values;
  std::vector<double> values{};  ///< Kind::values
  double low = 0;                ///< Kind::uniform and Kind::log_uniform
  double high = 0;

  /// The grid points `values` (a uniform choice among them in random search).
  [[nodiscard]] static Dimension grid(std::string name, std::vector<double> values) {
    return checked({.name = std::move(name), .kind = Kind::values, .values = std::move(values)});
  }
  /// A uniform choice among `values` (in a grid, every one of them).
  [[nodiscard]] static Dimension choice(std::string name, std::vector<double> values) {
    return grid(std::move(name), std::move(values));
  }
  /// Uniform on [low, high).
  [[nodiscard]] static Dimension uniform(std::string name, double low, double high) {
    return checked({.name = std::move(name), .kind = Kind::uniform, .low = low, .high = high});
  }
  /// Log-uniform on [low, high), 0 < low <= high.
  [[nodiscard]] static Dimension log_uniform(std::string name, double low, double high) {
    return checked({.name = std::move(name), .kind = Kind::log_uniform, .low = low, .high = high});
  }

  /// Throws std::invalid_argument naming the dimension for a bad or reserved name, an empty or non-finite
  /// list, low > high, a non-finite bound, or a non-positive bound of a log-uniform range.
  void validate() const {
    const bool good_name = !name.empty() && std::all_of(name.begin(), name.end(), [](char ch) {
      return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
             ch == '-' || ch == '.';
    });
    require(good_name, "search dimension '", name, "': a name must be non-empty and made of letters, digits, '_', '-', '.'");
    // The trial records and result tables have columns of these names.
    for (const char* reserved : {"rank", "trial", "index", "status", "validation_accuracy", "test_accuracy", "epochs",
                                 "seconds", "seed", "folder", "message", "finished", "trials"})
      require(name != reserved, "search dimension '", name, "': the name is a column of the results");
    switch (kind) {
      case Kind::values:
        require(!values.empty(), "search dimension '", name, "' has no values");
        for (std::size_t i = 0; i < values.size(); ++i)
          require(std::isfinite(values[i]), "search dimension '", name, "': value ", i, " is ", values[i]);
        break;
      case Kind::uniform:
      case Kind::log_uniform:
        require(std::isfinite(low) && std::isfinite(high), "search dimension '", name, "': bounds [", low, ", ", high,
                "] must be finite");
        require(low <= high, "search dimension '", name, "': low ", low, " > high ", high);
        require(kind == Kind::uniform || low > 0, "search dimension '", name, "': a log-uniform range needs low > 0, got [",
                low, ", ", high, "]");
        break;
      default:
        fail("search dimension '", name, "': unknown kind ", static_cast<int>(kind));
    }
  }

 private:
  static Dimension checked(Dimension d) {
    d.validate();
    return d;
  }
};

/// The dimensions of a search, in the order trials list their values.
using SearchSpace = std::vector<Dimension>;

/// Checks every dimension (Dimension::validate) and that no name appears twice.
inline void validate(const SearchSpace& space) {
  for (std::size_t d = 0; d < space.size(); ++d) {
    space[d].validate();
    for (std::size_t e = 0; e < d; ++e)
      require(space[e].name != space[d].name, "search dimension '", space[d].name, "' appears twice (dimensions ", e,
              " and ", d, ")");
  }
}

namespace detail::search {
inline constexpr std::uint64_t stream = 0x5EA4C4;  // labels this file's Rng streams apart from others
inline constexpr std::uint64_t seeds = 1;
inline constexpr std::uint64_t draws = 2;
inline constexpr std::size_t max_grid = 10'000'000;
}  // namespace detail::search

/// The seed of trial `index` of a search with seed `base_seed`: a pure function of both, so a
/// trial's run does not depend on how many trials there are or which ran before it.
[[nodiscard]] inline std::uint64_t trial_seed(std::uint64_t base_seed, std::size_t index) noexcept {
  Rng rng = Rng(base_seed).split({detail::search::stream, detail::search::seeds, std::uint64_t{index}});
  return rng.next_u64();
}

/// One point of a search space.
struct Trial {
  std::size_t index = 0;                                  ///< position in the list of trials
  std::vector<std::pair<std::string, double>> values{};  ///< one per dimension, in dimension order
  std::uint64_t seed = 0;                                 ///< trial_seed(search seed, index): for its model and loader

  /// The value of dimension `name`; throws std::invalid_argument naming it if the trial has none.
  [[nodiscard]] double get(std::string_view name) const {
    for (const auto& [n, v] : values)
      if (n == name) return v;
    fail("trial ", index, " has no value named '", std::string(name), "'");
  }

  /// A folder name made of the index and the values, e.g. `trial-003_lr-0.01_weight_decay-0.0005`
  /// (values with format_number's 6 significant digits; the index keeps names unique).
  [[nodiscard]] std::string folder() const {
    std::ostringstream out;
    out << "trial-" << std::setw(3) << std::setfill('0') << index;
    for (const auto& [name, value] : values) out << '_' << name << '-' << io::format_number(value);
    return out.str();
  }
};

/// Every combination of the listed values, in the order of nested loops over the dimensions with
/// the first outermost and the last varying fastest (itertools.product's order):
/// {a: [1, 2], b: [3, 4]} gives (1, 3), (1, 4), (2, 3), (2, 4). No dimensions: one empty trial.
/// Trial i's seed is trial_seed(seed, i). Throws std::invalid_argument naming the dimension for a
/// bad one or a range (a grid needs a list), and for a grid above 10^7 trials.
[[nodiscard]] inline std::vector<Trial> grid_trials(const SearchSpace& space, std::uint64_t seed = 0) {
  validate(space);
  std::size_t total = 1;
  for (const Dimension& d : space) {
    require(d.kind == Dimension::Kind::values, "search dimension '", d.name,
            "' is a range: a grid needs a list of values (Dimension::grid)");
    require(total <= detail::search::max_grid / d.values.size(), "grid_trials: more than ", detail::search::max_grid,
            " trials at dimension '", d.name, "'");
    total *= d.values.size();
  }
  std::vector<Trial> trials(total);
  for (std::size_t i = 0; i < total; ++i) {
    Trial& t = trials[i];
    t.index = i;
    t.seed = trial_seed(seed, i);
    t.values.resize(space.size());
    std::size_t rest = i;  // mixed-radix digits of i, the last dimension least significant
    for (std::size_t d = space.size(); d-- > 0;) {
      const std::size_t n = space[d].values.size();
      t.values[d] = {space[d].name, space[d].values[rest % n]};
      rest /= n;
    }
  }
  return trials;
}

/// `count` random points of the space. Value d of trial i is drawn from its own stream
/// Rng(seed).split({stream, draws, i, d}), so trial i is the same whatever `count` is (a longer
/// search extends a shorter one) and adding a dimension leaves the others' draws alone. Lists give
/// a uniform choice; ranges, see Dimension. Throws std::invalid_argument naming a bad dimension.
[[nodiscard]] inline std::vector<Trial> random_trials(const SearchSpace& space, std::size_t count, std::uint64_t seed) {
  validate(space);
  std::vector<Trial> trials(count);
  const Rng root = Rng(seed).split({detail::search::stream, detail::search::draws});
  for (std::size_t i = 0; i < count; ++i) {
    Trial& t = trials[i];
    t.index = i;
    t.seed = trial_seed(seed, i);
    for (std::size_t d = 0; d < space.size(); ++d) {
      const Dimension& dim = space[d];
      Rng rng = root.split({std::uint64_t{i}, std::uint64_t{d}});
      double v = 0;
      switch (dim.kind) {
        case Dimension::Kind::values:
          v = dim.values[rng.below(static_cast<std::uint32_t>(dim.values.size()))];
          break;
        case Dimension::Kind::uniform:
          v = dim.low == dim.high ? dim.low : std::min(rng.uniform(dim.low, dim.high), dim.high);
          break;
        case Dimension::Kind::log_uniform:
          // exp(log x) can land an ulp outside [low, high]; the clamp keeps the documented range.
          v = std::clamp(std::exp(rng.uniform(std::log(dim.low), std::log(dim.high))), dim.low, dim.high);
          break;
      }
      t.values.emplace_back(dim.name, v);
    }
  }
  return trials;
}

/// What one trial ended with. The trial function fills the figures; run_search sets `trial`.
struct TrialResult {
  Trial trial{};
  Status status = Status::failed;  ///< as RunResult's, or failed (the trial function threw)
  double validation_accuracy = std::nan("");  ///< the best over the run (what the ranking uses)
  double test_accuracy = std::nan("");        ///< NaN when the trial has no test set
  std::uint64_t epochs = 0;
  double seconds = 0;    ///< if the function leaves it at 0, run_search puts the call's wall time
  std::string message{};  ///< why it diverged or failed

  /// Completed or early-stopped: a run whose figures mean something.
  [[nodiscard]] bool ok() const noexcept { return finished(status); }
};

/// A run_training result as a trial result: the best validation accuracy, the test accuracy of
/// the restored best weights, the epochs run, the wall time, why it diverged. A run that never
/// finished an epoch reports its best validation accuracy as -inf; here that is NaN (none).
[[nodiscard]] inline TrialResult to_trial_result(const RunResult& run) {
  return {.status = run.status,
          .validation_accuracy = std::isfinite(run.best_validation_accuracy) ? run.best_validation_accuracy : std::nan(""),
          .test_accuracy = run.test.accuracy,
          .epochs = run.epochs_done,
          .seconds = run.seconds,
          .message = run.message};
}

/// Runs one trial. Called from several threads at once when trials run in parallel.
using TrialFunction = std::function<TrialResult(const Trial&)>;

/// How run_search runs its trials.
struct SearchOptions {
  /// Trials running at once, each on its own std::thread (1: one after another on the caller's).
  std::size_t parallel_trials = 1;
  /// OpenMP threads of each trial's model (0: all of the caller's, shared out between the
  /// parallel trials, at least 1 each). OpenMP's thread count is a per-thread setting, so each
  /// worker sets its own and the trials do not fight over the cores.
  std::size_t threads_per_trial = 0;
  /// One "trial" record per finished trial: labels trial (its folder name), status, seed and
  /// message (if any); values the trial's values, then index, validation_accuracy, test_accuracy,
  /// epochs, seconds and finished (trials finished so far, this one included) out of trials.
  Metrics metrics{};
};

/// Runs every trial through `function` and returns the results in trial order, whatever the
/// parallelism: trials are handed out in order from an atomic counter, and since each trial
/// depends only on its own values and seed (and the library's kernels give the same bits for any
/// thread count), a parallel search gives the same results as a serial one, timings aside.
/// A trial that throws is recorded as "failed" with the exception's message (as "diverged" for
/// optim::Diverged) and the search goes on, as it does past a diverged one. An exception from a
/// metrics sink, or failing to start a worker, is rethrown once the running trials are done.
[[nodiscard]] inline std::vector<TrialResult> run_search(const std::vector<Trial>& trials, const TrialFunction& function,
                                                         const SearchOptions& options = {}) {
  require(static_cast<bool>(function), "run_search: no trial function");
  require(options.parallel_trials >= 1, "SearchOptions.parallel_trials must be at least 1");
  const std::size_t workers = std::min(options.parallel_trials, std::max<std::size_t>(trials.size(), 1));
  const std::size_t threads =
      options.threads_per_trial > 0
          ? options.threads_per_trial
          : std::max<std::size_t>(1, static_cast<std::size_t>(parallel::max_threads()) / workers);
  require(threads <= static_cast<std::size_t>(std::numeric_limits<int>::max()), "SearchOptions.threads_per_trial is too large: ",
          threads);

  std::vector<TrialResult> results(trials.size());
  std::atomic<std::size_t> next{0};
  std::mutex report_mutex;
  std::size_t finished = 0;
  std::exception_ptr report_error;

  const auto run_one = [&](std::size_t i) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    TrialResult r;
    try {
      r = function(trials[i]);
    } catch (const optim::Diverged& e) {
      r = {.status = Status::diverged, .message = e.what()};
    } catch (const std::exception& e) {
      r = {.status = Status::failed, .message = e.what()};
    } catch (...) {
      r = {.status = Status::failed, .message = "unknown exception"};
    }
    r.trial = trials[i];
    if (!(r.seconds > 0)) r.seconds = std::chrono::duration<double>(clock::now() - start).count();

    Record record{.event = "trial", .epoch = r.epochs, .step = 0};
    record.label("trial", r.trial.folder()).label("status", std::string(to_string(r.status))).label("seed", std::to_string(r.trial.seed));
    if (!r.message.empty()) record.label("message", r.message);
    for (const auto& [name, value] : r.trial.values) record.set(name, value);
    record.set("index", static_cast<double>(r.trial.index))
        .set("validation_accuracy", r.validation_accuracy)
        .set("test_accuracy", r.test_accuracy)
        .set("epochs", static_cast<double>(r.epochs))
        .set("seconds", r.seconds);
    results[i] = std::move(r);
    const std::lock_guard lock(report_mutex);
    record.set("finished", static_cast<double>(++finished)).set("trials", static_cast<double>(trials.size()));
    try {
      options.metrics.write(record);
      options.metrics.flush();
    } catch (...) {
      if (!report_error) report_error = std::current_exception();
    }
  };
  const auto work = [&] {
    const parallel::ThreadCount count(static_cast<int>(threads));
    for (std::size_t i = next.fetch_add(1); i < trials.size(); i = next.fetch_add(1)) run_one(i);
  };

  if (workers == 1) {
    if (options.threads_per_trial > 0) {
      work();
    } else {
      for (std::size_t i = 0; i < trials.size(); ++i) run_one(i);
    }
  } else {
    std::vector<std::thread> pool;
    pool.reserve(workers);
    std::exception_ptr start_error;
    try {
      for (std::size_t w = 0; w < workers; ++w) pool.emplace_back(work);
    } catch (...) {
      start_error = std::current_exception();  // the started workers still take every trial
    }
    for (std::thread& t : pool) t.join();
    if (pool.empty() && start_error) std::rethrow_exception(start_error);
  }
  if (report_error) std::rethrow_exception(report_error);
  return results;
}

/// The results ranked: completed and early-stopped trials by validation accuracy, highest first
/// (NaN after every number), ties to the lower trial index; then every other status (diverged,
/// failed) in trial order.
[[nodiscard]] inline std::vector<TrialResult> rank(std::vector<TrialResult> results) {
  const auto key = [](const TrialResult& r) {
    // (group, accuracy): group 0 ok with a number, 1 ok without, 2 the rest.
    if (!r.ok()) return std::pair{2, 0.0};
    if (std::isnan(r.validation_accuracy)) return std::pair{1, 0.0};
    return std::pair{0, -r.validation_accuracy};
  };
  std::stable_sort(results.begin(), results.end(), [&](const TrialResult& a, const TrialResult& b) {
    const auto ka = key(a), kb = key(b);
    if (ka != kb) return ka < kb;
    return a.trial.index < b.trial.index;
  });
  return results;
}

/// The best completed (or early-stopped) trial: the first of rank(results). Throws
/// std::runtime_error when none completed, saying how many diverged and failed.
[[nodiscard]] inline TrialResult best(const std::vector<TrialResult>& results) {
  const std::vector<TrialResult> ranked = rank(results);
  if (!ranked.empty() && ranked.front().ok()) return ranked.front();
  std::size_t diverged = 0, failed = 0;
  for (const TrialResult& r : results) (r.status == Status::diverged ? diverged : failed) += 1;
  fail<std::runtime_error>("best: none of the ", results.size(), " trials completed (", diverged, " diverged, ", failed,
                           " failed or other)");
}

namespace detail::search {

/// The hyperparameter names shared by every result (those of the first), checked.
inline std::vector<std::string> names(const std::vector<TrialResult>& ranked) {
  std::vector<std::string> out;
  if (ranked.empty()) return out;
  for (const auto& [name, value] : ranked.front().trial.values) out.push_back(name);
  for (const TrialResult& r : ranked) {
    bool same = r.trial.values.size() == out.size();
    for (std::size_t d = 0; same && d < out.size(); ++d) same = r.trial.values[d].first == out[d];
    require(same, "write_search_table: trial ", r.trial.index, " has other hyperparameters than trial ",
            ranked.front().trial.index, " (", out, ")");
  }
  return out;
}

/// A markdown table cell: '|' escaped, line breaks as spaces.
inline std::string cell(std::string_view text) {
  std::string out;
  for (const char ch : text) {
    if (ch == '|') out += "\\|";
    else if (ch == '\n' || ch == '\r') out += ' ';
    else out += ch;
  }
  return out;
}

inline std::string md_number(double v, int digits) { return std::isnan(v) ? std::string("-") : io::format_number(v, digits); }

}  // namespace detail::search

/// Writes `ranked` (rank's output; the rank column is the position) into `folder` as
/// results.csv — rank, trial, each hyperparameter, status, validation_accuracy, test_accuracy,
/// epochs, seconds, seed, folder, message; NaN as "nan" — and results.md, a markdown table of rank,
/// each hyperparameter, status, validation accuracy, test accuracy, epochs and seconds. Both are
/// written to a temporary file and renamed. Throws std::invalid_argument if the trials do not all
/// have the same hyperparameters.
inline void write_search_table(const std::filesystem::path& folder, const std::vector<TrialResult>& ranked) {
  const std::vector<std::string> names = detail::search::names(ranked);
  std::filesystem::create_directories(folder);

  std::vector<std::string> header = {"rank", "trial"};
  header.insert(header.end(), names.begin(), names.end());
  for (const char* column : {"status", "validation_accuracy", "test_accuracy", "epochs", "seconds", "seed", "folder", "message"})
    header.emplace_back(column);
  std::vector<std::vector<std::string>> rows;
  for (std::size_t k = 0; k < ranked.size(); ++k) {
    const TrialResult& r = ranked[k];
    std::vector<std::string> row = {std::to_string(k + 1), std::to_string(r.trial.index)};
    for (const auto& [name, value] : r.trial.values) row.push_back(io::format_number(value));
    row.insert(row.end(), {std::string(to_string(r.status)), io::format_number(r.validation_accuracy), io::format_number(r.test_accuracy),
                           std::to_string(r.epochs), io::format_number(r.seconds, 4), std::to_string(r.trial.seed),
                           r.trial.folder(), r.message});
    rows.push_back(std::move(row));
  }
  io::write_csv(folder / "results.csv", header, rows);

  std::ostringstream md;
  md << "| rank |";
  for (const std::string& name : names) md << ' ' << detail::search::cell(name) << " |";
  md << " status | validation accuracy | test accuracy | epochs | seconds |\n|---:|";
  for (std::size_t d = 0; d < names.size(); ++d) md << "---:|";
  md << "---|---:|---:|---:|---:|\n";
  for (std::size_t k = 0; k < ranked.size(); ++k) {
    const TrialResult& r = ranked[k];
    md << "| " << k + 1 << " |";
    for (const auto& [name, value] : r.trial.values) md << ' ' << io::format_number(value) << " |";
    md << ' ' << detail::search::cell(std::string(to_string(r.status))) << " | " << detail::search::md_number(r.validation_accuracy, 4) << " | "
       << detail::search::md_number(r.test_accuracy, 4) << " | " << r.epochs << " | "
       << detail::search::md_number(r.seconds, 3) << " |\n";
  }
  io::write_text(folder / "results.md", md.str(), "write_search_table");
}

}  // namespace distopt::train
