#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include <omp.h>

#include "distopt/data/split.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/search.hpp"
#include "../support/tiny_task.hpp"
#include "../support/files.hpp"

using namespace distopt;
using Catch::Matchers::Contains;
using train::Dimension;
namespace fs = std::filesystem;

namespace {

using Model = nn::LeNet5<float>;

struct Sets {
  data::LabelledImages train, validation, test;
};

const Sets& sets() {
  static const Sets s{test_support::template_images(100, 1), test_support::template_images(40, 2),
                      test_support::template_images(40, 3)};
  return s;
}

double value_or(const train::Trial& t, std::string_view name, double fallback) {
  for (const auto& [n, v] : t.values)
    if (n == name) return v;
  return fallback;
}

/// A real trial: classic LeNet-5, SGDM at the trial's lr (and weight_decay), `epochs` epochs on
/// `train`, model and loader seeded by the trial. The final weights go to `weights` if given.
train::TrialResult lenet_trial(const train::Trial& t, std::size_t epochs, const data::LabelledImages& train_set,
                               const data::LabelledImages* validation, std::vector<float>* weights = nullptr) {
  Model model({.preset = nn::Preset::classic, .classes = 10, .seed = t.seed});
  const double lr = t.get("lr");
  optim::Sgdm optimizer(model.parameters(), {.lr = lr, .momentum = 0.9, .weight_decay = value_or(t, "weight_decay", 0.0)});
  const train::RunData run{&train_set, validation, &sets().test, data::Normalizer(data::channel_statistics(sets().train))};
  const train::RunOptions options{
      .epochs = epochs,
      .batch_size = 10,
      .seed = t.seed,
      .augmentation = std::nullopt,  // random flips of random templates only slow the learning down
      .prefetch = false,
      .eval_batch = 64};
  const auto result = train::run_training(model, optimizer, optim::Constant{lr}, run, options);
  if (weights != nullptr) {
    const auto v = model.parameters().values();
    weights->assign(v.data(), v.data() + v.size());
  }
  return train::to_trial_result(result);
}

train::TrialResult made_up(std::size_t index, train::Status status, double validation, std::string text = {}) {
  train::TrialResult r{.status = status, .validation_accuracy = validation, .test_accuracy = validation / 2,
                       .epochs = 3, .seconds = 1.5, .message = std::move(text)};
  r.trial.index = index;
  r.trial.seed = 1000 + index;
  r.trial.values = {{"lr", 0.1 / static_cast<double>(index + 1)}, {"weight_decay", 5e-4}};
  return r;
}

std::vector<std::size_t> indices_of(const std::vector<train::TrialResult>& results) {
  std::vector<std::size_t> out;
  for (const auto& r : results) out.push_back(r.trial.index);
  return out;
}

std::string label_of(const train::Record& r, std::string_view name) {
  for (const auto& [n, text] : r.labels)
    if (n == name) return text;
  return "<none>";
}

/// RFC 4180 CSV: quoted fields with "" for a quote.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (quoted) {
      if (ch == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
      else if (ch == '"') quoted = false;
      else field += ch;
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      rows.back().push_back(field), field.clear();
    } else if (ch == '\n') {
      rows.back().push_back(field), field.clear();
      rows.emplace_back();
    } else {
      field += ch;
    }
  }
  if (rows.back().empty()) rows.pop_back();
  return rows;
}

std::string read_text(const fs::path& file) {
  const auto bytes = test_support::read_bytes(file);
  return {bytes.begin(), bytes.end()};
}

}  // namespace

TEST_CASE("grid_trials: the cartesian product, last dimension fastest", "[train][search]") {
  const train::SearchSpace space = {Dimension::grid("lr", {0.1, 0.01, 0.001}), Dimension::grid("weight_decay", {0, 5e-4})};
  const auto trials = train::grid_trials(space, 7);
  REQUIRE(trials.size() == 6);
  const std::vector<std::pair<double, double>> expected = {{0.1, 0}, {0.1, 5e-4}, {0.01, 0}, {0.01, 5e-4}, {0.001, 0}, {0.001, 5e-4}};
  std::set<std::uint64_t> seeds;
  for (std::size_t i = 0; i < trials.size(); ++i) {
    INFO("trial " << i);
    CHECK(trials[i].index == i);
    REQUIRE(trials[i].values.size() == 2);
    CHECK(trials[i].values[0].first == "lr");
    CHECK(trials[i].values[1].first == "weight_decay");
    CHECK(trials[i].get("lr") == expected[i].first);
    CHECK(trials[i].get("weight_decay") == expected[i].second);
    CHECK(trials[i].seed == train::trial_seed(7, i));
    seeds.insert(trials[i].seed);
  }
  CHECK(seeds.size() == 6);
  CHECK(trials[3].folder() == "trial-003_lr-0.01_weight_decay-0.0005");
  CHECK_THROWS_WITH(trials[0].get("momentum"), Contains("momentum"));

  // Another seed: the same values, other trial seeds.
  const auto other = train::grid_trials(space, 8);
  CHECK(other[4].values == trials[4].values);
  CHECK(other[4].seed != trials[4].seed);
  // Batch sizes are a list like any other; no dimension at all is one empty trial.
  CHECK(train::grid_trials({Dimension::choice("batch_size", {64, 128, 256})}).size() == 3);
  const auto empty = train::grid_trials({});
  REQUIRE(empty.size() == 1);
  CHECK(empty[0].values.empty());
  CHECK(empty[0].folder() == "trial-000");
  // A grid needs lists.
  CHECK_THROWS_WITH(train::grid_trials({Dimension::grid("a", {1}), Dimension::log_uniform("lr", 1e-4, 1)}),
                    Contains("'lr'") && Contains("grid"));
}

TEST_CASE("random_trials: reproducible from the seed, trial i independent of the count", "[train][search]") {
  const train::SearchSpace space = {Dimension::log_uniform("lr", 1e-4, 1e-1), Dimension::uniform("momentum", 0.8, 0.99),
                                    Dimension::choice("batch_size", {64, 128, 256})};
  const auto a = train::random_trials(space, 20, 3);
  const auto b = train::random_trials(space, 20, 3);
  const auto first = train::random_trials(space, 5, 3);
  const auto other = train::random_trials(space, 20, 4);
  REQUIRE(a.size() == 20);
  REQUIRE(first.size() == 5);
  bool same = true, prefix = true, differs = false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    same = same && a[i].values == b[i].values && a[i].seed == b[i].seed && a[i].index == i;
    if (i < first.size()) prefix = prefix && first[i].values == a[i].values && first[i].seed == a[i].seed;
    differs = differs || other[i].values != a[i].values;
  }
  CHECK(same);
  CHECK(prefix);
  CHECK(differs);
  CHECK(a[0].values[0].first == "lr");
  CHECK(a[0].values[1].first == "momentum");
  CHECK(a[0].values[2].first == "batch_size");
  CHECK(a[2].seed == train::trial_seed(3, 2));
  CHECK(train::random_trials(space, 0, 3).empty());
}

TEST_CASE("random_trials: values within their ranges, log-uniform spread evenly over decades", "[train][search]") {
  const train::SearchSpace space = {Dimension::log_uniform("lr", 1e-5, 1e-1), Dimension::uniform("momentum", 0.5, 0.9),
                                    Dimension::choice("batch_size", {64, 128, 256}), Dimension::uniform("fixed", 2, 2)};
  const std::size_t n = 2000;
  const auto trials = train::random_trials(space, n, 11);
  std::vector<std::size_t> decades(4, 0);
  std::size_t in_range = 0, momentum_low_half = 0, fixed = 0;
  std::vector<std::size_t> batches(3, 0);
  double log_sum = 0;
  for (const auto& t : trials) {
    const double lr = t.get("lr"), momentum = t.get("momentum"), batch = t.get("batch_size");
    const bool ok = lr >= 1e-5 && lr <= 1e-1 && momentum >= 0.5 && momentum < 0.9 &&
                    (batch == 64 || batch == 128 || batch == 256);
    in_range += ok ? 1 : 0;
    if (lr >= 1e-5 && lr <= 1e-1) ++decades[std::min<std::size_t>(3, static_cast<std::size_t>(std::floor(std::log10(lr) + 5)))];
    log_sum += std::log10(lr);
    momentum_low_half += momentum < 0.7 ? 1 : 0;
    batches[batch == 64 ? 0 : batch == 128 ? 1 : 2] += 1;
    fixed += t.get("fixed") == 2 ? 1 : 0;
  }
  CHECK(in_range == n);
  CHECK(fixed == n);
  // Log-uniform: each decade ~500 of 2000 (binomial sd ~19); a plain uniform draw would put ~90%
  // in the last decade.
  for (std::size_t d = 0; d < 4; ++d) {
    INFO("decade 1e" << static_cast<int>(d) - 5);
    CHECK(decades[d] > 400);
    CHECK(decades[d] < 600);
  }
  CHECK(std::abs(log_sum / static_cast<double>(n) + 3.0) < 0.1);
  CHECK(std::abs(static_cast<double>(momentum_low_half) - 1000.0) < 100.0);
  for (const auto count : batches) CHECK(std::abs(static_cast<double>(count) - 2000.0 / 3.0) < 100.0);
}

TEST_CASE("bad search spaces are refused, naming the dimension", "[train][search]") {
  CHECK_THROWS_WITH(Dimension::grid("lr", {}), Contains("'lr'") && Contains("no values"));
  CHECK_THROWS_WITH(Dimension::choice("batch_size", {}), Contains("'batch_size'"));
  CHECK_THROWS_WITH(Dimension::grid("lr", {0.1, std::nan("")}), Contains("'lr'") && Contains("value 1"));
  CHECK_THROWS_WITH(Dimension::log_uniform("lr", 0, 1), Contains("'lr'") && Contains("log-uniform"));
  CHECK_THROWS_WITH(Dimension::log_uniform("weight_decay", -1e-4, 1e-2), Contains("'weight_decay'"));
  CHECK_THROWS_WITH(Dimension::uniform("momentum", 0.99, 0.9), Contains("'momentum'") && Contains("low"));
  CHECK_THROWS_WITH(Dimension::log_uniform("lr", 1e-1, 1e-3), Contains("'lr'") && Contains("low"));
  CHECK_THROWS_WITH(Dimension::uniform("momentum", 0, INFINITY), Contains("'momentum'") && Contains("finite"));
  CHECK_THROWS_WITH(Dimension::grid("lr/2", {1}), Contains("'lr/2'"));
  CHECK_THROWS_WITH(Dimension::grid("", {1}), Contains("name"));
  CHECK_THROWS_WITH(Dimension::grid("epochs", {1, 2}), Contains("'epochs'") && Contains("column"));
  CHECK_THROWS_AS(Dimension::uniform("momentum", 0.99, 0.9), std::invalid_argument);

  // Dimensions built by hand are checked when the trials are made.
  const Dimension empty{.name = "dropout", .kind = Dimension::Kind::values};
  CHECK_THROWS_WITH(train::grid_trials({empty}), Contains("'dropout'"));
  CHECK_THROWS_WITH(train::random_trials({empty}, 3, 0), Contains("'dropout'"));
  const Dimension log_zero{.name = "lr", .kind = Dimension::Kind::log_uniform, .low = 0, .high = 1};
  CHECK_THROWS_WITH(train::random_trials({Dimension::grid("a", {1}), log_zero}, 3, 0), Contains("'lr'"));
  const Dimension reversed{.name = "momentum", .kind = Dimension::Kind::uniform, .low = 1, .high = 0};
  CHECK_THROWS_WITH(train::random_trials({reversed}, 3, 0), Contains("'momentum'"));
  CHECK_THROWS_WITH(train::grid_trials({Dimension::grid("lr", {1}), Dimension::grid("lr", {2})}),
                    Contains("'lr'") && Contains("twice"));
}

TEST_CASE("rank: validation accuracy descending, ties to the lower index, diverged and failed last", "[train][search]") {
  const std::vector<train::TrialResult> results = {
      made_up(0, train::Status::completed, 0.5),      made_up(1, train::Status::diverged, std::nan(""), "loss is nan"),
      made_up(2, train::Status::early_stopped, 0.7),  made_up(3, train::Status::failed, 0.9, "boom"),  // a failed trial's number does not count
      made_up(4, train::Status::completed, 0.7),      made_up(5, train::Status::completed, std::nan("")),
      made_up(6, train::Status::completed, 0.2)};
  const auto ranked = train::rank(results);
  CHECK(indices_of(ranked) == std::vector<std::size_t>{2, 4, 0, 6, 5, 1, 3});
  // The order of the input does not matter.
  std::vector<train::TrialResult> reversed(results.rbegin(), results.rend());
  CHECK(indices_of(train::rank(reversed)) == indices_of(ranked));

  const auto top = train::best(results);
  CHECK(top.trial.index == 2);
  CHECK(top.status == train::Status::early_stopped);
  const std::vector<train::TrialResult> none = {made_up(0, train::Status::diverged, std::nan("")), made_up(1, train::Status::failed, 0.3),
                                                made_up(2, train::Status::diverged, std::nan(""))};
  CHECK_THROWS_AS(train::best(none), std::runtime_error);
  CHECK_THROWS_WITH(train::best(none), Contains("2 diverged") && Contains("1 failed"));
  CHECK_THROWS_WITH(train::best({}), Contains("none"));
}

TEST_CASE("run_search: a failing and a diverging trial do not stop the search", "[train][search]") {
  const auto trials = train::grid_trials({Dimension::grid("x", {0.1, 0.2, 0.3, 0.4, 0.5, 0.6})});
  const auto function = [](const train::Trial& t) -> train::TrialResult {
    if (t.index == 1) throw std::runtime_error("boom in trial 1");
    if (t.index == 2) return {.status = train::Status::diverged, .epochs = 1, .message = "loss is inf at step 3"};
    if (t.index == 4) throw optim::Diverged("gradient is nan");
    return {.status = train::Status::completed, .validation_accuracy = t.get("x"), .test_accuracy = 1 - t.get("x"), .epochs = 2, .seconds = 0.25};
  };
  for (const std::size_t parallel : {1u, 3u}) {
    INFO("parallel_trials " << parallel);
    auto memory = std::make_shared<train::MemorySink>();
    const auto results =
        train::run_search(trials, function, {.parallel_trials = parallel, .threads_per_trial = 1, .metrics = train::Metrics({memory})});
    REQUIRE(results.size() == 6);
    CHECK(indices_of(results) == std::vector<std::size_t>{0, 1, 2, 3, 4, 5});
    CHECK(results[0].status == train::Status::completed);
    CHECK(results[1].status == train::Status::failed);
    CHECK_THAT(results[1].message, Contains("boom in trial 1"));
    CHECK(results[2].status == train::Status::diverged);
    CHECK(results[2].message == "loss is inf at step 3");
    CHECK(results[4].status == train::Status::diverged);
    CHECK_THAT(results[4].message, Contains("gradient is nan"));
    CHECK(results[5].status == train::Status::completed);
    CHECK(results[5].validation_accuracy == 0.6);
    CHECK(results[5].test_accuracy == 1 - 0.6);
    CHECK(results[5].seconds == 0.25);  // the function's own figure is kept
    CHECK(results[1].seconds > 0);      // and measured where it gave none
    CHECK(results[3].trial.values == trials[3].values);
    CHECK(results[3].trial.seed == trials[3].seed);
    CHECK(indices_of(train::rank(results)) == std::vector<std::size_t>{5, 3, 0, 1, 2, 4});
    CHECK(train::best(results).trial.index == 5);

    // One "trial" record per trial, with its values, status and results.
    REQUIRE(memory->records.size() == 6);
    std::vector<double> finished;
    std::set<std::size_t> seen;
    for (const auto& r : memory->records) {
      CHECK(r.event == "trial");
      const auto i = static_cast<std::size_t>(r.get("index"));
      REQUIRE(i < 6);
      seen.insert(i);
      CHECK(r.get("x") == trials[i].get("x"));
      CHECK(label_of(r, "status") == train::to_string(results[i].status));
      CHECK(label_of(r, "trial") == trials[i].folder());
      CHECK(r.get("trials") == 6);
      if (results[i].status == train::Status::completed) CHECK(r.get("validation_accuracy") == results[i].validation_accuracy);
      if (i == 1) CHECK_THAT(label_of(r, "message"), Contains("boom in trial 1"));
      finished.push_back(r.get("finished"));
    }
    CHECK(seen.size() == 6);
    CHECK(finished == std::vector<double>{1, 2, 3, 4, 5, 6});
  }
  CHECK_THROWS_WITH(train::run_search(trials, function, {.parallel_trials = 0}), Contains("parallel_trials"));
}

TEST_CASE("run_search: two trials at once give the same bits as one at a time", "[train][search][parallel]") {
  const auto trials = train::grid_trials({Dimension::grid("lr", {0.02, 0.05}), Dimension::grid("weight_decay", {0, 5e-4})}, 21);
  const int caller_threads = omp_get_max_threads();
  std::vector<std::vector<float>> serial_weights(trials.size()), parallel_weights(trials.size());
  std::vector<int> serial_threads(trials.size()), parallel_threads(trials.size());
  const auto make = [&](std::vector<std::vector<float>>& weights, std::vector<int>& threads) {
    return [&weights, &threads](const train::Trial& t) {
      threads[t.index] = omp_get_max_threads();
      return lenet_trial(t, 1, sets().train, &sets().validation, &weights[t.index]);
    };
  };
  const auto serial = train::run_search(trials, make(serial_weights, serial_threads));
  const auto parallel =
      train::run_search(trials, make(parallel_weights, parallel_threads), {.parallel_trials = 2, .threads_per_trial = 1});
  REQUIRE(serial.size() == 4);
  REQUIRE(parallel.size() == 4);
  for (std::size_t i = 0; i < trials.size(); ++i) {
    INFO("trial " << i);
    CHECK(serial[i].status == train::Status::completed);
    CHECK(parallel[i].status == serial[i].status);
    CHECK(parallel[i].trial.index == i);
    CHECK(parallel[i].validation_accuracy == serial[i].validation_accuracy);
    CHECK(parallel[i].test_accuracy == serial[i].test_accuracy);
    CHECK(parallel[i].epochs == 1);
    CHECK_FALSE(serial_weights[i].empty());
    CHECK(parallel_weights[i] == serial_weights[i]);
    CHECK(serial_threads[i] == caller_threads);  // serial, default: all of the caller's threads
    CHECK(parallel_threads[i] == 1);              // each worker set its own thread count
  }
  // Different trials trained different models.
  CHECK(serial_weights[0] != serial_weights[1]);
  CHECK(omp_get_max_threads() == caller_threads);  // the caller's setting is left alone

  // Serial with an explicit thread count sets it for the trials and restores the caller's after.
  std::vector<int> seen(1, 0);
  (void)train::run_search({trials[0]}, [&](const train::Trial&) {
    seen[0] = omp_get_max_threads();
    return train::TrialResult{.status = train::Status::completed};
  }, {.threads_per_trial = 3});
  CHECK(seen[0] == 3);
  CHECK(omp_get_max_threads() == caller_threads);
}

TEST_CASE("write_search_table: a CSV that parses back and a markdown table", "[train][search]") {
  test_support::TempDir dir("search-table");
  const auto ranked = train::rank({made_up(0, train::Status::completed, 0.5), made_up(1, train::Status::failed, std::nan(""), "bad, \"very\" bad\nreally"),
                                   made_up(2, train::Status::completed, 0.75), made_up(3, train::Status::diverged, std::nan(""), "loss | nan")});
  train::write_search_table(dir / "search", ranked);

  const auto csv = parse_csv(read_text(dir / "search" / "results.csv"));
  REQUIRE(csv.size() == 5);
  CHECK(csv[0] == std::vector<std::string>{"rank", "trial", "lr", "weight_decay", "status", "validation_accuracy", "test_accuracy",
                                           "epochs", "seconds", "seed", "folder", "message"});
  for (std::size_t k = 0; k < ranked.size(); ++k) {
    INFO("row " << k + 1);
    const auto& row = csv[k + 1];
    const auto& r = ranked[k];
    REQUIRE(row.size() == 12);
    CHECK(row[0] == std::to_string(k + 1));
    CHECK(std::stoul(row[1]) == r.trial.index);
    CHECK(std::abs(std::stod(row[2]) - r.trial.get("lr")) <= 1e-6 * r.trial.get("lr"));
    CHECK(std::stod(row[3]) == 5e-4);
    CHECK(row[4] == train::to_string(r.status));
    if (std::isnan(r.validation_accuracy)) CHECK(row[5] == "nan");
    else CHECK(std::stod(row[5]) == r.validation_accuracy);
    CHECK(std::stoul(row[7]) == r.epochs);
    CHECK(std::stod(row[8]) == r.seconds);
    CHECK(std::stoull(row[9]) == r.trial.seed);
    CHECK(row[10] == r.trial.folder());
    CHECK(row[11] == r.message);
  }
  CHECK(csv[1][1] == "2");
  CHECK(csv[2][1] == "0");
  CHECK(csv[3][4] == "failed");
  CHECK(csv[3][11] == "bad, \"very\" bad\nreally");
  CHECK(csv[4][4] == "diverged");

  std::istringstream md(read_text(dir / "search" / "results.md"));
  std::vector<std::string> lines;
  for (std::string line; std::getline(md, line);) lines.push_back(line);
  REQUIRE(lines.size() == 6);
  CHECK(lines[0] == "| rank | lr | weight_decay | status | validation accuracy | test accuracy | epochs | seconds |");
  CHECK(lines[1] == "|---:|---:|---:|---|---:|---:|---:|---:|");
  CHECK(lines[2] == "| 1 | 0.0333333 | 0.0005 | completed | 0.75 | 0.375 | 3 | 1.5 |");
  CHECK(lines[3] == "| 2 | 0.1 | 0.0005 | completed | 0.5 | 0.25 | 3 | 1.5 |");
  CHECK(lines[4] == "| 3 | 0.05 | 0.0005 | failed | - | - | 3 | 1.5 |");
  CHECK(lines[5] == "| 4 | 0.025 | 0.0005 | diverged | - | - | 3 | 1.5 |");

  // Nothing but the two tables is left in the folder (no temporary files).
  std::set<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir / "search")) files.insert(entry.path().filename().string());
  CHECK(files == std::set<std::string>{"results.csv", "results.md"});

  // Trials of different spaces do not make one table.
  auto mixed = ranked;
  mixed[2].trial.values.pop_back();
  CHECK_THROWS_WITH(train::write_search_table(dir / "mixed", mixed), Contains("trial 1"));
}

TEST_CASE("a real lr search: an absurd lr diverges and ranks last, a sensible one first", "[train][search]") {
  test_support::TempDir dir("lr-search");
  const auto trials = train::grid_trials({Dimension::grid("lr", {1e4, 0.05, 1e-6})}, 5);
  auto memory = std::make_shared<train::MemorySink>();
  const auto results = train::run_search(
      trials, [](const train::Trial& t) { return lenet_trial(t, 2, sets().train, &sets().validation); },
      {.parallel_trials = 2, .metrics = train::Metrics({memory})});
  REQUIRE(results.size() == 3);
  INFO("messages: " << results[0].message << " | " << results[1].message << " | " << results[2].message);
  CHECK(results[0].status == train::Status::diverged);
  CHECK_FALSE(results[0].message.empty());
  CHECK(std::isnan(results[0].validation_accuracy));
  CHECK(std::isnan(results[0].test_accuracy));
  CHECK(results[1].status == train::Status::completed);
  CHECK(results[2].status == train::Status::completed);
  CHECK(memory->records.size() == 3);

  const auto ranked = train::rank(results);
  INFO("validation accuracy: lr 0.05 " << results[1].validation_accuracy << ", lr 1e-6 " << results[2].validation_accuracy);
  CHECK(ranked.front().trial.get("lr") == 0.05);
  CHECK(ranked.back().trial.get("lr") == 1e4);
  // Ten classes: chance is 0.1; lr 0.05 learns the templates, lr 1e-6 barely moves.
  CHECK(ranked.front().validation_accuracy > ranked[1].validation_accuracy);
  CHECK(ranked.front().validation_accuracy >= 0.3);
  train::write_search_table(dir.path(), ranked);
  const auto csv = parse_csv(read_text(dir / "results.csv"));
  REQUIRE(csv.size() == 4);
  CHECK(csv[1][2] == "0.05");
  CHECK(csv[3][3] == "diverged");

  // Retrain the best on train + validation, then its one look at the test set.
  const train::TrialResult top = train::best(results);
  const data::LabelledImages all = data::concatenate(sets().train, sets().validation);
  REQUIRE(all.size() == 140);
  const auto final_run = lenet_trial(top.trial, 2, all, nullptr);
  CHECK(final_run.status == train::Status::completed);
  CHECK(std::isnan(final_run.validation_accuracy));
  INFO("retrained test accuracy " << final_run.test_accuracy);
  CHECK(final_run.test_accuracy >= 0.3);
}
