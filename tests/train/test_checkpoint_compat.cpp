// Checkpoints written by an earlier version of the format keep loading: the files committed under
// tests/data/checkpoints (see its README) are read with today's code, their state checked against
// what NumPy reads in them (manifest.json), written again and read back to the same bits, and the
// runs they stopped resumed to their end.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "distopt/local/checkpoint.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/run.hpp"
#include "../support/checkpoint_task.hpp"
#include "../support/files.hpp"

using namespace distopt;
namespace fs = std::filesystem;

namespace {

const fs::path folder = fs::path(DISTOPT_TEST_DATA_DIR) / "checkpoints";

const nlohmann::json& manifest() {
  static const nlohmann::json m = [] {
    std::ifstream in(folder / "manifest.json");
    REQUIRE(in);
    return nlohmann::json::parse(in);
  }();
  return m;
}

// `values` against the manifest's entry for `field` of `file`: the same first element, and a sum
// equal up to the order NumPy adds in.
template <class T>
void check_array(const std::string& file, const std::string& field, std::span<const T> values) {
  INFO(file << ": " << field);
  const auto& all = manifest().at(file);
  REQUIRE(all.contains(field));
  const auto& entry = all.at(field);
  double sum = 0, magnitude = 0;
  for (const T v : values) sum += static_cast<double>(v), magnitude += std::abs(static_cast<double>(v));
  std::size_t count = 1;
  for (const auto& d : entry.at("shape")) count *= d.get<std::size_t>();
  REQUIRE(values.size() == count);
  CHECK(static_cast<double>(values.front()) == entry.at("first").get<double>());
  CHECK(std::abs(sum - entry.at("sum").get<double>()) <= 1e-12 * (magnitude + 1));
}

template <class Params>
void check_blocks(const std::string& file, const std::string& prefix, const Params& params,
                  std::span<const typename Params::scalar_type> values) {
  for (const auto& block : params.blocks())
    check_array(file, prefix + block.name, values.subspan(static_cast<std::size_t>(block.offset),
                                                          static_cast<std::size_t>(block.size)));
}

template <class Optimizer, class Params>
void check_optimizer(const std::string& file, const std::string& prefix, Optimizer& optimizer, const Params& params) {
  auto& state = optimizer.state();
  CHECK(static_cast<double>(state.step()) == manifest().at(file).at(prefix + "step").at("first").get<double>());
  for (const auto& name : state.buffer_names()) {
    const auto buffer = state.buffer(name);
    check_blocks(file, prefix + name + ".", params, std::span<const float>(buffer.data(), buffer.size()));
  }
}

template <class Model>
std::vector<float> values_of(Model& model) {
  const auto v = model.parameters().values();
  return {v.data(), v.data() + v.size()};
}

template <class Optimizer>
std::vector<float> state_of(Optimizer& optimizer) {
  std::vector<float> out;
  auto& state = optimizer.state();
  for (const auto& name : state.buffer_names()) {
    const auto buffer = state.buffer(name);
    out.insert(out.end(), buffer.begin(), buffer.end());
  }
  out.push_back(static_cast<float>(state.step()));
  return out;
}

template <class Optimizer, class Options>
void check_central(const std::string& file, const std::string& optimizer_name, Options optimizer_options) {
  auto model = test_support::checkpoint_model();
  Optimizer optimizer(model.parameters(), optimizer_options);
  std::vector<float> best;
  train::Progress progress;
  train::load_checkpoint(folder / file, model.parameters(), best, optimizer, progress);

  const auto& params = model.parameters();
  check_blocks(file, "model.", params, std::span<const float>(values_of(model)));
  REQUIRE(best.size() == static_cast<std::size_t>(params.size()));
  check_blocks(file, "best.", params, std::span<const float>(best));
  check_optimizer(file, "optimizer.", optimizer, params);
  const auto& m = manifest().at(file);
  const auto scalar = [&](const char* field) { return m.at(field).at("first").get<double>(); };
  CHECK(static_cast<double>(progress.epochs_done) == scalar("progress.epochs_done"));
  CHECK(static_cast<double>(progress.step) == scalar("progress.step"));
  CHECK(static_cast<double>(progress.loader.epoch) == scalar("progress.loader_epoch"));
  CHECK(static_cast<double>(progress.loader.batch) == scalar("progress.loader_batch"));
  CHECK(static_cast<double>(progress.seed) == scalar("progress.seed"));
  CHECK(static_cast<double>(progress.best_epoch) == scalar("progress.best_epoch"));
  CHECK(progress.best_accuracy == scalar("progress.best_accuracy"));
  CHECK(progress.best_loss == scalar("progress.best_loss"));
  REQUIRE(progress.history.size() == 1);
  CHECK(progress.history[0].train_loss == scalar("history.train_loss"));
  CHECK(progress.history[0].validation_accuracy == scalar("history.validation_accuracy"));

  // Written by today's code and read back: the same state, bit for bit.
  test_support::TempDir dir("compat-central");
  train::save_checkpoint(dir / "again.npz", model.parameters(), std::span<const float>(best), optimizer, progress);
  auto again = test_support::checkpoint_model();
  again.parameters().values().setZero();
  Optimizer again_optimizer(again.parameters(), optimizer_options);
  std::vector<float> again_best;
  train::Progress again_progress;
  train::load_checkpoint(dir / "again.npz", again.parameters(), again_best, again_optimizer, again_progress);
  CHECK(values_of(again) == values_of(model));
  CHECK(again_best == best);
  CHECK(state_of(again_optimizer) == state_of(optimizer));
  CHECK(again_progress.step == progress.step);
  CHECK(again_progress.history == progress.history);

  // The run it stopped resumes from it to its end.
  auto options = test_support::checkpoint_run_options(dir / "run", optimizer_name, optimizer_options.lr,
                                                     optimizer_options.weight_decay);
  options.resume = true;
  const train::CheckpointFolder run_folder(options.out, optimizer_name, options.batch_size, optimizer_options.lr,
                                           optimizer_options.weight_decay);
  fs::create_directories(run_folder.path());
  fs::copy_file(folder / file, run_folder.file(1));
  auto resumed = test_support::checkpoint_model();
  Optimizer resumed_optimizer(resumed.parameters(), optimizer_options);
  const auto result = train::run_training(resumed, resumed_optimizer, test_support::checkpoint_schedule(),
                                          test_support::checkpoint_task().run(), options);
  CHECK(result.status == train::Status::completed);
  CHECK(result.epochs_done == 3);
  CHECK(result.steps == 3 * progress.step);
  REQUIRE(result.history.size() == 3);
  CHECK(result.history[0] == progress.history[0]);
}

}  // namespace

TEST_CASE("format-1 checkpoints of centralized runs load, round-trip and resume", "[train][checkpoint][compat]") {
  SECTION("SGDM") { check_central<optim::Sgdm<BasicParameterSet<float>>>("central_sgdm_v1.npz", "sgdm", test_support::checkpoint_sgdm()); }
  SECTION("AdamW") {
    check_central<optim::AdamW<BasicParameterSet<float>>>("central_adamw_v1.npz", "adamw", test_support::checkpoint_adamw());
  }
}

TEST_CASE("a format-1 LocalTrainer checkpoint loads, round-trips and resumes", "[local][checkpoint][compat]") {
  const std::string file = "local_slowmo_v1.npz";
  const auto model = test_support::checkpoint_model();
  auto trainer = test_support::checkpoint_local_trainer(model);
  local::LocalCheckpoint::load(trainer, folder / file);
  const std::uint64_t epochs = trainer.epochs_done();
  const auto& m = manifest().at(file);
  CHECK(static_cast<double>(epochs) == m.at("progress.epochs_done").at("first").get<double>());
  CHECK(static_cast<double>(trainer.step()) == m.at("local.step").at("first").get<double>());
  CHECK(static_cast<double>(trainer.communication().rounds) == m.at("communication.rounds").at("first").get<double>());
  const auto& params = trainer.global_model().parameters();
  check_blocks(file, "model.", params, std::span<const float>(values_of(trainer.global_model())));
  check_array(file, "outer.slow_momentum", trainer.outer().momentum());
  for (std::size_t k = 0; k < 2; ++k) {
    const std::string prefix = "worker." + std::to_string(k) + ".";
    check_optimizer(file, prefix + "optimizer.", trainer.worker_optimizer(k), params);
    check_blocks(file, prefix + "model.", params, std::span<const float>(values_of(trainer.worker_model(k))));
  }

  test_support::TempDir dir("compat-local");
  local::LocalCheckpoint::save(trainer, dir / "again.npz");
  auto again = test_support::checkpoint_local_trainer(model);
  local::LocalCheckpoint::load(again, dir / "again.npz");
  CHECK(again.epochs_done() == epochs);
  CHECK(again.step() == trainer.step());
  CHECK(values_of(again.global_model()) == values_of(trainer.global_model()));
  CHECK(std::vector<double>(again.outer().momentum().begin(), again.outer().momentum().end()) ==
        std::vector<double>(trainer.outer().momentum().begin(), trainer.outer().momentum().end()));
  for (std::size_t k = 0; k < 2; ++k) {
    CHECK(state_of(again.worker_optimizer(k)) == state_of(trainer.worker_optimizer(k)));
    CHECK(values_of(again.worker_model(k)) == values_of(trainer.worker_model(k)));
  }

  auto options = test_support::checkpoint_local_run_options(dir / "run");
  options.resume = true;
  fs::create_directories(options.out);
  fs::copy_file(folder / file, options.out / "1.npz");
  auto resumed = test_support::checkpoint_local_trainer(model);
  const auto& task = test_support::checkpoint_task();
  const auto result = train::run_local(resumed, test_support::checkpoint_schedule(),
                                       {nullptr, &task.validation, &task.test, task.normalizer}, options);
  CHECK(result.status == train::Status::completed);
  CHECK(result.epochs_done == 3);
  CHECK(result.steps == 3 * trainer.step());
}
