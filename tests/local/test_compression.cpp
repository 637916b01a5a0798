// Compressed pseudo-gradients: the codecs, error feedback, the gather path and its accounting.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "distopt/core/rng.hpp"
#include "distopt/local/checkpoint.hpp"
#include "distopt/local/compression.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/local_run.hpp"
#include "../support/files.hpp"
#include "../support/tiny_task.hpp"

using namespace distopt;
using Catch::Matchers::Contains;

namespace {

using Model = nn::LeNet5<float>;
using Sgd = optim::Sgdm<ParameterSet>;

const data::LabelledImages& train_set() { return test_support::tiny_train_set(); }
const data::Normalizer& normalizer() { return test_support::tiny_normalizer(); }
using test_support::values_of;

std::vector<double> random_values(std::size_t n, std::uint64_t seed, double scale = 1e-3) {
  Rng rng(seed);
  std::vector<double> v(n);
  for (auto& x : v) x = rng.normal(0.0, scale);
  return v;
}

std::vector<double> round_trip(const local::Compression& c, const std::vector<double>& v) {
  std::vector<std::uint8_t> bytes;
  local::encode(c, v, bytes);
  CHECK(bytes.size() == c.payload_bytes(v.size()));
  std::vector<double> out(v.size());
  local::decode(c, bytes, out);
  return out;
}

local::LocalTrainer<Model, Sgd, local::LocalSgd> make_trainer(local::Compression compression, std::size_t workers = 4) {
  Model model = test_support::tiny_lenet();
  return {model, Sgd(model.parameters(), {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4}), local::LocalSgd{}, train_set(), normalizer(),
          {.workers = workers, .local_steps = 3, .batch_size = 8, .seed = 2, .compression = compression}};
}

}  // namespace

TEST_CASE("Codecs: sizes, round trips and their error bounds", "[local][compression]") {
  const auto v = random_values(1000, 1);
  const double most = std::abs(*std::max_element(v.begin(), v.end(), [](double a, double b) { return std::abs(a) < std::abs(b); }));

  const auto fp32 = round_trip({.codec = local::Codec::fp32}, v);
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(fp32[i] == static_cast<double>(static_cast<float>(v[i])));

  // Half keeps 11 significant bits, bfloat16 8: relative error at most 2^-11 and 2^-8 (normal values).
  const auto half = round_trip({.codec = local::Codec::fp16}, v);
  const auto brain = round_trip({.codec = local::Codec::bf16}, v);
  CHECK(local::Compression{.codec = local::Codec::fp16}.payload_bytes(1000) == 2000);
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (std::abs(v[i]) > 1e-4) CHECK(std::abs(half[i] - v[i]) <= std::abs(v[i]) * std::ldexp(1.0, -11));
    CHECK(std::abs(brain[i] - v[i]) <= std::abs(v[i]) * std::ldexp(1.0, -8));
  }

  // int8: a float scale per block of 128 (8 scales for 1000 values), error at most half a step.
  const local::Compression int8{.codec = local::Codec::int8, .block = 128};
  CHECK(int8.payload_bytes(1000) == 1000 + 4 * 8);
  const auto q = round_trip(int8, v);
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(std::abs(q[i] - v[i]) <= 0.5 * most / 127.0 * (1 + 1e-6));

  // topk: exactly the 10 largest magnitudes survive (as float32), everything else is zero.
  const local::Compression top{.codec = local::Codec::topk, .fraction = 0.01};
  CHECK(top.payload_bytes(1000) == 8 * 10);
  const auto t = round_trip(top, v);
  std::vector<double> magnitudes;
  for (double x : v) magnitudes.push_back(std::abs(x));
  std::sort(magnitudes.begin(), magnitudes.end(), std::greater<>());
  std::size_t kept = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t[i] != 0.0) {
      ++kept;
      CHECK(t[i] == static_cast<double>(static_cast<float>(v[i])));
      CHECK(std::abs(v[i]) >= magnitudes[9]);
    } else {
      CHECK(std::abs(v[i]) <= magnitudes[9]);
    }
  }
  CHECK(kept == 10);
  // Ties resolve by index, so the choice is a function of the values alone.
  const std::vector<double> ties(20, 0.5);
  const auto tied = round_trip({.codec = local::Codec::topk, .fraction = 0.1}, ties);
  CHECK(tied[0] == 0.5);
  CHECK(tied[1] == 0.5);
  CHECK(tied[2] == 0.0);
}

TEST_CASE("Codecs refuse payloads that do not fit", "[local][compression][errors]") {
  std::vector<double> out(100);
  std::vector<std::uint8_t> bytes(10);
  CHECK_THROWS_WITH(local::decode({.codec = local::Codec::fp16}, bytes, out), Contains("payload of 10 bytes") && Contains("200 expected"));
  const local::Compression top{.codec = local::Codec::topk, .fraction = 0.02};
  std::vector<std::uint8_t> payload;
  local::encode(top, random_values(100, 2), payload);
  payload[8] = 200;  // the second index: out of range (and after the first)
  CHECK_THROWS_WITH(local::decode(top, payload, out), Contains("offset 8"));
  CHECK_THROWS_WITH(local::parse_codec("fp8"), Contains("unknown codec 'fp8'"));
  CHECK_THROWS_WITH(make_trainer({.codec = local::Codec::topk, .fraction = 0.0}), Contains("Compression.fraction"));
  CHECK(local::parse_codec("bf16") == local::Codec::bf16);
  CHECK(local::Compression{.codec = local::Codec::topk, .fraction = 0.01, .error_feedback = true}.label() == "top1%+ef");
}

TEST_CASE("The uncompressed message through the gather path is today's all-reduce path, bit for bit", "[local][compression]") {
  auto plain = make_trainer({});
  auto gathered = make_trainer({.codec = local::Codec::fp32});
  const optim::Schedule schedule = optim::Cosine{.lr = 0.05, .t_max = 40};
  for (int r = 0; r < 4; ++r) {
    (void)plain.round(schedule);
    (void)gathered.round(schedule);
  }
  CHECK(values_of(plain.global_model()) == values_of(gathered.global_model()));
  CHECK(plain.communication().bytes_per_worker == gathered.communication().bytes_per_worker);
}

TEST_CASE("Error feedback: what was sent plus the residual is the uncompressed pseudo-gradient", "[local][compression]") {
  for (const auto codec : {local::Codec::fp16, local::Codec::bf16, local::Codec::int8, local::Codec::topk}) {
    const local::Compression c{.codec = codec, .block = 64, .fraction = 0.05, .error_feedback = true};
    const auto delta = random_values(777, 3);
    std::vector<double> residual(delta.size(), 0.0), total_sent(delta.size(), 0.0);
    // Several rounds with fresh pseudo-gradients: sent over all rounds + residual = sum of deltas.
    std::vector<double> total_delta(delta.size(), 0.0);
    for (std::uint64_t round = 0; round < 5; ++round) {
      const auto d = random_values(delta.size(), 10 + round);
      std::vector<double> v(d.size());
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = d[i] + residual[i];
      const auto sent = round_trip(c, v);
      for (std::size_t i = 0; i < v.size(); ++i) {
        residual[i] = v[i] - sent[i];
        CHECK(sent[i] + residual[i] == v[i]);  // exact: sent is v rounded, their difference exact
        total_sent[i] += sent[i];
        total_delta[i] += d[i];
      }
    }
    double worst = 0;
    for (std::size_t i = 0; i < delta.size(); ++i) worst = std::max(worst, std::abs(total_sent[i] + residual[i] - total_delta[i]));
    INFO(local::to_string(codec) << ": |sent + residual - sum of deltas| up to " << worst);
    CHECK(worst <= 1e-15);
  }

  // In the trainer: after a round, the residual is the pseudo-gradient minus what was sent.
  auto trainer = make_trainer({.codec = local::Codec::topk, .fraction = 0.01, .error_feedback = true}, 2);
  const auto x0 = values_of(trainer.global_model());
  (void)trainer.round(optim::Constant{0.05});
  for (std::size_t k = 0; k < 2; ++k) {
    const auto xk = values_of(trainer.worker_model(k));
    const auto residual = trainer.worker_residual(k);
    REQUIRE(residual.size() == xk.size());
    // top 1%: about 1% of the residual is what float32 rounding left of the values sent, the rest
    // the whole displacement x_k - x.
    std::size_t moved = 0;
    for (std::size_t i = 0; i < xk.size(); ++i) moved += xk[i] != x0[i] ? 1 : 0;
    CHECK(moved > 1000);
    std::size_t matches = 0;
    for (std::size_t i = 0; i < xk.size(); ++i)
      matches += residual[i] == static_cast<double>(xk[i]) - static_cast<double>(x0[i]) ? 1 : 0;
    CHECK(static_cast<double>(matches) >= 0.98 * static_cast<double>(xk.size()));
  }
}

TEST_CASE("Compressed LocalSGD trains, sends the bytes it says, and resumes bit-exactly", "[local][compression][checkpoint]") {
  const optim::Schedule schedule = optim::Constant{0.05};
  const auto plain_final = [&] {
    auto t = make_trainer({});
    for (int r = 0; r < 6; ++r) (void)t.round(schedule);
    return values_of(t.global_model());
  }();
  for (const auto& c : {local::Compression{.codec = local::Codec::fp16}, local::Compression{.codec = local::Codec::bf16},
                        local::Compression{.codec = local::Codec::int8}, local::Compression{.codec = local::Codec::topk, .fraction = 0.1, .error_feedback = true}}) {
    auto trainer = make_trainer(c);
    for (int r = 0; r < 6; ++r) (void)trainer.round(schedule);
    const auto final = values_of(trainer.global_model());
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < final.size(); ++i) {
      diff = std::max(diff, std::abs(static_cast<double>(final[i]) - plain_final[i]));
      norm = std::max(norm, std::abs(static_cast<double>(plain_final[i])));
    }
    INFO(c.label() << ": max |difference| to uncompressed " << diff);
    CHECK(diff > 0);           // it did compress
    CHECK(diff < 0.1 * norm);  // and still trains the same model, roughly
    const auto n = static_cast<std::int64_t>(final.size());
    const auto expected = local::sync_cost(c, n, 4, 4, local::NetworkModel{});
    CHECK(trainer.communication().rounds == 6);
    CHECK(trainer.communication().bytes_per_worker == Approx(6 * expected.bytes_per_worker));
  }
  // What each scheme sends per round, K = 4 workers of n values: the casts as an all-reduce in
  // their format, int8 and topk as an all-gather of payloads.
  const std::int64_t n = 1000;
  CHECK(local::sync_cost({}, n, 4, 4, {}).bytes_per_worker == Approx(1.5 * 4 * n));
  CHECK(local::sync_cost({.codec = local::Codec::bf16}, n, 4, 4, {}).bytes_per_worker == Approx(1.5 * 2 * n));
  CHECK(local::sync_cost({.codec = local::Codec::int8, .block = 100}, n, 4, 4, {}).bytes_per_worker == Approx(3.0 * (n + 40)));
  CHECK(local::sync_cost({.codec = local::Codec::topk, .fraction = 0.01}, n, 4, 4, {}).bytes_per_worker == Approx(3.0 * 80));

  // Resume: residuals and all, the same bits as an uninterrupted run.
  test_support::TempDir dir;
  const train::RunData sets{nullptr, nullptr, nullptr, normalizer()};
  const local::Compression c{.codec = local::Codec::int8, .block = 64, .error_feedback = true};
  auto full = make_trainer(c);
  (void)train::run_local(full, schedule, sets, {.epochs = 3});
  auto first = make_trainer(c);
  (void)train::run_local(first, schedule, sets, {.epochs = 3, .out = dir.path(), .stop_after = std::size_t{1}});
  CHECK(Archive::load(dir.path() / "1.npz").contains("worker.3.residual"));
  auto second = make_trainer(c);
  (void)train::run_local(second, schedule, sets, {.epochs = 3, .out = dir.path(), .resume = true});
  CHECK(values_of(second.global_model()) == values_of(full.global_model()));
  // A checkpoint of another compression is refused, naming the field.
  auto other = make_trainer({.codec = local::Codec::fp16});
  CHECK_THROWS_WITH(local::LocalCheckpoint::load(other, dir.path() / "3.npz"), Contains("local.compression"));
}
