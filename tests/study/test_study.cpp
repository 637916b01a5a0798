// The study's shared machinery: run folders (reuse, redo, resume), CSV rows, tables, the
// run-labelling sink, stage markers and the cached data preparation.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "distopt/study/runs.hpp"
#include "distopt/study/sinks.hpp"
#include "distopt/study/study.hpp"
#include "distopt/train/metrics.hpp"
#include "../support/files.hpp"

namespace fs = std::filesystem;
namespace study = distopt::study;
namespace train = distopt::train;
using study::Row;
using study::RunFolder;

TEST_CASE("run folder: a finished run is reused, a changed configuration is redone, a cut run resumes", "[study]") {
  const test_support::TempDir dir("study-runs");
  const fs::path folder = dir / "run";
  const Row result{{"run", "a"}, {"test_accuracy", "0.5"}};

  const RunFolder first(folder, "lr 0.1\n");
  CHECK_FALSE(first.finished());
  CHECK(first.claim() == RunFolder::Start::fresh);
  CHECK(first.same_configuration());
  // Started but no result yet: the run was cut; the same stamp resumes it and keeps its files.
  study::write_text(folder / "checkpoint.bin", "weights");
  CHECK_FALSE(first.finished());
  CHECK(first.claim() == RunFolder::Start::resume);
  CHECK(fs::exists(folder / "checkpoint.bin"));

  first.finish(result);
  const auto again = RunFolder(folder, "lr 0.1\n").finished();
  REQUIRE(again);
  CHECK(*again == result);

  // Another configuration: not reused, and its checkpoints go so they are not resumed.
  const RunFolder changed(folder, "lr 0.2\n");
  CHECK_FALSE(changed.same_configuration());
  CHECK_FALSE(changed.finished());
  CHECK(changed.claim() == RunFolder::Start::replaced);
  CHECK_FALSE(fs::exists(folder / "checkpoint.bin"));
  CHECK_FALSE(fs::exists(folder / "result.csv"));
  CHECK(study::read_text(folder / "stamp.txt") == "lr 0.2\n");
  CHECK_FALSE(RunFolder(folder, "lr 0.1\n").finished());

  // A damaged result is not a finished run.
  study::write_text(folder / "result.csv", "run,test_accuracy\na\n");
  CHECK_FALSE(changed.finished());
  CHECK_THROWS(RunFolder(folder, ""));
}

TEST_CASE("CSV rows round-trip with quotes, commas and line breaks", "[study]") {
  const test_support::TempDir dir("study-csv");
  Row row{{"run", "K4_H16"}, {"message", "diverged, \"nan\" loss\nat step 3"}, {"test_accuracy", "0.25"}, {"empty", ""}};
  row["status"] = "completed";
  row.set({{"test_accuracy", "0.375"}});
  CHECK(row.columns() == std::vector<std::string>{"run", "message", "test_accuracy", "empty", "status"});
  CHECK(row.number("test_accuracy") == 0.375);
  CHECK(std::isnan(row.number("empty")));
  CHECK(std::isnan(row.number("run")));
  CHECK(std::isnan(row.number("missing")));
  CHECK(row.cell("missing").empty());
  CHECK_THROWS_WITH(row.at("missing"), Catch::Contains("missing"));

  study::write_row(dir / "one.csv", row);
  const auto back = study::read_row(dir / "one.csv");
  REQUIRE(back);
  CHECK(*back == row);
  CHECK(back->at("message") == "diverged, \"nan\" loss\nat step 3");

  const Row other{{"run", "centralized"}, {"status", "diverged"}};
  study::write_rows(dir / "two.csv", {"run", "status", "message"}, {row, other});
  const auto rows = study::read_csv(dir / "two.csv");
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].cell("message") == row.cell("message"));
  CHECK(rows[1].cell("run") == "centralized");
  CHECK(rows[1].has("message"));
  CHECK(rows[1].cell("message").empty());
  CHECK_FALSE(study::read_row(dir / "two.csv"));  // two rows are not one run's result
  CHECK(study::read_csv(dir / "absent.csv").empty());

  study::write_text(dir / "bad.csv", "a,b\n1,2,3\n");
  CHECK_THROWS_WITH(study::read_csv(dir / "bad.csv"), Catch::Contains("line 2"));
  CHECK(study::parse_csv("a,\"b\"\"c\"\r\n") == std::vector<std::vector<std::string>>{{"a", "b\"c"}});

  CHECK(study::percent_cell(other, "missing") == "nan (diverged)");
  CHECK(study::signed_points(0.015) == "+1.5");
  CHECK(study::signed_points(-0.2) == "-20.0");
  CHECK(study::fixed(2.25, 1) == "2.2");
  CHECK(study::fixed(std::nan(""), 1) == "nan");
}

TEST_CASE("markdown_table writes a header, a rule and one line per row", "[study]") {
  const std::string table = study::markdown_table({"K", "test %"}, {{"2", "40.0"}, {"4", "38.5"}});
  CHECK(table == "| K | test % |\n|---|---|\n| 2 | 40.0 |\n| 4 | 38.5 |\n");
  CHECK(study::markdown_table({"a"}, {}) == "| a |\n|---|\n");
}

TEST_CASE("RunLabel puts the run first on every record and passes flushes on", "[study]") {
  const auto memory = std::make_shared<train::MemorySink>();
  study::RunLabel sink("K2_H4", memory);
  train::Record record;
  record.event = "epoch";
  record.epoch = 2;
  record.labels = {{"optimizer", "sgdm"}};
  record.values = {{"loss", 1.5}};
  sink.write(record);
  sink.flush();
  REQUIRE(memory->records.size() == 1);
  const train::Record& got = memory->records.front();
  CHECK(got.event == "epoch");
  CHECK(got.epoch == 2);
  REQUIRE(got.labels.size() == 2);
  CHECK(got.labels[0] == std::pair<std::string, std::string>{"run", "K2_H4"});
  CHECK(got.labels[1].first == "optimizer");
  CHECK(got.get("loss") == 1.5);
  CHECK_THROWS(study::RunLabel("x", nullptr));
}

TEST_CASE("StageMarker is done only for the configuration that marked it", "[study]") {
  const test_support::TempDir dir("study-marker");
  study::Config config{.results = dir / "results", .work = dir / "work"};
  const study::StageMarker marker(config, "stage9");
  CHECK_FALSE(marker.done());
  marker.mark_done();
  CHECK(marker.done());
  CHECK(study::StageMarker(config, "stage9").done());
  CHECK_FALSE(study::StageMarker(config, "stage8").done());
  config.seed = 1;  // another data label
  CHECK_FALSE(study::StageMarker(config, "stage9").done());
  config.seed = 0;
  config.scale = study::Scale::full();
  CHECK_FALSE(study::StageMarker(config, "stage9").done());
}

TEST_CASE("prepare_data makes a tiny synthetic set once and reuses the cache", "[study]") {
  const test_support::TempDir dir("study-data");
  study::Config config{.results = dir / "results", .work = dir / "work", .seed = 3};
  config.scale.synthetic_train = 200;
  config.scale.synthetic_test = 100;
  bool cached = true;
  const auto first = study::prepare_data(config, &cached);
  CHECK_FALSE(cached);
  CHECK(first.train.size() + first.validation.size() == 200);
  CHECK(first.validation.size() > 0);
  CHECK(first.test.size() == 100);
  const auto second = study::prepare_data(config, &cached);
  CHECK(cached);
  CHECK(second.train.size() == first.train.size());
  CHECK(second.train.fine == first.train.fine);
  CHECK(second.test.fine == first.test.fine);
  CHECK(second.stats.mean == first.stats.mean);
}
