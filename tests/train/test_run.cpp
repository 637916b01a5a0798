#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>

#include <omp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "distopt/nn/lenet5.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/run.hpp"
#include "../support/tiny_task.hpp"
#include "../support/files.hpp"

using namespace distopt;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

using Model = nn::LeNet5<float>;

Model small_model(std::uint64_t seed = 1) { return test_support::tiny_lenet(seed); }

/// 10 classes, each a noisy version of its own random template: learnable in a few epochs.
struct Sets {
  data::LabelledImages train, validation, test;
  train::RunData run() const {
    return {&train, &validation, &test, data::Normalizer(data::channel_statistics(train))};
  }
};

const Sets& sets() {
  static const Sets s{test_support::template_images(160, 1), test_support::template_images(40, 2),
                      test_support::template_images(40, 3)};
  return s;
}

train::RunOptions base_options() {
  return {.epochs = 3, .batch_size = 16, .seed = 5, .prefetch = false, .eval_batch = 64,
          .description = {.optimizer = "sgdm", .lr = 0.05, .weight_decay = 5e-4}};
}

std::vector<float> values_of(Model& m) {
  const auto v = m.parameters().values();
  return {v.data(), v.data() + v.size()};
}

}  // namespace

TEST_CASE("run_training: stopping after epoch 1 and resuming gives the same bits", "[train][resume]") {
  test_support::TempDir dir("resume");
  const optim::Schedule schedule = optim::Cosine{.lr = 0.05, .t_max = 30};

  Model uninterrupted = small_model();
  optim::Sgdm full_opt(uninterrupted.parameters(), {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4});
  auto options = base_options();
  options.out = dir / "a";
  const auto full = train::run_training(uninterrupted, full_opt, schedule, sets().run(), options);
  REQUIRE(full.status == train::Status::completed);

  options.out = dir / "b";
  {
    Model first = small_model();
    optim::Sgdm opt(first.parameters(), {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4});
    auto stopped = options;
    stopped.stop_after = 1;
    CHECK(train::run_training(first, opt, schedule, sets().run(), stopped).status == train::Status::interrupted);
  }
  Model resumed = small_model(/*seed*/ 77);  // other initial weights: the checkpoint must replace them
  optim::Sgdm opt(resumed.parameters(), {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4});
  options.resume = true;
  train::MemorySink* sink = nullptr;
  auto memory = std::make_shared<train::MemorySink>();
  sink = memory.get();
  const auto second = train::run_training(resumed, opt, schedule, sets().run(), options, train::Metrics({memory}));
  CHECK(second.status == train::Status::completed);
  CHECK(second.steps == full.steps);
  CHECK(values_of(resumed) == values_of(uninterrupted));
  CHECK(second.test.loss == full.test.loss);
  CHECK(second.test.accuracy == full.test.accuracy);
  REQUIRE(second.history.size() == 3);
  for (std::size_t e = 0; e < 3; ++e) {
    CHECK(second.history[e].train_loss == full.history[e].train_loss);
    CHECK(second.history[e].validation_accuracy == full.history[e].validation_accuracy);
  }
  // Only epochs 2 and 3 ran in the resumed process.
  std::size_t epoch_records = 0;
  for (const auto& r : sink->records) epoch_records += r.event == "epoch" ? 1 : 0;
  CHECK(epoch_records == 2);
}

TEST_CASE("run_training: a process killed while writing a checkpoint leaves the previous one", "[train][checkpoint]") {
  test_support::TempDir dir("kill");
  const optim::Schedule schedule = optim::Constant{0.02};
  auto options = base_options();
  options.out = dir / "run";
  options.description = {.optimizer = "sgdm", .lr = 0.02, .weight_decay = 0.0};
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // libgomp's thread pool does not survive fork(); one thread never touches it. (The run gives
    // the same bits for any thread count, so the comparison below still holds.)
    omp_set_num_threads(1);
    // Dies at the third write into the epoch-2 checkpoint: its temporary file is half written.
    io::write_fault_hook = [](const fs::path& target) {
      static int writes = 0;
      if (target.filename() == "2.npz" && ++writes == 3) ::_exit(42);
    };
    Model m = small_model();
    optim::Sgdm opt(m.parameters(), {.lr = 0.02, .momentum = 0.9});
    (void)train::run_training(m, opt, schedule, sets().run(), options);
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 42);

  const train::CheckpointFolder folder(dir / "run" / "train" / "sgdm" / "16" / "0.02" / "0");
  CHECK(folder.epochs() == std::vector<std::uint64_t>{1});
  Model m = small_model(9);
  optim::Sgdm opt(m.parameters(), {.lr = 0.02, .momentum = 0.9});
  train::Progress progress;
  std::vector<float> best;
  train::load_checkpoint(folder.file(1), m.parameters(), best, opt, progress);
  CHECK(progress.epochs_done == 1);

  // And the run resumes from it to the bits of an uninterrupted run.
  options.resume = true;
  const auto resumed = train::run_training(m, opt, schedule, sets().run(), options);
  Model reference = small_model();
  optim::Sgdm ref_opt(reference.parameters(), {.lr = 0.02, .momentum = 0.9});
  auto fresh = base_options();
  (void)train::run_training(reference, ref_opt, schedule, sets().run(), fresh);
  CHECK(resumed.status == train::Status::completed);
  CHECK(values_of(m) == values_of(reference));
  // The half-written temporary file of the killed writer is gone (its PID is no process now).
  for (const auto& entry : fs::directory_iterator(folder.path())) CHECK_THAT(entry.path().filename().string(), !Contains(".tmp-"));
}

TEST_CASE("run_training: a diverging run is marked and reported, not thrown", "[train][diverge]") {
  Model m = small_model();
  optim::Sgdm opt(m.parameters(), {.lr = 1e6, .momentum = 0.9});
  auto memory = std::make_shared<train::MemorySink>();
  auto options = base_options();
  const auto result = train::run_training(m, opt, optim::Constant{1e6}, sets().run(), options, train::Metrics({memory}));
  CHECK(result.status == train::Status::diverged);
  CHECK_THAT(result.message, Contains("step") || Contains("non-finite"));
  CHECK(std::isnan(result.test.accuracy));
  REQUIRE_FALSE(memory->records.empty());
  const auto& summary = memory->records.back();
  CHECK(summary.event == "summary");
  bool marked = false;
  for (const auto& [name, text] : summary.labels) marked = marked || (name == "status" && text == "diverged");
  CHECK(marked);
  // JSON has no NaN: the summary's test figures are written as null.
  const auto json = nlohmann::json::parse(train::to_json(summary).dump());
  CHECK(json["test_accuracy"].is_null());
  CHECK(json["status"] == "diverged");
}

TEST_CASE("train_epoch: accumulating micro-batches equals the large batch", "[train][accumulation]") {
  const auto& s = sets();
  const data::Normalizer normalizer(data::channel_statistics(s.train));
  std::vector<std::vector<float>> results;
  for (const std::size_t accumulation : {1u, 4u, 5u}) {
    Model m = small_model();
    optim::Sgdm opt(m.parameters(), {.lr = 0.05, .momentum = 0.9});
    data::Loader loader(s.train, normalizer, {.batch_size = 40, .seed = 1});
    std::int64_t step = 0;
    const auto totals = train::train_epoch(m, opt, optim::Constant{0.05}, loader, step, {.accumulation_steps = accumulation});
    CHECK(totals.steps == 4);
    CHECK(step == 4);
    results.push_back(values_of(m));
  }
  for (std::size_t r = 1; r < results.size(); ++r) {
    double worst = 0;
    for (std::size_t i = 0; i < results[0].size(); ++i)
      worst = std::max(worst, static_cast<double>(std::abs(results[r][i] - results[0][i])) / (1e-3 + std::abs(results[0][i])));
    INFO("accumulation run " << r);
    CHECK(worst < 1e-4);
  }
  // The automatic rule: a cap of 10 on a batch of 40 is 4 micro-batches, the same update.
  Model m = small_model();
  optim::Sgdm opt(m.parameters(), {.lr = 0.05, .momentum = 0.9});
  data::Loader loader(s.train, normalizer, {.batch_size = 40, .seed = 1});
  std::int64_t step = 0;
  (void)train::train_epoch(m, opt, optim::Constant{0.05}, loader, step, {.micro_batch_cap = 10});
  CHECK(values_of(m) == results[1]);
}

TEST_CASE("run_training: early stopping restores the best weights", "[train][early_stopping]") {
  test_support::TempDir dir("early");
  Model m = small_model();
  optim::AdamW opt(m.parameters(), {.lr = 3e-3, .weight_decay = 0.0});
  auto options = base_options();
  options.epochs = 30;
  options.patience = 2;
  options.keep_last = 1;
  options.out = dir.path();
  options.description = {.optimizer = "adamw", .lr = 3e-3, .weight_decay = 0.0};
  const auto result = train::run_training(m, opt, optim::Constant{3e-3}, sets().run(), options);
  REQUIRE(result.status == train::Status::early_stopped);
  CHECK(result.epochs_done == static_cast<std::uint64_t>(result.best_epoch) + 2);
  CHECK(result.epochs_done < 30);
  // The final weights are the best epoch's, and its checkpoint was kept beside the last one.
  const train::CheckpointFolder folder(result.checkpoints);
  const auto kept = folder.epochs();
  CHECK(kept == std::vector<std::uint64_t>{static_cast<std::uint64_t>(result.best_epoch), result.epochs_done});
  Model at_best = small_model(3);
  optim::AdamW o(at_best.parameters(), {.lr = 3e-3, .weight_decay = 0.0});
  train::Progress progress;
  std::vector<float> best;
  train::load_checkpoint(folder.file(static_cast<std::uint64_t>(result.best_epoch)), at_best.parameters(), best, o, progress);
  CHECK(values_of(at_best) == values_of(m));
  CHECK(best == values_of(m));
  double best_seen = 0;
  for (const auto& e : result.history) best_seen = std::max(best_seen, e.validation_accuracy);
  CHECK(result.best_validation_accuracy == best_seen);
  CHECK(train::evaluate(m, *sets().run().validation).accuracy == best_seen);
}

TEST_CASE("checkpoints of another model or optimizer, or damaged, are refused by name", "[train][checkpoint]") {
  test_support::TempDir dir("refuse");
  Model m = small_model();
  optim::Sgdm opt(m.parameters(), {.lr = 0.01});
  train::Progress progress;
  progress.epochs_done = 0;
  const fs::path file = dir / "1.npz";
  train::save_checkpoint(file, m.parameters(), std::span<const float>(), opt, progress);
  std::vector<float> best;

  Model other({.preset = nn::Preset::classic, .classes = 7});
  optim::Sgdm other_opt(other.parameters(), {.lr = 0.01});
  CHECK_THROWS_WITH(train::load_checkpoint(file, other.parameters(), best, other_opt, progress),
                    Contains("1.npz") && Contains("model.fc3.weight") && Contains("shape"));

  optim::AdamW adam(m.parameters(), {});
  const auto before = values_of(m);
  CHECK_THROWS_WITH(train::load_checkpoint(file, m.parameters(), best, adam, progress), Contains("1.npz") && Contains("kind"));

  auto bytes = test_support::read_bytes(file);
  test_support::write_bytes(dir / "2.npz", std::span(bytes).first(bytes.size() / 2));
  CHECK_THROWS_WITH(train::load_checkpoint(dir / "2.npz", m.parameters(), best, opt, progress), Contains("2.npz"));
  bytes[bytes.size() / 3] ^= 0x10;
  test_support::write_bytes(dir / "3.npz", bytes);
  CHECK_THROWS_WITH(train::load_checkpoint(dir / "3.npz", m.parameters(), best, opt, progress), Contains("3.npz"));
  CHECK(values_of(m) == before);
}

TEST_CASE("run_training: an output folder that cannot be written fails before training", "[train][checkpoint]") {
  test_support::TempDir dir("unwritable");
  test_support::write_bytes(dir / "file", std::vector<std::uint8_t>{1});
  Model m = small_model();
  optim::Sgdm opt(m.parameters(), {.lr = 0.01});
  auto memory = std::make_shared<train::MemorySink>();
  auto options = base_options();
  options.out = dir / "file" / "below";
  const auto before = values_of(m);
  CHECK_THROWS_WITH(train::run_training(m, opt, optim::Constant{0.01}, sets().run(), options, train::Metrics({memory})),
                    Contains("below"));
  CHECK(memory->records.empty());
  CHECK(values_of(m) == before);
}

TEST_CASE("metrics: JSON Lines records, CSV quoting", "[train][metrics]") {
  test_support::TempDir dir("metrics");
  {
    train::JsonLinesSink sink(dir / "m" / "metrics.jsonl", false);
    sink.write(train::Record{.event = "epoch", .epoch = 2, .step = 40}.set("loss", 1.25).set("lr", 0.1).label("optimizer", "sg\"dm"));
    sink.write(train::Record{.event = "step", .epoch = 3, .step = 41}.set("loss", std::numeric_limits<double>::infinity()));
  }
  std::ifstream in(dir / "m" / "metrics.jsonl");
  std::string line;
  std::vector<nlohmann::json> lines;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["event"] == "epoch");
  CHECK(lines[0]["epoch"] == 2);
  CHECK(lines[0]["loss"] == 1.25);
  CHECK(lines[0]["lr"] == 0.1);
  CHECK(lines[0]["optimizer"] == "sg\"dm");
  CHECK(lines[1]["loss"].is_null());

  io::write_csv(dir / "s.csv", {"name", "value"}, {{"a,b", "1"}, {"q\"x", "2"}});
  const auto csv = test_support::read_bytes(dir / "s.csv");
  CHECK(std::string(csv.begin(), csv.end()) == "name,value\n\"a,b\",1\n\"q\"\"x\",2\n");
  CHECK_THROWS_WITH(io::write_csv(dir / "t.csv", {"a"}, {{"1", "2"}}), Contains("t.csv"));
}

TEST_CASE("run_training: a fresh run refuses a folder holding an earlier run, unless told to overwrite", "[train][checkpoint]") {
  test_support::TempDir dir("fresh");
  auto options = base_options();
  options.epochs = 2;
  options.out = dir.path();
  {
    Model m = small_model();
    optim::Sgdm opt(m.parameters(), {.lr = 0.02});
    REQUIRE(train::run_training(m, opt, optim::Constant{0.02}, sets().run(), options).status == train::Status::completed);
  }
  Model m = small_model();
  optim::Sgdm opt(m.parameters(), {.lr = 0.02});
  CHECK_THROWS_WITH(train::run_training(m, opt, optim::Constant{0.02}, sets().run(), options),
                    Contains("earlier run") && Contains("resume") && Contains("overwrite"));
  // Another configuration (here fewer epochs) is named as such.
  options.epochs = 1;
  CHECK_THROWS_WITH(train::run_training(m, opt, optim::Constant{0.02}, sets().run(), options),
                    Contains("another configuration") && Contains("epochs: 2 -> 1") && Contains("overwrite"));
  options.overwrite = true;
  const auto result = train::run_training(m, opt, optim::Constant{0.02}, sets().run(), options);
  CHECK(result.status == train::Status::completed);
  CHECK(train::CheckpointFolder(result.checkpoints).epochs() == std::vector<std::uint64_t>{1});
  // The folder is named by the run's description, never read back from the optimizer.
  options.description.lr = std::nan("");
  CHECK_THROWS_WITH(train::run_training(m, opt, optim::Constant{0.02}, sets().run(), options),
                    Contains("RunOptions.description") && Contains("lr"));
}
