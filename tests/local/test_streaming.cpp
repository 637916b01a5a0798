// Streaming DiLoCo in LocalTrainer (LocalOptions::streaming): its degenerate case is DiLoCo bit for
// bit, its fragments, its exchanges in flight through a checkpoint, its bits across thread counts
// and codecs, and the settings it refuses. PyTorch's trajectory is in test_local_golden.cpp.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "distopt/local/checkpoint.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/local/outer.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/step.hpp"
#include "../support/files.hpp"
#include "../support/tiny_task.hpp"

using namespace distopt;
using test_support::values_of;

namespace {

using Model = nn::LeNet5<float>;
using Adam = optim::AdamW<ParameterSet>;

constexpr optim::AdamWOptions inner_options{.lr = 2e-3, .weight_decay = 0.01};

auto make_trainer(local::Streaming streaming, local::Compression compression = {}, int threads = 0, std::size_t local_steps = 4) {
  const Model start = test_support::tiny_lenet();
  return local::LocalTrainer(start, Adam(start.parameters(), inner_options), local::diloco_outer(start.parameters()),
                             test_support::tiny_train_set(), test_support::tiny_normalizer(),
                             {.workers = 3, .local_steps = local_steps, .batch_size = 8, .seed = 7, .threads = threads,
                              .compression = compression, .streaming = streaming});
}

}  // namespace

TEST_CASE("Streaming DiLoCo with one fragment, no delay and alpha 0 is DiLoCo bit for bit", "[local][streaming]") {
  auto trainer = make_trainer({.fragments = 1, .delay = 0, .alpha = 0.0});

  // DiLoCo written out (Douillard et al. 2023, Algorithm 1): every round each worker starts from
  // x, takes H steps of its own AdamW on its loader; x_avg is the workers' sum in double, in
  // worker order, times 1/K; the outer Nesterov SGD steps on x - x_avg.
  const Model start = test_support::tiny_lenet();
  const data::Source source(test_support::tiny_train_set(), test_support::tiny_normalizer());
  const auto shards = data::iid_shards(source, 3, 7);
  std::vector<Model> models(3, start);
  std::vector<Adam> optimizers;
  std::vector<std::unique_ptr<data::Loader>> loaders;
  for (std::size_t k = 0; k < 3; ++k) {
    optimizers.emplace_back(start.parameters(), inner_options);
    loaders.push_back(std::make_unique<data::Loader>(
        source, data::LoaderOptions{.batch_size = 8, .seed = local::worker_seed(7, k)}, shards[k]));
  }
  auto outer = local::diloco_outer(start.parameters());
  Model global = start;
  const optim::Schedule schedule = optim::Constant{2e-3};
  std::int64_t t = 0;
  for (int round = 0; round < 5; ++round) {
    for (std::size_t k = 0; k < 3; ++k) {
      auto values = models[k].parameters().values();
      std::copy_n(global.parameters().values().data(), values.size(), values.data());
      for (std::int64_t s = 0; s < 4; ++s) {
        const data::Batch* batch = loaders[k]->next();
        if (batch == nullptr) {
          loaders[k]->start_epoch(loaders[k]->position().epoch + 1);
          batch = loaders[k]->next();
        }
        (void)optim::step(models[k], optimizers[k], batch->inputs(), batch->targets(), schedule(t + s), batch->inputs().count, "", t + s + 1);
      }
    }
    t += 4;
    const auto x = global.parameters().values();
    std::vector<double> average(static_cast<std::size_t>(x.size()), 0.0);
    for (std::size_t i = 0; i < average.size(); ++i) {
      for (const auto& m : models) average[i] += static_cast<double>(m.parameters().values()(static_cast<std::ptrdiff_t>(i)));
      average[i] *= 1.0 / 3.0;
    }
    outer.apply(std::span<float>(global.parameters().values().data(), average.size()), std::span<const double>(average), 2e-3);

    (void)trainer.round(schedule);
    INFO("round " << round);
    REQUIRE(values_of(trainer.global_model()) == values_of(global));
    for (std::size_t k = 0; k < 3; ++k) CHECK(values_of(trainer.worker_model(k)) == values_of(models[k]));
  }
  CHECK(trainer.exchanges_in_flight() == 0);
  CHECK(trainer.communication().rounds == 5);
}

TEST_CASE("the model is split into fragments of whole blocks by their share of the values", "[local][streaming]") {
  const Model model = test_support::tiny_lenet();
  const auto& params = model.parameters();
  const auto blocks = params.blocks();
  for (std::size_t count = 1; count <= blocks.size(); ++count) {
    const auto fragments = local::split_fragments(params, count);
    REQUIRE(fragments.size() == count);
    CHECK(fragments.front().first_block == 0);
    CHECK(fragments.front().begin == 0);
    CHECK(fragments.back().end_block == blocks.size());
    CHECK(fragments.back().end == static_cast<std::size_t>(params.size()));
    for (std::size_t p = 0; p < count; ++p) {
      CHECK(fragments[p].first_block < fragments[p].end_block);
      CHECK(fragments[p].begin == static_cast<std::size_t>(blocks[fragments[p].first_block].offset));
      if (p + 1 < count) CHECK(fragments[p].end == fragments[p + 1].begin);
      if (p + 1 < count) CHECK(fragments[p].end_block == fragments[p + 1].first_block);
    }
  }
  // Two fragments of the classic LeNet-5: fc1.weight (48,000 of 62,006 values) ends the first.
  const auto two = local::split_fragments(params, 2);
  CHECK(blocks[two[0].end_block - 1].name == "fc1.weight");
  CHECK_THROWS_WITH(local::split_fragments(params, blocks.size() + 1), Catch::Contains("Streaming.fragments") && Catch::Contains("blocks"));
}

TEST_CASE("Streaming DiLoCo overlaps: exchanges in flight between steps, the same bits for any thread count", "[local][streaming]") {
  const local::Streaming streaming{.fragments = 2, .delay = 2, .alpha = 0.5};
  auto one = make_trainer(streaming, {}, 1);
  auto two = make_trainer(streaming, {}, 2);
  // H = 4, offsets 0 and 2: fragment 0 starts after steps 4 and 8 (applied after 6 and 10),
  // fragment 1 after 6 (applied after 8).
  const optim::Schedule schedule = optim::Constant{2e-3};
  one.run_steps(schedule, 5);
  CHECK(one.exchanges_in_flight() == 1);
  CHECK(one.communication().rounds == 1);
  one.run_steps(schedule, 9);
  CHECK(one.exchanges_in_flight() == 1);  // fragment 0's second, started after step 8
  CHECK(one.communication().rounds == 3);
  one.run_steps(schedule, 12);
  two.run_steps(schedule, 12);
  CHECK(values_of(one.global_model()) == values_of(two.global_model()));
  for (std::size_t k = 0; k < 3; ++k) CHECK(values_of(one.worker_model(k)) == values_of(two.worker_model(k)));
  // With alpha > 0 the workers keep what they learnt since their exchange: not the global model.
  CHECK(values_of(one.worker_model(0)) != values_of(one.global_model()));
  // The fp32 codec's messages take the gather path and sum to the same average.
  auto gathered = make_trainer(streaming, {.codec = local::Codec::fp32});
  gathered.run_steps(schedule, 12);
  CHECK(values_of(gathered.global_model()) == values_of(one.global_model()));
  // Streaming is not DiLoCo: the same steps without it end elsewhere.
  auto plain = make_trainer({});
  plain.run_steps(schedule, 12);
  CHECK(values_of(plain.global_model()) != values_of(one.global_model()));
}

TEST_CASE("a checkpoint taken with an exchange in flight resumes to the same bits", "[local][streaming][checkpoint]") {
  for (const auto& compression : {local::Compression{}, local::Compression{.codec = local::Codec::int8, .block = 64, .error_feedback = true}}) {
    for (const std::size_t delay : {std::size_t{1}, std::size_t{4}}) {
      const local::Streaming streaming{.fragments = 3, .delay = delay, .alpha = 0.3};
      const optim::Schedule schedule = optim::Cosine{.lr = 2e-3, .t_max = 20};
      auto whole = make_trainer(streaming, compression);
      whole.run_steps(schedule, 17);
      auto cut = make_trainer(streaming, compression);
      cut.run_steps(schedule, 9);
      INFO(compression.label() << ", tau = " << delay);
      REQUIRE(cut.exchanges_in_flight() > 0);
      test_support::TempDir dir("streaming-resume");
      local::LocalCheckpoint::save(cut, dir / "9.npz");
      auto resumed = make_trainer(streaming, compression);
      local::LocalCheckpoint::load(resumed, dir / "9.npz");
      CHECK(resumed.exchanges_in_flight() == cut.exchanges_in_flight());
      resumed.run_steps(schedule, 17);
      CHECK(values_of(resumed.global_model()) == values_of(whole.global_model()));
      for (std::size_t k = 0; k < 3; ++k) CHECK(values_of(resumed.worker_model(k)) == values_of(whole.worker_model(k)));
      // The cut trainer itself goes on to the same bits after saving (saving completes, never applies).
      cut.run_steps(schedule, 17);
      CHECK(values_of(cut.global_model()) == values_of(whole.global_model()));

      // Another streaming setting is refused, naming the field.
      auto other = make_trainer({.fragments = 3, .delay = delay, .alpha = 0.5}, compression);
      CHECK_THROWS_WITH(local::LocalCheckpoint::load(other, dir / "9.npz"), Catch::Contains("streaming.alpha"));
    }
  }
}

TEST_CASE("Streaming settings that cannot work are refused, naming the field", "[local][streaming]") {
  CHECK_THROWS_WITH(make_trainer({.fragments = 0}), Catch::Contains("streaming.fragments"));
  CHECK_THROWS_WITH(make_trainer({.fragments = 2, .delay = 5}), Catch::Contains("streaming.delay") && Catch::Contains("H = 4"));
  CHECK_THROWS_WITH(make_trainer({.alpha = 1.5}), Catch::Contains("streaming.alpha"));
  CHECK_THROWS_WITH(make_trainer({.fragments = 11}), Catch::Contains("Streaming.fragments"));
  const Model start = test_support::tiny_lenet();
  const auto with = [&](local::InnerBuffers buffers, std::optional<std::int64_t> switch_step) {
    return local::LocalTrainer(start, Adam(start.parameters(), inner_options), local::diloco_outer(start.parameters()),
                               test_support::tiny_train_set(), test_support::tiny_normalizer(),
                               {.workers = 3, .local_steps = 4, .batch_size = 8, .switch_step = switch_step, .inner_buffers = buffers,
                                .streaming = {.fragments = 2, .delay = 1}});
  };
  CHECK_THROWS_WITH(with(local::InnerBuffers::reset, std::nullopt), Catch::Contains("inner_buffers"));
  CHECK_THROWS_WITH(with(local::InnerBuffers::maintain, 8), Catch::Contains("switch_step"));
  CHECK_NOTHROW(with(local::InnerBuffers::maintain, std::nullopt));
}
