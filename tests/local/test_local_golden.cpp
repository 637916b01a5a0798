// LocalTrainer against PyTorch: LocalSGD and SlowMo trajectories written out independently by
// tools/golden/local.py (tests/data/local/, see its manifest.json for the protocol).
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "distopt/data/statistics.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/local/outer.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/sgdm.hpp"

using namespace distopt;

namespace {

using Model = nn::LeNet5<float>;
using Sgd = optim::Sgdm<ParameterSet>;

constexpr std::size_t rounds = 4;
// Relative error per stored entry, |a - b| / max(|b|, floor): the floor keeps entries near zero
// (whose float32 rounding is relatively large) from dominating.
constexpr double tolerance = 1e-4;
constexpr double floor_value = 1e-2;
// The parameters in the order of the golden norms' columns (PyTorch's named_parameters()).
const std::array<std::string, 10> parameter_order{"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                                  "fc1.bias",     "fc2.weight", "fc2.bias",     "fc3.weight", "fc3.bias"};

std::string path(const std::string& file) { return std::string(DISTOPT_TEST_DATA_DIR) + "/local/" + file; }

template <class T>
xt::xarray<T> load(const std::string& file) {
  return xt::load_npy<T>(path(file));
}

const data::LabelledImages& train_set() {
  static const data::LabelledImages set = [] {
    data::LabelledImages s;
    const auto images = load<std::uint8_t>("images.npy");
    const auto labels = load<std::int64_t>("labels.npy");
    REQUIRE(images.dimension() == 4);
    s.images = xt::xtensor<std::uint8_t, 4>::from_shape({images.shape()[0], 3, 32, 32});
    REQUIRE(images.size() == s.images.size());
    std::copy(images.begin(), images.end(), s.images.begin());
    REQUIRE(labels.size() == s.size());
    for (const auto label : labels) {
      s.fine.push_back(static_cast<std::uint8_t>(label));
      s.coarse.push_back(0);
    }
    return s;
  }();
  return set;
}

data::ChannelStats golden_stats() {
  const auto stats = load<double>("stats.npy");
  data::ChannelStats s;
  for (std::size_t c = 0; c < stats.shape()[1]; ++c) s.mean.push_back(stats(0, c)), s.std.push_back(stats(1, c));
  return s;
}

data::Shards golden_shards() {
  const auto shards = load<std::int64_t>("shards.npy");
  data::Shards s(shards.shape()[0]);
  for (std::size_t k = 0; k < s.size(); ++k)
    for (std::size_t i = 0; i < shards.shape()[1]; ++i) s[k].push_back(static_cast<std::size_t>(shards(k, i)));
  return s;
}

Model initial_model() {
  Model net({.preset = nn::Preset::classic, .classes = 10});
  auto& params = net.parameters();
  for (const auto& block : params.blocks()) {
    const auto w = load<float>("weights/" + block.name + ".npy");
    REQUIRE(static_cast<std::ptrdiff_t>(w.size()) == block.size);
    REQUIRE(std::vector<std::ptrdiff_t>(w.shape().begin(), w.shape().end()) == block.shape);
    for (std::ptrdiff_t i = 0; i < block.size; ++i) params.values()(block.offset + i) = w.flat(static_cast<std::size_t>(i));
  }
  return net;
}

/// What a C++ run gives: the global model after every round (values() of the ParameterSet,
/// padding included) and each round's mean training loss.
struct Run {
  std::vector<std::vector<float>> models;
  std::vector<double> losses;
};

template <class Outer>
Run run(Outer outer, local::InnerBuffers buffers) {
  const Model start = initial_model();
  const local::LocalOptions options{.workers = 3, .local_steps = 3, .batch_size = 4, .inner_buffers = buffers,
                                    .augmentation = std::nullopt, .shuffle = false};
  local::LocalTrainer trainer(start, Sgd(start.parameters(), {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4}),
                              std::move(outer), train_set(), data::Normalizer(golden_stats()), options, golden_shards());
  const optim::Schedule schedule = optim::MultiStep{.lr = 0.05, .milestones = {5, 9}, .gamma = 0.5};
  Run result;
  for (std::size_t r = 0; r < rounds; ++r) {
    result.losses.push_back(trainer.round(schedule).loss);
    const auto v = trainer.global_model().parameters().values();
    result.models.emplace_back(v.data(), v.data() + v.size());
  }
  return result;
}

struct Case {
  std::string name;
  Run (*make)();
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all{
      {"localsgd", [] { return run(local::LocalSgd{}, local::InnerBuffers::maintain); }},
      {"slowmo_reset", [] { return run(local::SlowMo({.alpha = 1.0, .beta = 0.5}), local::InnerBuffers::reset); }},
      {"slowmo_maintain", [] { return run(local::SlowMo({.alpha = 1.0, .beta = 0.5}), local::InnerBuffers::maintain); }},
      {"slowmo_average", [] { return run(local::SlowMo({.alpha = 1.0, .beta = 0.5}), local::InnerBuffers::average); }},
      {"slowmo_alpha07_beta03_maintain",
       [] { return run(local::SlowMo({.alpha = 0.7, .beta = 0.3}), local::InnerBuffers::maintain); }},
  };
  return all;
}

// Each case is trained once and shared by the test cases below.
const Run& cpp_run(const Case& c) {
  static std::map<std::string, Run> done;
  auto it = done.find(c.name);
  if (it == done.end()) it = done.emplace(c.name, c.make()).first;
  return it->second;
}

/// The worst errors of one C++ model against golden case `golden` after round `r` (0-based).
struct Errors {
  double relative = 0;  ///< max over stored entries of |a - b| / max(|b|, floor)
  double absolute = 0;  ///< max over stored entries of |a - b|
  double norm = 0;      ///< max over parameters of | ||a|| - ||b|| | / ||b||, whole parameters
};

Errors compare(const std::vector<float>& model, const std::string& golden, std::size_t r) {
  const Model layout = initial_model();
  const auto norms = load<double>(golden + "/norms.npy");
  REQUIRE(norms.shape()[0] == rounds);
  REQUIRE(norms.shape()[1] == parameter_order.size());
  Errors e;
  std::size_t seen = 0;
  for (const auto& block : layout.parameters().blocks()) {
    const auto entries = load<std::int64_t>("samples/" + block.name + ".npy");
    const auto expected = load<double>(golden + "/" + block.name + ".npy");
    REQUIRE(expected.shape()[0] == rounds);
    REQUIRE(expected.shape()[1] == entries.size());
    REQUIRE(std::all_of(entries.begin(), entries.end(), [&](std::int64_t i) { return i >= 0 && i < block.size; }));
    for (std::size_t j = 0; j < entries.size(); ++j) {
      const double a = model[static_cast<std::size_t>(block.offset + entries(j))], b = expected(r, j);
      e.absolute = std::max(e.absolute, std::abs(a - b));
      e.relative = std::max(e.relative, std::abs(a - b) / std::max(std::abs(b), floor_value));
    }
    double squares = 0;
    for (std::ptrdiff_t i = 0; i < block.size; ++i) {
      const double a = model[static_cast<std::size_t>(block.offset + i)];
      squares += a * a;
    }
    const auto column = static_cast<std::size_t>(
        std::find(parameter_order.begin(), parameter_order.end(), block.name) - parameter_order.begin());
    REQUIRE(column < parameter_order.size());
    e.norm = std::max(e.norm, std::abs(std::sqrt(squares) - norms(r, column)) / norms(r, column));
    ++seen;
  }
  REQUIRE(seen == parameter_order.size());
  return e;
}

}  // namespace

TEST_CASE("golden LocalSGD data: the saved statistics are distopt's channel statistics", "[local][golden]") {
  const data::ChannelStats computed = data::channel_statistics(train_set());
  const data::ChannelStats saved = golden_stats();
  REQUIRE(computed.channels() == 3);
  REQUIRE(saved.channels() == 3);
  for (std::size_t c = 0; c < 3; ++c) {
    CHECK(computed.mean[c] == Approx(saved.mean[c]).epsilon(1e-12));
    CHECK(computed.std[c] == Approx(saved.std[c]).epsilon(1e-12));
  }
  const auto shards = golden_shards();
  REQUIRE(shards.size() == 3);
  for (const auto& shard : shards) CHECK(shard.size() % 4 == 0);
}

TEST_CASE("LocalTrainer follows PyTorch's LocalSGD and SlowMo trajectories within 1e-4", "[local][golden]") {
  double worst_overall = 0;
  for (const auto& c : cases()) {
    const Run& cpp = cpp_run(c);
    const auto losses = load<double>(c.name + "/loss.npy");
    REQUIRE(losses.size() == rounds);
    Errors worst;
    double worst_loss = 0;
    for (std::size_t r = 0; r < rounds; ++r) {
      const Errors e = compare(cpp.models[r], c.name, r);
      worst.relative = std::max(worst.relative, e.relative);
      worst.absolute = std::max(worst.absolute, e.absolute);
      worst.norm = std::max(worst.norm, e.norm);
      worst_loss = std::max(worst_loss, std::abs(cpp.losses[r] - losses(r)) / std::abs(losses(r)));
    }
    // The worst errors show in the expansion of these checks (run with -s to see them pass).
    INFO("case " << c.name);
    CHECK(worst.relative <= tolerance);
    CHECK(worst.norm <= tolerance);
    CHECK(worst_loss <= tolerance);
    CHECK(worst.absolute <= tolerance * 0.25);  // the largest stored |entry| is 0.222
    worst_overall = std::max(worst_overall, worst.relative);
  }
  CHECK(worst_overall <= tolerance);
}

TEST_CASE("golden LocalSGD and SlowMo cases are different trajectories", "[local][golden]") {
  const auto& all = cases();
  for (std::size_t a = 0; a < all.size(); ++a)
    for (std::size_t b = 0; b < all.size(); ++b) {
      if (a == b) continue;
      // C++ case a against the golden of case b: far outside the tolerance, so the comparison
      // above tells the outer policies and buffer strategies apart.
      const Errors e = compare(cpp_run(all[a]).models.back(), all[b].name, rounds - 1);
      INFO(all[a].name << " against the golden " << all[b].name);
      CHECK(e.relative > 10 * tolerance);
      CHECK(cpp_run(all[a]).models.back() != cpp_run(all[b]).models.back());
    }
}

// DiLoCo against PyTorch (tools/golden/diloco.py, tests/data/diloco/): the same inputs, inner
// AdamW kept across rounds, H = 5, and three outer SGD steps on the pseudo-gradient x - x_avg.
namespace {

using Adam = optim::AdamW<ParameterSet>;

// Runs with an outer optimizer against PyTorch: the worst absolute and norm errors of the global
// model over the rounds, and the worst absolute error of a round's loss.
std::pair<Errors, double> worst_over_rounds(const Run& cpp, const std::string& golden, const xt::xarray<double>& losses) {
  Errors worst;
  double worst_loss = 0;
  for (std::size_t r = 0; r < rounds; ++r) {
    const Errors e = compare(cpp.models[r], golden, r);
    worst.absolute = std::max(worst.absolute, e.absolute);
    worst.norm = std::max(worst.norm, e.norm);
    worst_loss = std::max(worst_loss, std::abs(cpp.losses[r] - losses(r)));
  }
  return {worst, worst_loss};
}

Run run_diloco(optim::SgdmOptions outer) {
  const Model start = initial_model();
  const local::LocalOptions options{.workers = 3, .local_steps = 5, .batch_size = 4, .augmentation = std::nullopt, .shuffle = false};
  local::LocalTrainer trainer(start, Adam(start.parameters(), {.lr = 2e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01}),
                              local::OuterOptimizer<optim::Sgdm<ParameterSetD>>(start.parameters(), outer, "outer"), train_set(),
                              data::Normalizer(golden_stats()), options, golden_shards());
  Run result;
  for (std::size_t r = 0; r < rounds; ++r) {
    result.losses.push_back(trainer.round(optim::Constant{2e-3}).loss);
    const auto v = trainer.global_model().parameters().values();
    result.models.emplace_back(v.data(), v.data() + v.size());
  }
  return result;
}

}  // namespace

TEST_CASE("LocalTrainer with an outer optimizer follows PyTorch's DiLoCo within 1e-5", "[local][golden][outer]") {
  const std::vector<std::pair<std::string, optim::SgdmOptions>> diloco_cases{
      {"diloco", {.lr = 0.7, .momentum = 0.9, .nesterov = true}},
      {"outer_sgd", {.lr = 1.0}},
      {"outer_heavy_ball", {.lr = 0.7, .momentum = 0.9}},
  };
  std::vector<Run> runs;
  for (const auto& [name, outer] : diloco_cases) {
    const Run cpp = run_diloco(outer);
    const std::string golden = "../diloco/" + name;  // tests/data/diloco/<case>, inputs from tests/data/local/
    const auto losses = load<double>(golden + "/loss.npy");
    REQUIRE(losses.size() == rounds);
    const auto [worst, worst_loss] = worst_over_rounds(cpp, golden, losses);
    INFO("case " << name << ": max |C++ - PyTorch| " << worst.absolute << ", norms " << worst.norm << ", loss " << worst_loss);
    CHECK(worst.absolute <= 1e-5);
    CHECK(worst.norm <= 1e-5);
    CHECK(worst_loss <= 1e-5);
    runs.push_back(cpp);
  }
  // Each C++ run against another case's golden: far off, so the checks tell the outer steps apart.
  for (std::size_t a = 0; a < runs.size(); ++a)
    for (std::size_t b = 0; b < runs.size(); ++b)
      if (a != b) CHECK(compare(runs[a].models.back(), "../diloco/" + diloco_cases[b].first, rounds - 1).absolute > 1e-3);
}

// Streaming DiLoCo against PyTorch (tools/golden/streaming_diloco.py, tests/data/streaming_diloco/):
// the same inputs and inner AdamW, H = 6, P = 2 fragments with their own outer SGD (Nesterov),
// tau = 2, alpha = 0.5, 24 steps, an exchange in flight at the end.
TEST_CASE("Streaming DiLoCo follows PyTorch's float64 trajectory within 1e-5", "[local][golden][streaming]") {
  const Model start = initial_model();
  const local::LocalOptions options{.workers = 3, .local_steps = 6, .batch_size = 4, .augmentation = std::nullopt, .shuffle = false,
                                    .streaming = {.fragments = 2, .delay = 2, .alpha = 0.5}};
  local::LocalTrainer trainer(start, Adam(start.parameters(), {.lr = 2e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01}),
                              local::diloco_outer(start.parameters()), train_set(), data::Normalizer(golden_stats()), options,
                              golden_shards());
  const std::string golden = "../streaming_diloco";
  const auto fragments = load<std::int64_t>(golden + "/fragments.npy");
  REQUIRE(trainer.fragments().size() == 2);
  for (std::size_t p = 0; p < 2; ++p) {
    CHECK(static_cast<std::int64_t>(trainer.fragments()[p].first_block) == fragments(p, 0));
    CHECK(static_cast<std::int64_t>(trainer.fragments()[p].end_block) == fragments(p, 1));
  }
  Run cpp;
  for (std::size_t r = 0; r < rounds; ++r) {
    cpp.losses.push_back(trainer.round(optim::Constant{2e-3}).loss);
    const auto v = trainer.global_model().parameters().values();
    cpp.models.emplace_back(v.data(), v.data() + v.size());
  }
  CHECK(trainer.exchanges_in_flight() == 1);
  const auto losses = load<double>(golden + "/loss.npy");
  REQUIRE(losses.size() == rounds);
  const auto [worst, worst_loss] = worst_over_rounds(cpp, golden, losses);
  // Every worker's model after the last merge (fragment 1's at step 23) and two steps since.
  double worst_worker = 0;
  for (std::size_t k = 0; k < 3; ++k) {
    const auto values = trainer.worker_model(k).parameters().values();
    for (const auto& block : start.parameters().blocks()) {
      const auto entries = load<std::int64_t>("samples/" + block.name + ".npy");
      const auto expected = load<double>(golden + "/workers/" + block.name + ".npy");
      REQUIRE(expected.shape()[0] == 3);
      for (std::size_t j = 0; j < entries.size(); ++j)
        worst_worker = std::max(worst_worker, std::abs(static_cast<double>(values(block.offset + entries(j))) - expected(k, j)));
    }
  }
  INFO("max |C++ - PyTorch|: global " << worst.absolute << ", norms " << worst.norm << ", loss " << worst_loss << ", workers "
                                      << worst_worker);
  CHECK(worst.absolute <= 1e-5);
  CHECK(worst.norm <= 1e-5);
  CHECK(worst_loss <= 1e-5);
  CHECK(worst_worker <= 1e-5);
  // Against DiLoCo's golden (H = 5, no fragments): far off, so the check above sees the streaming.
  CHECK(compare(cpp.models.back(), "../diloco/diloco", rounds - 1).absolute > 1e-3);
}
