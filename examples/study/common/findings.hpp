// Findings: a claim of the papers the study follows, the cells that test it, their numbers over
// seeds, and a verdict computed from them. Each stage writes its own findings.csv; `reproduce`
// gathers them into the table REPORT.md opens with. Nothing in a verdict is written in: it is the
// comparison of two sets of measurements against their own spread.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "common/runs.hpp"
#include "common/study.hpp"

namespace distopt::study {

/// One side of a comparison: what was run, and its metric over seeds (fractions, e.g. accuracy).
struct Evidence {
  std::string cells;           ///< e.g. "SGDM, batch 1024 (stage 4)"
  std::vector<double> values;  ///< one per seed; non-finite values (diverged runs) count as failures

  [[nodiscard]] std::vector<double> finite() const {
    std::vector<double> out;
    for (const double v : values)
      if (std::isfinite(v)) out.push_back(v);
    return out;
  }
  [[nodiscard]] double mean() const {
    const auto f = finite();
    if (f.empty()) return std::nan("");
    double sum = 0;
    for (const double v : f) sum += v;
    return sum / static_cast<double>(f.size());
  }
  [[nodiscard]] double min() const {
    const auto f = finite();
    return f.empty() ? std::nan("") : *std::min_element(f.begin(), f.end());
  }
  [[nodiscard]] double max() const {
    const auto f = finite();
    return f.empty() ? std::nan("") : *std::max_element(f.begin(), f.end());
  }
  /// max - min over the seeds: the noise a difference is judged against.
  [[nodiscard]] double range() const { return max() - min(); }
  /// "88.1 (87.9-88.3)" in percent; "n/a" without a finite value.
  [[nodiscard]] std::string summary() const {
    if (finite().empty()) return "n/a (no run finished)";
    std::ostringstream out;
    out << percent(mean());
    if (values.size() > 1) out << " (" << percent(min()) << "-" << percent(max()) << ", " << finite().size() << " seeds)";
    else out << " (1 seed)";
    if (finite().size() < values.size()) out << ", " << values.size() - finite().size() << " diverged";
    return out.str();
  }
};

/// What a claim says of A against B: A does better (`better`), or A does about as well
/// (`matches`, e.g. LocalSGD against synchronous SGD with H times fewer rounds).
enum class Claim { better, matches };

/// A claim, its evidence and what else the reader should know (the cost side: rounds, steps).
struct Finding {
  std::string claim;   ///< the sentence, with its citation
  Claim kind = Claim::better;
  Evidence a, b;
  std::string note{};  ///< e.g. "120 rounds against 960"
  std::size_t test_images = 0;  ///< the size of the test set the accuracies were measured on (0: unknown)
  /// What might explain the claim failing here (a grid edge, too few steps, ...), from the
  /// stage's own numbers; the report shows it only beside a verdict of "does not hold".
  std::string caveat{};

  /// mean(A) - mean(B).
  [[nodiscard]] double difference() const { return a.mean() - b.mean(); }
  /// The test set's own sampling error of a difference of two accuracies near their mean p:
  /// sqrt(2 p (1 - p) / n), one standard error. It stands in for the seeds' range when that is
  /// smaller (one seed has no range; two seeds that agree by chance have almost none).
  [[nodiscard]] double sampling_error() const {
    if (test_images == 0) return 0.0;
    const double p = std::isfinite(a.mean()) && std::isfinite(b.mean()) ? 0.5 * (a.mean() + b.mean()) : 0.5;
    return std::sqrt(2.0 * p * (1.0 - p) / static_cast<double>(test_images));
  }
  /// The larger of the two ranges over seeds, and at least the test set's sampling error.
  [[nodiscard]] double noise() const {
    const double range = std::max(a.range(), b.range());
    return std::max(std::isfinite(range) ? range : 0.0, sampling_error());
  }
  /// "holds", "does not hold" or "inside the noise" (`better`); "holds" or "does not hold" with
  /// the reason (`matches`). A difference no larger than the noise (the larger range over seeds,
  /// at least the test set's sampling error) is noise.
  [[nodiscard]] std::string verdict() const {
    const double d = difference();
    if (!std::isfinite(d)) return "cannot tell (a side has no finished run)";
    const double n = std::isfinite(noise()) ? noise() : 0.0;
    if (kind == Claim::better) {
      if (std::abs(d) <= n) return "inside the noise";
      return d > 0 ? "holds" : "does not hold";
    }
    if (d > n) return "holds (A better)";
    if (d >= -n) return "holds (inside the noise)";
    return "does not hold";
  }
};

/// The columns of findings.csv.
inline const std::vector<std::string> findings_header = {"claim", "kind", "a", "a_values", "b", "b_values", "note", "test_images", "caveat"};

[[nodiscard]] inline std::string join_values(const std::vector<double>& values) {
  std::string out;
  for (const double v : values) {
    if (!out.empty()) out += ';';
    out += io::format_number(v, 10);
  }
  return out;
}

[[nodiscard]] inline std::vector<double> split_values(const std::string& text) {
  std::vector<double> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ';')) {
    try {
      out.push_back(std::stod(item));
    } catch (const std::exception&) {
      out.push_back(std::nan(""));
    }
  }
  return out;
}

/// Writes a stage's findings (the measurements only: verdicts are computed when read).
inline void write_findings(const std::filesystem::path& file, const std::vector<Finding>& findings) {
  std::vector<Row> rows;
  for (const Finding& f : findings)
    rows.push_back({{"claim", f.claim},
                    {"kind", f.kind == Claim::better ? "better" : "matches"},
                    {"a", f.a.cells},
                    {"a_values", join_values(f.a.values)},
                    {"b", f.b.cells},
                    {"b_values", join_values(f.b.values)},
                    {"note", f.note},
                    {"test_images", std::to_string(f.test_images)},
                    {"caveat", f.caveat}});
  write_rows(file, findings_header, rows);
}

/// A stage's findings.csv; empty when the file is missing.
[[nodiscard]] inline std::vector<Finding> read_findings(const std::filesystem::path& file) {
  std::vector<Finding> out;
  if (!std::filesystem::exists(file)) return out;
  for (const Row& r : read_csv(file))
    out.push_back({.claim = r.cell("claim"),
                   .kind = r.cell("kind") == "matches" ? Claim::matches : Claim::better,
                   .a = {r.cell("a"), split_values(r.cell("a_values"))},
                   .b = {r.cell("b"), split_values(r.cell("b_values"))},
                   .note = r.cell("note"),
                   .test_images = r.has("test_images") ? static_cast<std::size_t>(r.number("test_images")) : 0,
                   .caveat = r.has("caveat") ? r.cell("caveat") : ""});
  return out;
}

/// The notes column of a finding: its note, and its caveat when the claim does not hold.
[[nodiscard]] inline std::string finding_notes(const Finding& f) {
  if (f.caveat.empty() || f.verdict() != "does not hold") return f.note;
  return f.note.empty() ? "may explain it: " + f.caveat : f.note + "; may explain it: " + f.caveat;
}

/// The findings as a markdown table: claim, A, B, difference, noise, verdict, notes.
[[nodiscard]] inline std::string findings_table(const std::vector<Finding>& findings) {
  std::vector<std::vector<std::string>> rows;
  for (const Finding& f : findings)
    rows.push_back({f.claim, f.a.cells, f.a.summary(), f.b.cells, f.b.summary(), signed_points(f.difference()),
                    fixed(100.0 * f.noise(), 1), "**" + f.verdict() + "**", finding_notes(f)});
  return markdown_table({"claim", "A", "A test acc % (mean, range)", "B", "B test acc % (mean, range)", "A - B (points)",
                         "noise (points: larger range, at least the test set's sampling error)", "verdict", "notes"},
                        rows);
}

}  // namespace distopt::study
