// The study's shared machinery: run folders (reuse, redo, resume), CSV rows, tables, the
// run-labelling sink, stage markers, the cached data preparation, findings and their verdicts,
// stage 3's best setting as later stages read it, the plan of a scale, and the work list that
// spreads a stage's runs (in one process here; tests/study/study_mpi.sh runs it under mpirun).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/central_runs.hpp"
#include "common/findings.hpp"
#include "common/plan.hpp"
#include "common/runs.hpp"
#include "common/sinks.hpp"
#include "common/study.hpp"
#include "common/work.hpp"
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
  distopt::io::write_text(folder / "checkpoint.bin", "weights");
  CHECK_FALSE(first.finished());
  CHECK(first.claim() == RunFolder::Start::resume);
  CHECK(fs::exists(folder / "checkpoint.bin"));
  // Every claim is an attempt on record: how it started, where, by which process.
  const std::string attempts = distopt::io::read_text(folder / "attempts.txt");
  CHECK(attempts.rfind("fresh host ", 0) == 0);
  CHECK(attempts.find("\nresume host ") != std::string::npos);
  CHECK(std::count(attempts.begin(), attempts.end(), '\n') == 2);

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
  CHECK(distopt::io::read_text(folder / "stamp.txt") == "lr 0.2\n");
  CHECK(distopt::io::read_text(folder / "attempts.txt").rfind("replaced host ", 0) == 0);  // a new folder, a new record
  CHECK_FALSE(RunFolder(folder, "lr 0.1\n").finished());

  // A damaged result is not a finished run.
  distopt::io::write_text(folder / "result.csv", "run,test_accuracy\na\n");
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

  distopt::io::write_text(dir / "bad.csv", "a,b\n1,2,3\n");
  CHECK_THROWS_WITH(study::read_csv(dir / "bad.csv"), Catch::Contains("line 2"));
  CHECK(distopt::io::parse_csv("a,\"b\"\"c\"\r\n") == std::vector<std::vector<std::string>>{{"a", "b\"c"}});

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

TEST_CASE("A stage is finished only for the configuration that finished it (the runs' RunFolder)", "[study]") {
  const test_support::TempDir dir("study-marker");
  study::Config config{.results = dir / "results", .work = dir / "work"};
  const study::RunFolder stage = study::stage_folder(config, "stage9");
  CHECK_FALSE(study::stage_finished(config, "stage9"));
  CHECK(stage.claim() == study::RunFolder::Start::fresh);
  distopt::io::write_text(stage.path() / "table.md", "results");
  CHECK_FALSE(study::stage_finished(config, "stage9"));  // cut before its end
  stage.finish({{"stage", "stage9"}, study::status_cell(train::Status::completed)});
  CHECK(study::stage_finished(config, "stage9"));
  CHECK(study::has_status(*stage.finished(), train::Status::completed));
  CHECK_FALSE(study::stage_finished(config, "stage8"));
  config.seed = 1;  // another data label
  CHECK_FALSE(study::stage_finished(config, "stage9"));
  // Run under it, the stage starts again in an emptied folder: stale results do not survive.
  CHECK(study::stage_folder(config, "stage9").claim() == study::RunFolder::Start::replaced);
  CHECK_FALSE(fs::exists(dir / "results" / "stage9" / "table.md"));
  config.seed = 0;
  config.scale = study::Scale::full();
  CHECK_FALSE(study::stage_finished(config, "stage9"));
  CHECK(study::RunFolder::to_string(study::RunFolder::Start::resume) == "resume");
}

TEST_CASE("prepare_data makes a tiny synthetic set once and reuses the cache", "[study]") {
  const test_support::TempDir dir("study-data");
  study::Config config{.synthetic = true, .results = dir / "results", .work = dir / "work", .seed = 3};
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

TEST_CASE("a finding's verdict is computed from the numbers against their spread", "[study][findings]") {
  using study::Claim;
  using study::Finding;
  const auto finding = [](Claim kind, std::vector<double> a, std::vector<double> b, std::size_t test_images = 0) {
    return Finding{.claim = "c", .kind = kind, .a = {"A", std::move(a)}, .b = {"B", std::move(b)}, .note = "", .test_images = test_images};
  };
  CHECK(finding(Claim::better, {0.90, 0.91}, {0.85, 0.86}).verdict() == "holds");
  CHECK(finding(Claim::better, {0.85, 0.86}, {0.90, 0.91}).verdict() == "does not hold");
  // 1 point apart, ranges of 3 points: noise.
  CHECK(finding(Claim::better, {0.88, 0.91}, {0.885, 0.885}).verdict() == "inside the noise");
  CHECK(finding(Claim::matches, {0.88, 0.89}, {0.885, 0.89}).verdict() == "holds (inside the noise)");
  CHECK(finding(Claim::matches, {0.80, 0.81}, {0.88, 0.89}).verdict() == "does not hold");
  CHECK(finding(Claim::matches, {0.95, 0.95}, {0.88, 0.89}).verdict() == "holds (A better)");
  CHECK(finding(Claim::better, {std::nan(""), std::nan("")}, {0.5}).verdict().starts_with("cannot tell"));
  // One seed each: no range, so the test set's sampling error is the noise. On 10,000 images at
  // 88%, one standard error of a difference is sqrt(2 * 0.88 * 0.12 / 10000) = 0.46 points.
  const Finding close = finding(Claim::better, {0.884}, {0.880}, 10'000);
  CHECK(close.noise() == Approx(std::sqrt(2 * 0.882 * 0.118 / 10'000.0)));
  CHECK(close.verdict() == "inside the noise");
  CHECK(finding(Claim::better, {0.884}, {0.880}).verdict() == "holds");  // no test-set size given: any difference counts
  CHECK(finding(Claim::better, {0.90}, {0.88}, 10'000).verdict() == "holds");
  // A diverged seed is not averaged in, and is said.
  const Finding diverged = finding(Claim::better, {0.9, std::nan("")}, {0.8, 0.8});
  CHECK(diverged.a.mean() == Approx(0.9));
  CHECK_THAT(diverged.a.summary(), Catch::Matchers::Contains("1 diverged"));
}

TEST_CASE("findings round-trip through findings.csv, verdicts recomputed", "[study][findings]") {
  const test_support::TempDir dir("study-findings");
  const std::vector<study::Finding> written = {
      {.claim = "LARS beats SGDM, at batch 1024", .kind = study::Claim::better, .a = {"LARS", {0.8, 0.82}}, .b = {"SGDM", {0.7, std::nan("")}},
       .note = "100 steps", .test_images = 10'000},
      {.claim = "LocalSGD matches sync", .kind = study::Claim::matches, .a = {"LocalSGD", {0.5}}, .b = {"sync", {0.51}}, .note = "",
       .test_images = 0, .caveat = "the workers drift, 47 rounds"}};
  study::write_findings(dir / "findings.csv", written);
  const auto read = study::read_findings(dir / "findings.csv");
  REQUIRE(read.size() == 2);
  for (std::size_t i = 0; i < read.size(); ++i) {
    CHECK(read[i].claim == written[i].claim);
    CHECK(read[i].kind == written[i].kind);
    CHECK(read[i].a.values.size() == written[i].a.values.size());
    CHECK(read[i].a.mean() == Approx(written[i].a.mean()));
    CHECK(read[i].b.mean() == Approx(written[i].b.mean()));
    CHECK(read[i].test_images == written[i].test_images);
    CHECK(read[i].caveat == written[i].caveat);
    CHECK(read[i].verdict() == written[i].verdict());
  }
  CHECK(std::isnan(read[0].b.values[1]));
  CHECK(study::read_findings(dir / "missing.csv").empty());
  CHECK_THAT(study::findings_table(read), Catch::Matchers::Contains("**holds**"));
  // The caveat says what may explain a failed claim, and only then.
  REQUIRE(read[1].verdict() == "does not hold");
  CHECK(study::finding_notes(read[1]) == "may explain it: the workers drift, 47 rounds");
  study::Finding held = read[0];
  held.caveat = "too few steps";
  CHECK(study::finding_notes(held) == "100 steps");
}

TEST_CASE("later stages take stage 3's best search row, never a retrain or a diverged trial", "[study]") {
  const test_support::TempDir dir("study-best");
  study::Config config{.results = dir / "results", .work = dir / "work"};
  // Before stage 3 has completed: the study's defaults.
  CHECK(study::stage3_best(config, "sgdm").lr == 0.01);
  CHECK(study::stage3_best(config, "adamw").lr == 1e-3);
  const auto row = [](std::string phase, std::string optimizer, std::string lr, std::string status, std::string validation) {
    return Row{{"phase", std::move(phase)}, {"optimizer", std::move(optimizer)}, {"lr", std::move(lr)}, {"weight_decay", "0.0004"},
               {"momentum", "0.9"}, {"status", std::move(status)}, {"best_validation_accuracy", std::move(validation)}};
  };
  const std::vector<Row> rows = {row("search", "sgdm", "0.01", "completed", "0.80"), row("search", "sgdm", "0.05", "completed", "0.86"),
                                 row("search", "sgdm", "0.5", "diverged", "0.95"), row("final", "sgdm", "0.05", "completed", "0.99"),
                                 row("search", "adamw", "0.003", "early_stopped", "0.84"), row("search", "adamw", "0.001", "completed", "0.83")};
  study::write_rows(config.results / "stage3_centralized" / "summary.csv", rows.front().columns(), rows);
  CHECK(study::stage3_best(config, "sgdm").lr == 0.01);  // the file is there, but stage 3 is not marked done
  study::stage_folder(config, "stage3_centralized").finish({{"stage", "stage3_centralized"}, study::status_cell(train::Status::completed)});
  const study::TunedSetting sgdm = study::stage3_best(config, "sgdm");
  CHECK(sgdm.lr == 0.05);
  CHECK(sgdm.weight_decay == 0.0004);
  CHECK_THAT(sgdm.source, Catch::Matchers::Contains("86.0"));
  CHECK(study::stage3_best(config, "adamw").lr == 0.003);
}

TEST_CASE("the plan of a scale counts the runs the stages make", "[study][plan]") {
  study::Scale scale;  // quick
  const study::SplitSizes sizes{24'000, 6'000, 10'000};
  const auto plans = study::plan_study(scale, sizes);
  REQUIRE(plans.size() == 6);
  const auto runs = [&](const std::string& stage) {
    for (const auto& p : plans)
      if (p.stage == stage) return p.runs;
    return std::size_t{0};
  };
  CHECK(runs("stage2_lenet") == 1);
  CHECK(runs("stage3_centralized") == (2 + 2) * 2 + 2 * scale.seeds);
  // Two batches x (SGDM, AdamW, three LARS lrs, three LAMB lrs), then each optimizer's second seed at the largest.
  CHECK(runs("stage4_large_batch") == 2 * 8 + 4);
  // Grid: at 4 epochs, K = 8 with H = 8 or 16 and K = 4 with H = 16 average fewer than 30 times
  // and are skipped; 6 cells run. Then LocalSGD's second seed, and sync, post-local, batch-B x 2 seeds.
  CHECK(runs("stage5_localsgd") == 6 + 1 + 3 * 2);
  CHECK(runs("stage6_slowmo") == 2 * 2 + 1 + 2);
  // Stage 7: sync, LocalSGD, SlowMo and DiLoCo with and without compressed messages; every seed.
  CHECK(runs("stage7_diloco") == study::stage7_methods * scale.seeds);
  for (const auto& p : plans)
    if (p.stage == "stage7_diloco")  // validation and test after every one of the 4 epochs
      CHECK(p.eval_images == Approx(10.0 * 2 * 4 * (6'000 + 10'000) + 10.0 * 2 * 10'000));
  // Stage 4 raises its epochs to 5 so that batch 1024 takes 100 steps (24 per epoch).
  for (const auto& p : plans)
    if (p.stage == "stage4_large_batch") CHECK(p.train_images == Approx(20.0 * 5 * 24'000));
  const study::Throughput t{.train = 10'000, .eval = 30'000};
  CHECK(study::estimated_seconds(plans[0], t) == Approx(3 * 24'000 / 10'000.0 + (3 * 6'000 + 10'000) / 30'000.0));
  // Stage 3's two work lists: the search (8 trials), then the retrains (4, longer); one run's
  // share of the stage never takes less than its longest run, and more groups never take longer.
  for (const auto& p : plans)
    if (p.stage == "stage3_centralized") {
      REQUIRE(p.lists.size() == 2);
      CHECK(p.lists[0].size() == 8);
      CHECK(p.lists[1].size() == 4);
      const double one = study::estimated_seconds(p, t, 1), four = study::estimated_seconds(p, t, 4);
      const double search = p.lists[0][0].train / t.train + p.lists[0][0].eval / t.eval;
      const double retrain = p.lists[1][0].train / t.train + p.lists[1][0].eval / t.eval;
      CHECK(one == Approx(8 * search + 4 * retrain));
      CHECK(four == Approx(2 * search + retrain));  // each group: two trials, then one retrain
      CHECK(study::estimated_seconds(p, t, 64) == Approx(search + retrain));
    }
}

TEST_CASE("estimated_seconds deals a work list's runs to the group free first", "[study][plan]") {
  study::StagePlan p{.stage = "s"};
  for (const double seconds : {3.0, 1.0, 1.0, 1.0, 2.0}) p.lists.back().push_back({.train = seconds, .eval = 0});
  p.next_list();
  p.lists.back().push_back({.train = 4.0, .eval = 0});
  const study::Throughput t{.train = 1, .eval = 1};
  CHECK(study::estimated_seconds(p, t, 1) == Approx(8 + 4));
  // Two groups: 3 | 1, 1, 1; the 2 goes to the first free (both at 3): the list ends at 5.
  CHECK(study::estimated_seconds(p, t, 2) == Approx(5 + 4));
  // Three: 3 | 1, then 1 | 1, then the 2 on the one free at 1: the list ends at 3.
  CHECK(study::estimated_seconds(p, t, 3) == Approx(3 + 4));
}

TEST_CASE("a run's lock is held by one holder at a time and dropped with it", "[study][work]") {
  const test_support::TempDir dir("study-lock");
  const fs::path file = dir / "run.lock";
  std::optional<study::FileLock> first = study::FileLock::try_acquire(file);
  REQUIRE(first);
  CHECK_FALSE(study::FileLock::try_acquire(file));  // another open file: another holder, even in this process
  first.reset();
  CHECK(study::FileLock::try_acquire(file));
}

TEST_CASE("a work message that ends early is an error naming the field and offset", "[study][work]") {
  study::Message m;
  m.put(Row{{"run", "a"}, {"status", "completed"}});
  study::Message whole(m.bytes());
  CHECK(whole.row("row") == Row{{"run", "a"}, {"status", "completed"}});
  std::vector<std::uint8_t> cut = m.bytes();
  cut.resize(cut.size() - 3);
  study::Message broken(cut);
  CHECK_THROWS_WITH(broken.row("row"), Catch::Contains("row at offset") && Catch::Contains("claims"));
  study::Message empty;
  CHECK_THROWS_WITH(empty.number("job"), Catch::Contains("job at offset 0 runs past its end"));
}

TEST_CASE("a work list in one process: rows in job order, finished runs looked up, metrics appended", "[study][work]") {
  const test_support::TempDir dir("study-work");
  const std::vector<study::Job> jobs = {{dir / "a"}, {dir / "b"}, {dir / "c"}};
  std::vector<std::size_t> trained;
  study::Work work;
  CHECK(work.root());
  CHECK(work.groups() == 1);
  const auto rows = work.run(
      jobs,
      [&](std::size_t i) -> std::optional<Row> {
        if (i == 1) return Row{{"run", "b"}, {"source", "found"}};
        return std::nullopt;
      },
      [&](std::size_t i, study::GroupComm& group) {
        CHECK(group.ranks() == 1);
        trained.push_back(i);
        distopt::io::write_text(jobs[i].folder / "metrics.jsonl", distopt::message("{\"run\": \"", jobs[i].folder.filename().string(), "\"}\n"));
        return Row{{"run", jobs[i].folder.filename().string()}, {"source", "trained"}};
      },
      dir / "metrics.jsonl");
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].cell("run") == "a");
  CHECK(rows[1].cell("source") == "found");
  CHECK(rows[2].cell("source") == "trained");
  CHECK(trained == std::vector<std::size_t>{0, 2});
  CHECK(distopt::io::read_text(dir / "metrics.jsonl") == "{\"run\": \"a\"}\n{\"run\": \"c\"}\n");
}

TEST_CASE("with a shared work folder a locked run waits until everything else is done", "[study][work]") {
  const test_support::TempDir dir("study-shared");
  const std::vector<study::Job> jobs = {{dir / "a"}, {dir / "b"}, {dir / "c"}};
  // Another job holds run a: this one trains b and c first, and a once the other lets it go
  // without finishing it (a finished run would be looked up under the lock instead).
  fs::path held_file = jobs[0].folder;
  held_file += ".lock";
  std::optional<study::FileLock> held = study::FileLock::try_acquire(held_file);
  REQUIRE(held);
  bool finished_elsewhere = false;
  std::vector<std::size_t> trained;
  study::Work work({.ranks_per_run = 1, .shared = true});
  const auto lookup = [&](std::size_t i) -> std::optional<Row> {
    if (i == 0 && finished_elsewhere) return Row{{"run", "a"}, {"source", "the other job"}};
    return std::nullopt;
  };
  const auto runner = [&](std::size_t i, study::GroupComm&) {
    trained.push_back(i);
    if (i == 2) held.reset();  // the other job stops holding a
    return Row{{"run", jobs[i].folder.filename().string()}, {"source", "trained"}};
  };
  auto rows = work.run(jobs, lookup, runner, dir / "metrics.jsonl");
  CHECK(trained == std::vector<std::size_t>{1, 2, 0});
  CHECK(rows[0].cell("source") == "trained");
  // Run again with a held and then finished by the other job: looked up, not trained.
  held = study::FileLock::try_acquire(held_file);
  trained.clear();
  const auto finishing_runner = [&](std::size_t i, study::GroupComm&) {
    trained.push_back(i);
    if (i == 2) finished_elsewhere = true, held.reset();
    return Row{{"run", jobs[i].folder.filename().string()}, {"source", "trained"}};
  };
  rows = work.run(jobs, lookup, finishing_runner, dir / "metrics.jsonl");
  CHECK(trained == std::vector<std::size_t>{1, 2});
  CHECK(rows[0].cell("source") == "the other job");
}
