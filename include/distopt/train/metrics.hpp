// Where training reports go: JSON Lines files, a CSV summary, a terminal progress line.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <unistd.h>

#include "distopt/core/error.hpp"

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

namespace detail {

/// `text` as a JSON string literal (RFC 8259 escaping).
inline std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (byte < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof buffer, "\\u%04x", byte);
          out += buffer;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

/// A number as JSON: shortest round-trip form; NaN and infinities (a diverged loss) become null,
/// since JSON has no spelling for them.
inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream out;
  out << std::setprecision(17) << v;
  double back = 0;
  for (int digits = 6; digits <= 17; ++digits) {
    std::ostringstream shorter;
    shorter << std::setprecision(digits) << v;
    std::istringstream(shorter.str()) >> back;
    if (back == v) return shorter.str();
  }
  return out.str();
}

}  // namespace detail

/// The record as one JSON object: {"event": ..., "epoch": ..., "step": ..., labels..., values...}.
[[nodiscard]] inline std::string to_json(const Record& r) {
  std::string out = "{\"event\": " + detail::json_string(r.event) + ", \"epoch\": " + std::to_string(r.epoch) +
                    ", \"step\": " + std::to_string(r.step);
  for (const auto& [name, text] : r.labels) out += ", " + detail::json_string(name) + ": " + detail::json_string(text);
  for (const auto& [name, value] : r.values) out += ", " + detail::json_string(name) + ": " + detail::json_number(value);
  return out + "}";
}

/// Appends one JSON object per line to a file (JSON Lines), flushed after every epoch-level
/// record so a crash loses at most the current epoch's step records. Throws std::runtime_error
/// naming the file if it cannot be opened.
class JsonLinesSink final : public MetricSink {
 public:
  explicit JsonLinesSink(const std::filesystem::path& file, bool append = true) : path_(file) {
    if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
    out_.open(file, append ? std::ios::app : std::ios::trunc);
    require<std::runtime_error>(out_.good(), "JsonLinesSink: cannot open '", file.string(), "' for writing");
  }
  void write(const Record& record) override {
    out_ << to_json(record) << '\n';
    if (record.event != "step") out_.flush();
    require<std::runtime_error>(out_.good(), "JsonLinesSink: cannot write '", path_.string(), "'");
  }
  void flush() override { out_.flush(); }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
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

/// A CSV file (RFC 4180 quoting) with a header row, written whole to a temporary file and renamed.
inline void write_csv(const std::filesystem::path& file, const std::vector<std::string>& header,
                      const std::vector<std::vector<std::string>>& rows) {
  const auto quote = [](const std::string& field) {
    if (field.find_first_of(",\"\n\r") == std::string::npos) return field;
    std::string out = "\"";
    for (const char ch : field) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return out + "\"";
  };
  std::ostringstream text;
  const auto line = [&](const std::vector<std::string>& fields) {
    for (std::size_t i = 0; i < fields.size(); ++i) text << (i ? "," : "") << quote(fields[i]);
    text << '\n';
  };
  line(header);
  for (const auto& row : rows) {
    require(row.size() == header.size(), "write_csv '", file.string(), "': a row has ", row.size(), " fields, the header ",
            header.size());
    line(row);
  }
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  const std::filesystem::path temp = file.string() + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << text.str();
    out.flush();
    require<std::runtime_error>(out.good(), "write_csv: cannot write '", temp.string(), "'");
  }
  std::filesystem::rename(temp, file);
}

/// A number as it goes into CSV and markdown tables: up to 6 significant digits.
[[nodiscard]] inline std::string format_number(double v, int digits = 6) {
  if (std::isnan(v)) return "nan";
  std::ostringstream out;
  out << std::setprecision(digits) << v;
  return out.str();
}

}  // namespace distopt::train
