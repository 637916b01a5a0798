#include <catch2/catch.hpp>

#include <cmath>

#include "distopt/local/local_trainer.hpp"
#include "distopt/train/local_run.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/sgdm.hpp"
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

template <class Outer>
std::vector<float> run_rounds(Outer outer, local::LocalOptions options, std::size_t rounds, optim::SgdmOptions inner = {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4}) {
  Model model = test_support::tiny_lenet();
  local::LocalTrainer trainer(model, Sgd(model.parameters(), inner), std::move(outer), train_set(), normalizer(), options);
  const optim::Schedule schedule = optim::Cosine{.lr = inner.lr, .t_max = 40};
  for (std::size_t r = 0; r < rounds; ++r) (void)trainer.round(schedule);
  return values_of(trainer.global_model());
}

}  // namespace

TEST_CASE("LocalSGD is SlowMo with alpha 1 and beta 0, bit for bit", "[local][equivalence]") {
  for (const auto buffers : {local::InnerBuffers::reset, local::InnerBuffers::maintain, local::InnerBuffers::average}) {
    const local::LocalOptions options{.workers = 4, .local_steps = 3, .batch_size = 8, .inner_buffers = buffers, .seed = 2};
    const auto a = run_rounds(local::LocalSgd{}, options, 3);
    const auto b = run_rounds(local::SlowMo({.alpha = 1.0, .beta = 0.0}), options, 3);
    CHECK(a == b);
    // And SlowMo with momentum is something else.
    CHECK(run_rounds(local::SlowMo({.alpha = 1.0, .beta = 0.6}), options, 3) != a);
  }
}

TEST_CASE("LocalTrainer with K = 1 is the inner optimizer alone", "[local][equivalence]") {
  const local::LocalOptions options{.workers = 1, .local_steps = 4, .batch_size = 16, .seed = 7, .augmentation = data::Augmentation{}};
  const optim::Schedule schedule = optim::Cosine{.lr = 0.05, .t_max = 40};
  Model start = test_support::tiny_lenet();
  local::LocalTrainer trainer(start, Sgd(start.parameters(), {.lr = 0.05, .momentum = 0.9}), local::LocalSgd{}, train_set(),
                              normalizer(), options);
  trainer.run_steps(schedule, 10);  // rounds of 4, 4, 2 steps

  Model alone = test_support::tiny_lenet();
  Sgd opt(alone.parameters(), {.lr = 0.05, .momentum = 0.9});
  data::Loader loader(train_set(), normalizer(),
                      {.batch_size = 16, .seed = local::worker_seed(7, 0), .augmentation = data::Augmentation{}},
                      trainer.shards()[0]);
  for (std::int64_t t = 0; t < 10; ++t) {
    const data::Batch* batch = loader.next();
    if (batch == nullptr) {
      loader.start_epoch(loader.position().epoch + 1);
      batch = loader.next();
    }
    alone.parameters().grads().setZero();
    (void)alone.loss_and_gradient(batch->images(), batch->labels(), 1.0);
    opt.set_lr(schedule(t));
    opt.step(alone.parameters());
  }
  CHECK(trainer.step() == 10);
  CHECK(trainer.communication().rounds == 3);
  CHECK(values_of(trainer.global_model()) == values_of(alone));
}

TEST_CASE("H = 1 with plain SGD is mini-batch SGD on the K x B batch", "[local][equivalence]") {
  const std::size_t K = 3, B = 8;
  const local::LocalOptions options{.workers = K, .local_steps = 1, .batch_size = B, .seed = 4, .augmentation = std::nullopt};
  Model start = test_support::tiny_lenet();
  local::LocalTrainer trainer(start, Sgd(start.parameters(), {.lr = 0.1}), local::LocalSgd{}, train_set(), normalizer(), options);
  const optim::Schedule schedule = optim::Constant{0.1};

  Model big = test_support::tiny_lenet();
  Sgd opt(big.parameters(), {.lr = 0.1});
  std::vector<std::unique_ptr<data::Loader>> loaders;
  for (std::size_t k = 0; k < K; ++k)
    loaders.push_back(std::make_unique<data::Loader>(train_set(), normalizer(),
                                                     data::LoaderOptions{.batch_size = B, .seed = local::worker_seed(4, k)},
                                                     trainer.shards()[k]));
  for (int step = 0; step < 5; ++step) {
    (void)trainer.round(schedule);
    big.parameters().grads().setZero();
    for (auto& loader : loaders) {
      const data::Batch* batch = loader->next();
      if (batch == nullptr) {
        loader->start_epoch(loader->position().epoch + 1);
        batch = loader->next();
      }
      (void)big.loss_and_gradient(batch->images(), batch->labels(), 1.0 / K);  // mean over the K x B samples
    }
    opt.step(big.parameters());
  }
  const auto a = values_of(trainer.global_model()), b = values_of(big);
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]) / (1e-2 + std::abs(b[i])));
  CHECK(worst < 1e-5);
  CHECK(a != values_of(start));
}

TEST_CASE("LocalTrainer: the same bits with 1, 2 and 3 threads for K = 4", "[local][determinism]") {
  std::vector<std::vector<float>> results;
  for (const int threads : {1, 2, 3}) {
    const local::LocalOptions options{.workers = 4, .local_steps = 2, .batch_size = 8,
                                      .inner_buffers = local::InnerBuffers::average, .seed = 3, .threads = threads};
    results.push_back(run_rounds(local::SlowMo({.alpha = 0.8, .beta = 0.5}), options, 3));
  }
  CHECK(results[0] == results[1]);
  CHECK(results[0] == results[2]);
}

TEST_CASE("post-local SGD averages every step until the switch, then every H", "[local][post_local]") {
  Model start = test_support::tiny_lenet();
  const local::LocalOptions options{.workers = 2, .local_steps = 3, .batch_size = 8, .switch_step = 4, .seed = 1};
  local::LocalTrainer trainer(start, Sgd(start.parameters(), {.lr = 0.05}), local::LocalSgd{}, train_set(), normalizer(), options);
  std::vector<std::size_t> steps;
  trainer.run_steps(optim::Constant{0.05}, 12, [&](const local::RoundReport& r) { steps.push_back(r.local_steps); });
  CHECK(steps == std::vector<std::size_t>{1, 1, 1, 1, 3, 3, 2});
  CHECK(trainer.communication().rounds == 7);
}

TEST_CASE("communication accounting: ring all-reduce bytes and modelled time per round", "[local][communication]") {
  Model start = test_support::tiny_lenet();
  const local::NetworkModel network{.latency = 1e-3, .bandwidth = 1e6};
  const local::LocalOptions options{.workers = 4, .local_steps = 5, .batch_size = 8, .seed = 1, .network = network};
  local::LocalTrainer trainer(start, Sgd(start.parameters(), {.lr = 0.05}), local::LocalSgd{}, train_set(), normalizer(), options);
  trainer.run_steps(optim::Constant{0.05}, 12);
  const auto& c = trainer.communication();
  const double bytes = static_cast<double>(start.parameters().size()) * 4;
  CHECK(c.rounds == 3);
  CHECK(c.allreduce_values == 3 * start.parameters().size());
  CHECK(c.bytes_per_worker == Approx(3 * 2.0 * 3 / 4 * bytes));
  CHECK(c.modelled_seconds == Approx(3 * (6 * 1e-3 + 6.0 / 4 * bytes / 1e6)));
  CHECK(local::NetworkModel{}.ring_allreduce_seconds(1e9, 1) == 0.0);
}

TEST_CASE("LocalTrainer: resuming from a checkpoint gives the same bits", "[local][resume]") {
  test_support::TempDir dir("local-resume");
  const auto validation = test_support::template_images(30, 5);
  const optim::Schedule schedule = optim::Cosine{.lr = 0.05, .t_max = 60};
  const local::LocalOptions options{.workers = 3, .local_steps = 3, .batch_size = 8, .seed = 9};
  const auto make = [&]() {
    Model start = test_support::tiny_lenet();
    return std::make_unique<local::LocalTrainer<Model, Sgd, local::SlowMo>>(
        start, Sgd(start.parameters(), {.lr = 0.05, .momentum = 0.9}), local::SlowMo({.alpha = 1.0, .beta = 0.7}), train_set(),
        normalizer(), options);
  };
  const train::RunData sets{nullptr, &validation, &validation, normalizer()};
  auto full = make();
  const auto a = train::run_local(*full, schedule, sets, {.epochs = 3, .out = dir / "a"});
  REQUIRE(a.status == train::Status::completed);

  auto first = make();
  CHECK(train::run_local(*first, schedule, sets, {.epochs = 3, .out = dir / "b", .stop_after = 1}).status ==
        train::Status::interrupted);
  auto second = make();
  const auto b = train::run_local(*second, schedule, sets, {.epochs = 3, .out = dir / "b", .resume = true});
  CHECK(b.status == train::Status::completed);
  CHECK(b.steps == a.steps);
  CHECK(values_of(second->global_model()) == values_of(full->global_model()));
  CHECK(b.test.loss == a.test.loss);
  CHECK(second->communication().rounds == full->communication().rounds);
  // The whole history travels in the checkpoint: the resumed run knows epoch 1's validation.
  REQUIRE(b.history.size() == 3);
  CHECK(b.history[0].validation_accuracy == a.history[0].validation_accuracy);
  CHECK(b.best_validation_accuracy == a.best_validation_accuracy);
  CHECK(std::vector<double>(full->outer().momentum().begin(), full->outer().momentum().end()) ==
        std::vector<double>(second->outer().momentum().begin(), second->outer().momentum().end()));
}

TEST_CASE("LocalTrainer learns the tiny task", "[local][training]") {
  const auto validation = test_support::template_images(40, 6);
  Model start = test_support::tiny_lenet();
  local::LocalTrainer trainer(start, Sgd(start.parameters(), {.lr = 0.01, .momentum = 0.9}), local::SlowMo({.alpha = 1.0, .beta = 0.5}),
                              train_set(), normalizer(),
                              {.workers = 2, .local_steps = 4, .batch_size = 8, .seed = 2, .augmentation = std::nullopt});
  auto memory = std::make_shared<train::MemorySink>();
  const auto before = train::evaluate(trainer.global_model(), validation, normalizer());
  const auto result = train::run_local(trainer, optim::Constant{0.01}, {nullptr, &validation, &validation, normalizer()}, {.epochs = 8},
                                       train::Metrics({memory}));
  CHECK(result.status == train::Status::completed);
  INFO("validation accuracy " << before.accuracy << " before, " << result.test.accuracy << " after");
  CHECK(result.test.accuracy > before.accuracy + 0.3);
  std::size_t epochs = 0;
  for (const auto& r : memory->records) epochs += r.event == "epoch" ? 1 : 0;
  CHECK(epochs == 8);
  CHECK(memory->records.back().event == "summary");
}

TEST_CASE("LocalTrainer: bad options name the field", "[local][errors]") {
  Model start = test_support::tiny_lenet();
  const Sgd inner(start.parameters(), {.lr = 0.05});
  const auto make = [&](local::LocalOptions o) {
    return local::LocalTrainer(start, inner, local::LocalSgd{}, train_set(), normalizer(), o);
  };
  CHECK_THROWS_WITH(make({.workers = 0}), Contains("workers"));
  CHECK_THROWS_WITH(make({.local_steps = 0}), Contains("local_steps"));
  CHECK_THROWS_WITH(make({.batch_size = 0}), Contains("batch_size"));
  CHECK_THROWS_WITH(make({.workers = 97}), Contains("97 workers for 96 samples"));
  CHECK_THROWS_WITH(local::SlowMo({.alpha = 1.0, .beta = 1.0}), Contains("beta"));
  CHECK_THROWS_WITH(local::SlowMo({.alpha = 0.0}), Contains("alpha"));
  CHECK_THROWS_WITH(local::SlowMo({.alpha = 1.0, .beta = -0.1}), Contains("beta"));
  CHECK_THROWS_WITH(Sgd(start.parameters(), {.lr = -1.0}), Contains("lr"));
  CHECK_THROWS_WITH(optim::AdamW(start.parameters(), {.beta1 = 1.5}), Contains("beta1"));
  CHECK_THROWS_WITH(local::LocalTrainer(start, inner, local::LocalSgd{}, train_set(), normalizer(), {.workers = 2},
                                        data::Shards{{0, 1}}),
                    Contains("1 shards"));
}
