// A run folder is one run's: claimed under a lock, holding the run's configuration, cleaned of
// dead writers' leftovers, resumed from its newest intact checkpoint, and stopped cleanly by a
// stop request (a signal) in the middle of an epoch.
#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>

#include <sys/wait.h>
#include <unistd.h>

#include "distopt/core/file_lock.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/interrupt.hpp"
#include "distopt/train/run.hpp"
#include "distopt/train/run_folder.hpp"
#include "../support/files.hpp"
#include "../support/tiny_task.hpp"

using namespace distopt;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

using Model = nn::LeNet5<float>;

struct Sets {
  data::LabelledImages train, validation, test;
  train::RunData run() const { return {&train, &validation, &test, data::Normalizer(data::channel_statistics(train))}; }
};

const Sets& sets() {
  static const Sets s{test_support::template_images(160, 1), test_support::template_images(40, 2),
                      test_support::template_images(40, 3)};
  return s;
}

train::RunOptions options_in(const fs::path& out) {
  return {.epochs = 3, .batch_size = 16, .step = {.log_every = 1}, .seed = 5, .prefetch = false, .eval_batch = 64,
          .description = {.optimizer = "sgdm", .lr = 0.05, .weight_decay = 5e-4, .values = {{"momentum", 0.9}}},
          .out = out};
}

const optim::Schedule schedule = optim::Cosine{.lr = 0.05, .t_max = 30};

std::vector<float> values_of(Model& m) {
  const auto v = m.parameters().values();
  return {v.data(), v.data() + v.size()};
}

/// A run of options_in(out) as run_training gives it; `metrics` sees its records.
train::RunResult run(const train::RunOptions& options, std::vector<float>* weights = nullptr, const train::Metrics& metrics = {},
                     double momentum = 0.9) {
  Model m = test_support::tiny_lenet(1);
  optim::Sgdm opt(m.parameters(), {.lr = 0.05, .momentum = momentum, .weight_decay = 5e-4});
  auto result = train::run_training(m, opt, schedule, sets().run(), options, metrics);
  if (weights != nullptr) *weights = values_of(m);
  return result;
}

fs::path run_folder(const fs::path& out) { return out / "train" / "sgdm" / "16" / "0.05" / "0.0005"; }

/// Asks the run to stop (as SIGINT would) when it sees the step record of global step `at`.
class StopAtStep final : public train::MetricSink {
 public:
  explicit StopAtStep(std::int64_t at) : at_(at) {}
  void write(const train::Record& r) override {
    if (r.event == "step" && r.step == at_) train::request_stop(SIGINT);
    if (r.event == "epoch") epochs.push_back(r);
  }
  std::vector<train::Record> epochs;

 private:
  std::int64_t at_;
};

}  // namespace

TEST_CASE("RunConfig: differences by name, what a resume may change, JSON round trip", "[train][run_folder]") {
  test_support::TempDir dir("config");
  train::RunConfig a;
  a.set("optimizer", "sgdm").set("lr", 0.05).set("epochs", std::size_t{10}).set("seed", std::uint64_t{3});
  train::RunConfig b = a;
  b.set("seed", std::uint64_t{4}).set("epochs", std::size_t{12}).set("model", "mlp:64");
  CHECK(b.differences(a) == std::vector<std::string>{"epochs: 10 -> 12", "seed: 3 -> 4", "model: (none) -> mlp:64"});
  CHECK(b.differences(a, train::resume_may_change) == std::vector<std::string>{"seed: 3 -> 4", "model: (none) -> mlp:64"});
  train::RunConfig fewer = a;
  fewer.set("epochs", std::size_t{5});
  CHECK(fewer.differences(a, train::resume_may_change) == std::vector<std::string>{"epochs: 10 -> 5"});

  a.write(dir.path());
  const auto read = train::RunConfig::read(dir.path());
  REQUIRE(read);
  CHECK(*read == a);
  CHECK_FALSE(train::RunConfig::read(dir / "nowhere"));
  fs::create_directories(dir / "bad");
  std::ofstream(dir / "bad" / "config.json") << "{\"lr\": 0.05}";
  CHECK_THROWS_WITH(train::RunConfig::read(dir / "bad"), Contains("config.json") && Contains("'lr' is not a string"));
}

TEST_CASE("claim_folder: one process shares its claim, another holder is named and refused", "[train][run_folder]") {
  test_support::TempDir dir("claim");
  const fs::path folder = dir / "run";
  {
    const auto first = train::claim_folder(folder);
    const auto again = train::claim_folder(folder);
    CHECK(first == again);
    // Another open file description is another holder, as another process would be.
    CHECK_FALSE(io::FileLock::try_acquire(folder / "run.lock"));
    CHECK_THAT(io::FileLock::holder(folder / "run.lock"), Contains(message("PID ", ::getpid())));
  }
  CHECK(io::FileLock::try_acquire(folder / "run.lock"));  // released with the last claim
  const auto other = io::FileLock::try_acquire(folder / "run.lock");
  REQUIRE(other);
  CHECK_THROWS_AS(train::claim_folder(folder), train::FolderBusy);
  CHECK_THROWS_WITH(train::claim_folder(folder), Contains("in use by another process") && Contains(message("PID ", ::getpid())));
}

TEST_CASE("run_training: a second run on a claimed folder is refused and changes nothing", "[train][run_folder]") {
  test_support::TempDir dir("busy");
  auto options = options_in(dir.path());
  options.epochs = 1;
  std::vector<float> before;
  REQUIRE(run(options, &before).status == train::Status::completed);
  const auto files_before = test_support::read_bytes(run_folder(dir.path()) / "1.npz");
  const auto holder = io::FileLock::try_acquire(run_folder(dir.path()) / "run.lock");  // a live run elsewhere
  REQUIRE(holder);
  options.overwrite = true;
  CHECK_THROWS_WITH(run(options), Contains("in use by another process"));
  CHECK(test_support::read_bytes(run_folder(dir.path()) / "1.npz") == files_before);
}

TEST_CASE("run_training: another configuration is refused by name, a resume may only add epochs", "[train][run_folder]") {
  test_support::TempDir dir("identity");
  auto options = options_in(dir.path());
  options.epochs = 2;
  REQUIRE(run(options).status == train::Status::completed);
  REQUIRE(train::RunConfig::read(run_folder(dir.path())));

  auto other_seed = options;
  other_seed.seed = 6;
  CHECK_THROWS_WITH(run(other_seed), Contains("another configuration") && Contains("seed: 5 -> 6") && Contains("overwrite"));
  auto same = options;
  CHECK_THROWS_WITH(run(same), Contains("earlier run") && Contains("resume"));

  auto resume = options;
  resume.resume = true;
  resume.description.values = {{"momentum", 0.8}};
  CHECK_THROWS_WITH(run(resume, nullptr, {}, 0.8), Contains("momentum: 0.9 -> 0.8"));
  resume.description.values = {{"momentum", 0.9}};
  resume.epochs = 1;
  CHECK_THROWS_WITH(run(resume), Contains("epochs: 2 -> 1"));
  resume.epochs = 3;
  const auto longer = run(resume);
  CHECK(longer.status == train::Status::completed);
  CHECK(longer.epochs_done == 3);
  CHECK(train::RunConfig::read(run_folder(dir.path()))->get("epochs") == "3");

  other_seed.overwrite = true;
  CHECK(run(other_seed).status == train::Status::completed);
  CHECK(train::RunConfig::read(run_folder(dir.path()))->get("seed") == "6");
}

TEST_CASE("run folders: dead writers' temporary files go, live ones and other names stay", "[train][run_folder]") {
  test_support::TempDir dir("leftovers");
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  REQUIRE(::waitpid(child, nullptr, 0) == child);  // its PID is now no process
  const fs::path folder = run_folder(dir.path());
  fs::create_directories(folder);
  const std::string dead = message("2.npz.tmp-", child, "-00ff00ff00ff00ff");
  const std::string live = message("2.npz.tmp-", ::getpid(), "-00ff00ff00ff00ff");
  for (const auto& name : {dead, live, std::string("007.npz"), std::string("notes.tmp")})
    test_support::write_bytes(folder / name, std::vector<std::uint8_t>{1, 2, 3});
  std::vector<std::string> notes;
  (void)train::open_run_folder(train::CheckpointFolder(folder),
                               {.note = [&](const std::string& n) { notes.push_back(n); }});
  CHECK_FALSE(fs::exists(folder / dead));
  CHECK(fs::exists(folder / live));
  CHECK(fs::exists(folder / "notes.tmp"));
  REQUIRE(notes.size() == 2);
  CHECK_THAT(notes[0], Contains(dead) && Contains("died"));
  CHECK_THAT(notes[1], Contains("007.npz") && Contains("<epoch>.npz"));
  // 007.npz is no checkpoint of epoch 7: only canonical names are read.
  CHECK(train::CheckpointFolder(folder).epochs().empty());
  CHECK(train::CheckpointFolder::epoch_of("7.npz") == 7u);
  CHECK_FALSE(train::CheckpointFolder::epoch_of("007.npz"));
  CHECK_FALSE(train::CheckpointFolder::epoch_of("+7.npz"));
  // With overwrite, every leftover goes (the claim says no writer of ours is at work).
  (void)train::open_run_folder(train::CheckpointFolder(folder), {.overwrite = true, .note = [](const std::string&) {}});
  CHECK_FALSE(fs::exists(folder / live));
}

TEST_CASE("resume: a damaged newest checkpoint is set aside and the one before resumed, to the same bits",
          "[train][run_folder][resume]") {
  test_support::TempDir dir("damaged");
  auto options = options_in(dir / "a");
  options.keep_last = 3;
  options.keep_best = false;
  std::vector<float> full;
  REQUIRE(run(options, &full).status == train::Status::completed);

  // A run stopped after epoch 3 of 3... is complete; cut it at 2 epochs in another folder.
  options.out = dir / "b";
  auto cut = options;
  cut.stop_after = 2;
  REQUIRE(run(cut).status == train::Status::interrupted);
  const train::CheckpointFolder folder(run_folder(dir / "b"));
  REQUIRE(folder.epochs() == std::vector<std::uint64_t>{1, 2});
  auto bytes = test_support::read_bytes(folder.file(2));
  bytes[bytes.size() / 2] ^= 0x40;
  test_support::write_bytes(folder.file(2), bytes);

  std::vector<std::string> notes;
  const auto point = train::resume_point(folder, {.note = [&](const std::string& n) { notes.push_back(n); }});
  REQUIRE(point);
  CHECK(*point == folder.file(1));
  CHECK(fs::exists(run_folder(dir / "b") / "2.npz.damaged"));
  CHECK_FALSE(fs::exists(folder.file(2)));
  REQUIRE(notes.size() == 1);
  CHECK_THAT(notes[0], Contains("2.npz") && Contains("damaged") && Contains("2.npz.damaged"));

  auto resume = options;
  resume.resume = true;
  std::vector<float> resumed;
  REQUIRE(run(resume, &resumed).status == train::Status::completed);
  CHECK(resumed == full);
}

TEST_CASE("a stop request mid-epoch checkpoints there, and resuming gives the bits and epoch records of an uninterrupted run",
          "[train][run_folder][resume][signal]") {
  test_support::TempDir dir("stop");
  auto options = options_in(dir / "a");
  auto whole_sink = std::make_shared<StopAtStep>(-1);
  std::vector<float> full;
  const auto whole = run(options, &full, train::Metrics({whole_sink}));
  REQUIRE(whole.status == train::Status::completed);

  options.out = dir / "b";
  auto first_sink = std::make_shared<StopAtStep>(15);  // 10 steps per epoch: the middle of epoch 2
  const auto first = run(options, nullptr, train::Metrics({first_sink}));
  const int requested = train::stop_requested();
  train::request_stop(0);
  CHECK(requested == SIGINT);
  REQUIRE(first.status == train::Status::interrupted);
  CHECK(first.epochs_done == 1);
  CHECK(first.steps == 15);
  const train::CheckpointFolder folder(run_folder(dir / "b"));
  REQUIRE(fs::exists(folder.interrupted_file()));
  CHECK(train::resume_point(folder) == folder.interrupted_file());

  auto resume = options;
  resume.resume = true;
  auto second_sink = std::make_shared<StopAtStep>(-1);
  std::vector<float> resumed;
  const auto second = run(resume, &resumed, train::Metrics({second_sink}));
  REQUIRE(second.status == train::Status::completed);
  CHECK(resumed == full);
  CHECK(second.test.loss == whole.test.loss);
  CHECK_FALSE(fs::exists(folder.interrupted_file()));  // epoch 2's checkpoint superseded it
  // Epoch 2, cut at its fifth step and finished in another process, reports what it would have.
  REQUIRE(second_sink->epochs.size() == 2);
  REQUIRE(whole_sink->epochs.size() == 3);
  CHECK(second_sink->epochs[0].get("loss") == whole_sink->epochs[1].get("loss"));
  CHECK(second_sink->epochs[0].get("accuracy") == whole_sink->epochs[1].get("accuracy"));
  CHECK(second_sink->epochs[1].get("loss") == whole_sink->epochs[2].get("loss"));
}
