// Where training reports go: JSON Lines files, memory, a terminal progress line.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "distopt/core/error.hpp"
#include "distopt/core/io.hpp"

namespace distopt::train {

/// One report: an `event` ("step", "epoch", "test", "summary", ...) at an epoch and global step,
/// with named numbers (loss, accuracy, lr, seconds, images_per_second, ...) and named strings
/// (optimizer, run, status, ...), both kept in the order they were added.
struct Record {
  std::string event{};
  std::uint64_t epoch = 0;
  std::int64_t step = 0;
  std::vector<std::pair<std::string, double>> values{};
  std::vector<std::pair<std::string, std::string>> labels{};

  Record& set(std::string name, double value) {
    values.emplace_back(std::move(name), value);
    return *this;
  }
  Record& label(std::string name, std::string text) {
    labels.emplace_back(std::move(name), std::move(text));
    return *this;
  }
  /// The value named `name`, or NaN.
  [[nodiscard]] double get(std::string_view name) const {
    for (const auto& [n, v] : values)
      if (n == name) return v;
    return std::nan("");
  }
};

/// A destination for records. Sinks are chosen at run time (a file, a terminal, a test's
/// collector), hence an interface rather than a template parameter.
class MetricSink {
 public:
  virtual ~MetricSink() = default;
  virtual void write(const Record& record) = 0;
  virtual void flush() {}
};

/// The record as one JSON object, keys in order: {"event": ..., "epoch": ..., "step": ...,
/// labels..., values...}; a NaN or infinite value (a diverged loss) becomes null, since JSON has
/// no spelling for them.
[[nodiscard]] inline nlohmann::ordered_json to_json(const Record& r) {
  nlohmann::ordered_json j;
  j["event"] = r.event;
  j["epoch"] = r.epoch;
  j["step"] = r.step;
  for (const auto& [name, text] : r.labels) j[name] = text;
  for (const auto& [name, value] : r.values) j[name] = std::isfinite(value) ? nlohmann::ordered_json(value) : nlohmann::ordered_json();
  return j;
}

/// Appends one JSON object per line to a file (JSON Lines, io::AppendFile), synced to disk after
/// every record but the "step" ones, so a crash loses at most the current epoch's step records.
/// Throws std::runtime_error naming the file if it cannot be opened or written.
class JsonLinesSink final : public MetricSink {
 public:
  /// The file is opened (created, or emptied when not `append`) at the first record, so a run
  /// refused before it starts (its folder claimed by another process, another configuration)
  /// leaves an earlier run's records as they were.
  explicit JsonLinesSink(std::filesystem::path file, bool append = true) : file_(std::move(file)), append_(append) {}
  void write(const Record& record) override {
    if (!out_) out_.emplace(file_, !append_, "JsonLinesSink");
    out_->append_line(to_json(record).dump());
    if (record.event != "step") out_->sync();
  }
  void flush() override {
    if (out_) out_->sync();
  }

 private:
  std::filesystem::path file_;
  bool append_;
  std::optional<io::AppendFile> out_;
};

/// Keeps every record in memory: for tests, and for a search collecting its trials.
class MemorySink final : public MetricSink {
 public:
  void write(const Record& record) override { records.push_back(record); }
  std::vector<Record> records;
};

/// Human-readable progress: on a terminal, a line rewritten in place during an epoch and one line
/// per epoch; elsewhere (a log file, CI) only the per-epoch lines, so logs stay readable.
class ProgressSink final : public MetricSink {
 public:
  explicit ProgressSink(std::ostream& out = std::cerr, bool terminal = ::isatty(STDERR_FILENO) != 0)
      : out_(&out), terminal_(terminal) {}

  void write(const Record& r) override {
    std::ostringstream line;
    line << std::fixed;
    if (r.event == "step") {
      if (!terminal_) return;
      line << "\r  epoch " << r.epoch << " step " << r.step << "  loss " << std::setprecision(4) << r.get("loss")
           << "  acc " << std::setprecision(3) << r.get("accuracy") << "  " << std::setprecision(0)
           << r.get("images_per_second") << " img/s   ";
      *out_ << line.str() << std::flush;
      partial_ = true;
      return;
    }
    if (partial_) *out_ << "\r\033[K";
    partial_ = false;
    line << r.event << " " << r.epoch;
    for (const auto& [name, text] : r.labels) line << "  " << name << " " << text;
    for (const auto& [name, value] : r.values) line << "  " << name << " " << std::setprecision(std::fabs(value) >= 100 ? 0 : 4) << value;
    *out_ << line.str() << '\n' << std::flush;
  }

 private:
  std::ostream* out_;
  bool terminal_;
  bool partial_ = false;
};

/// Sends every record to each of its sinks.
class Metrics {
 public:
  Metrics() = default;
  explicit Metrics(std::vector<std::shared_ptr<MetricSink>> sinks) : sinks_(std::move(sinks)) {}
  void add(std::shared_ptr<MetricSink> sink) { sinks_.push_back(std::move(sink)); }
  void write(const Record& record) const {
    for (const auto& sink : sinks_) sink->write(record);
  }
  void flush() const {
    for (const auto& sink : sinks_) sink->flush();
  }

 private:
  std::vector<std::shared_ptr<MetricSink>> sinks_;
};

}  // namespace distopt::train
