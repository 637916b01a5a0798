// Run folders of the study: one training run per folder, with a stamp of the configuration it was
// started with and, once finished, a one-row result.csv. Every stage re-runs cheaply because of
// them: a finished run of the same configuration is reused, a cut one resumes from its last
// checkpoint, and a run of another configuration is started again instead of being resumed.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string_view>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/core/io.hpp"
#include "common/study.hpp"
#include "distopt/train/interrupt.hpp"
#include "distopt/train/metrics.hpp"
#include "distopt/train/run_folder.hpp"
#include "distopt/train/status.hpp"

namespace distopt::study {

/// One CSV row as (column, value) cells in column order: the order is kept so a result row writes
/// back with the columns it was built with; lookups are by name (rows have a few dozen cells).
class Row {
 public:
  using Cell = std::pair<std::string, std::string>;

  Row() = default;
  Row(std::initializer_list<Cell> cells) { set(cells); }

  /// The cell of `column`, appended empty when missing.
  std::string& operator[](const std::string& column) {
    for (auto& [name, value] : cells_)
      if (name == column) return value;
    cells_.emplace_back(column, std::string());
    return cells_.back().second;
  }
  /// Sets each cell (appending new columns, replacing existing ones).
  void set(std::initializer_list<Cell> cells) {
    for (const auto& [name, value] : cells) (*this)[name] = value;
  }
  [[nodiscard]] bool empty() const { return cells_.empty(); }
  [[nodiscard]] bool has(const std::string& column) const {
    for (const auto& cell : cells_)
      if (cell.first == column) return true;
    return false;
  }
  /// The cell of `column`; empty when missing (older result files may lack newer columns).
  [[nodiscard]] std::string cell(const std::string& column) const {
    for (const auto& [name, value] : cells_)
      if (name == column) return value;
    return {};
  }
  /// The cell of `column`; throws naming the column when missing (a column the stage relies on).
  [[nodiscard]] const std::string& at(const std::string& column) const {
    for (const auto& [name, value] : cells_)
      if (name == column) return value;
    fail<std::runtime_error>("result row has no field '", column, "'");
  }
  /// The cell as a number; NaN when missing, empty, "nan" or not wholly a number.
  [[nodiscard]] double number(const std::string& column) const {
    const std::string text = cell(column);
    if (text.empty()) return std::nan("");
    try {
      std::size_t used = 0;
      const double v = std::stod(text, &used);
      return used == text.size() ? v : std::nan("");
    } catch (const std::exception&) {
      return std::nan("");
    }
  }
  [[nodiscard]] const std::vector<Cell>& cells() const { return cells_; }
  [[nodiscard]] std::vector<std::string> columns() const {
    std::vector<std::string> out;
    for (const auto& cell : cells_) out.push_back(cell.first);
    return out;
  }
  /// The cells of `header`'s columns, in its order (missing ones empty).
  [[nodiscard]] std::vector<std::string> values(const std::vector<std::string>& header) const {
    std::vector<std::string> out;
    for (const auto& column : header) out.push_back(cell(column));
    return out;
  }
  friend bool operator==(const Row&, const Row&) = default;

 private:
  std::vector<Cell> cells_;
};

/// The status a row's `status` cell spells (nothing for an empty or unknown cell: an older file).
[[nodiscard]] inline std::optional<train::Status> status_of(const Row& row) { return train::parse_status(row.cell("status")); }
/// True when the row's run has `status`.
[[nodiscard]] inline bool has_status(const Row& row, train::Status status) { return status_of(row) == status; }
/// The `status` cell of a row.
[[nodiscard]] inline Row::Cell status_cell(train::Status status) { return {"status", std::string(train::to_string(status))}; }

/// The rows of a CSV file with a header line; none when the file is missing or empty. A line
/// with another field count than the header is an error naming the file and line.
[[nodiscard]] inline std::vector<Row> read_csv(const std::filesystem::path& file) {
  const auto records = io::parse_csv(io::read_text_if_exists(file, "read_csv").value_or(""));
  std::vector<Row> rows;
  if (records.empty()) return rows;
  const auto& header = records.front();
  for (std::size_t r = 1; r < records.size(); ++r) {
    require(records[r].size() == header.size(), "'", file.string(), "' line ", r + 1, ": ", records[r].size(),
            " fields, the header has ", header.size());
    Row row;
    for (std::size_t c = 0; c < header.size(); ++c) row[header[c]] = records[r][c];
    rows.push_back(std::move(row));
  }
  return rows;
}

/// The single row of a one-row CSV file (a run's result.csv); nullopt when the file is missing,
/// malformed or holds another number of rows, so a damaged result only makes the run run again.
[[nodiscard]] inline std::optional<Row> read_row(const std::filesystem::path& file) {
  try {
    auto rows = read_csv(file);
    if (rows.size() != 1) return std::nullopt;
    return std::move(rows.front());
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

/// Writes `rows` under `header` (cells missing from a row are empty), atomically (io::write_csv).
inline void write_rows(const std::filesystem::path& file, const std::vector<std::string>& header, const std::vector<Row>& rows) {
  std::vector<std::vector<std::string>> cells;
  cells.reserve(rows.size());
  for (const Row& row : rows) cells.push_back(row.values(header));
  io::write_csv(file, header, cells);
}

/// Writes a one-row CSV file with the row's own columns.
inline void write_row(const std::filesystem::path& file, const Row& row) { write_rows(file, row.columns(), {row}); }

/// A percentage cell of a result row, followed by the run's status when it did not complete, so
/// that a diverged or cut run's number does not read like a result.
[[nodiscard]] inline std::string percent_cell(const Row& row, const std::string& column) {
  const std::string value = percent(row.number(column));
  return has_status(row, train::Status::completed) ? value : message(value, " (", row.cell("status"), ")");
}

/// The study's one resume mechanism: a folder that one unit of work fills (a training run under
/// <work>/<stage>/<run>, or a whole stage's results under <results>/<stage>), with the stamp of
/// everything the work depends on (stamp.txt) and, once done, its one-row result (result.csv).
/// result.csv is written last, so its presence under a matching stamp says the work finished; a
/// matching stamp without it is work that was cut and resumes (a run from its checkpoints); another
/// stamp is another configuration's work, removed before this one starts.
class RunFolder {
 public:
  /// How `claim` found the folder.
  enum class Start {
    fresh,    ///< nothing there: new work
    resume,   ///< cut work of this configuration: continue it (a run from its last checkpoint)
    replaced  ///< another configuration's work, removed so its checkpoints are not resumed
  };
  [[nodiscard]] static constexpr std::string_view to_string(Start s) noexcept {
    return s == Start::fresh ? "fresh" : s == Start::resume ? "resume" : "replaced";
  }

  RunFolder(std::filesystem::path folder, std::string stamp) : folder_(std::move(folder)), stamp_(std::move(stamp)) {
    require(!stamp_.empty(), "run folder '", folder_.string(), "': empty stamp");
  }

  [[nodiscard]] const std::filesystem::path& path() const { return folder_; }
  [[nodiscard]] const std::string& stamp() const { return stamp_; }
  [[nodiscard]] std::filesystem::path result_file() const { return folder_ / "result.csv"; }

  /// True when the folder was started with this stamp.
  [[nodiscard]] bool same_configuration() const { return io::read_text_if_exists(folder_ / "stamp.txt", "RunFolder") == stamp_; }
  /// The finished run's result row, when the folder holds one of this configuration.
  [[nodiscard]] std::optional<Row> finished() const {
    if (!same_configuration()) return std::nullopt;
    return read_row(result_file());
  }
  /// Makes the folder ready for the run: claims it for this process (train::claim_folder: another
  /// live process on it is refused, naming it), keeps a cut run of this stamp (to resume), removes
  /// anything else (but the lock), and writes the stamp. The claim lasts while this object lives. Each claim adds a line to attempts.txt (how it started,
  /// the host, the process and its parent: the launcher of an MPI job), so a folder shows who
  /// trained it and how often, which matters when jobs share a work folder.
  Start claim() const {
    namespace fs = std::filesystem;
    // The lock file stays: removing it would let a second process lock a new one beside ours.
    lock_ = train::claim_folder(folder_, "study");
    Start start = Start::resume;
    if (same_configuration()) {
      fs::remove(result_file());  // a stale result would claim the run finished
    } else {
      std::vector<fs::path> earlier;
      for (const auto& entry : fs::directory_iterator(folder_))
        if (entry.path().filename() != "run.lock") earlier.push_back(entry.path());
      for (const auto& path : earlier) fs::remove_all(path);
      const bool replaced = !earlier.empty();
      io::write_text(folder_ / "stamp.txt", stamp_, "RunFolder");
      start = replaced ? Start::replaced : Start::fresh;
    }
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    io::AppendFile attempts(folder_ / "attempts.txt", false, "RunFolder");
    attempts.append_line(message(to_string(start), " host ", host, " pid ", ::getpid(), " parent ", ::getppid()));
    attempts.sync();
    return start;
  }
  /// Saves the result row with `header`'s columns: the mark that the work finished (under this
  /// stamp, written again in case the folder was never claimed).
  void finish(const std::vector<std::string>& header, const Row& row) const {
    if (!same_configuration()) io::write_text(folder_ / "stamp.txt", stamp_, "RunFolder");
    write_rows(result_file(), header, {row});
  }
  /// Saves the result row with its own columns.
  void finish(const Row& row) const { finish(row.columns(), row); }

 private:
  std::filesystem::path folder_;
  std::string stamp_;
  mutable std::shared_ptr<const io::FileLock> lock_;
};

/// Thrown when a signal stopped a run (SIGINT, SIGTERM, SIGHUP: train::StopOnSignals): the stage
/// ends there, with its checkpoint, and exits with 128 + the signal.
class Stopped : public std::runtime_error {
 public:
  explicit Stopped(int signal) : std::runtime_error(message("stopped by signal ", signal)), signal_(signal) {}
  [[nodiscard]] int signal() const noexcept { return signal_; }

 private:
  int signal_;
};

/// Throws Stopped when a signal ended the run that returned `status`.
inline void stop_if_signalled(train::Status status) {
  if (const int sig = train::stop_requested(); sig != 0 && status == train::Status::interrupted) throw Stopped(sig);
}

/// The folder of a stage's results and its stamp: the mode, data and seed of the study (a stage
/// of another configuration is run again).
[[nodiscard]] inline RunFolder stage_folder(const Config& config, const std::string& stage) {
  return RunFolder(config.results / stage, message(config.mode(), "\n", config.data_label(), "\nseed ", config.seed, "\n"));
}

/// True when `stage` finished for this configuration.
[[nodiscard]] inline bool stage_finished(const Config& config, const std::string& stage) {
  return stage_folder(config, stage).finished().has_value();
}

}  // namespace distopt::study
