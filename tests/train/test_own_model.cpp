// A user's own model on a user's own data through the library's trainers: OwnMlp (an Eigen MLP
// written against nn::Model only) on real tables (.npz from python3-sklearn's CSVs), with
// LocalTrainer + DiLoCo, synchronous averaging, and train::run_training for a regression; the
// checks a model and its data meet at the trainers' entry; weights-only loading.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>

#include "../../examples/own_mlp.hpp"
#include "distopt/data/arrays.hpp"
#include "distopt/data/split.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/local/outer.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/checkpoint.hpp"
#include "distopt/train/local_run.hpp"
#include "distopt/train/run.hpp"
#include "../support/files.hpp"

namespace data = distopt::data;
namespace local = distopt::local;
namespace nn = distopt::nn;
namespace optim = distopt::optim;
namespace train = distopt::train;
using Catch::Matchers::Contains;

namespace {

const std::filesystem::path tables = std::filesystem::path(DISTOPT_TEST_DATA_DIR) / "tables";

// A model without a const parameters(): meets nothing, and the check says which member.
struct NoConstParameters {
  using scalar_type = float;
  using params_type = distopt::ParameterSet;
  params_type& parameters();
  nn::LossStats loss_and_gradient(const distopt::Samples<float>&, const distopt::Targets&, double);
  nn::LossStats evaluate(const distopt::Samples<float>&, const distopt::Targets&);
  void forward(const distopt::Samples<float>&, float*);
  std::ptrdiff_t output_size() const;
};

struct Split {
  data::ArrayDataset train, test;
};
Split split(const data::ArrayDataset& all) {
  const auto idx = data::split_indices(all, {.validation_ratio = 0.25, .seed = 7});
  return {all.subset(idx.train), all.subset(idx.validation)};
}

}  // namespace

static_assert(nn::Model<OwnMlp>);
static_assert(nn::Model<nn::LeNet5<float>>);
static_assert(!nn::Model<NoConstParameters>);

TEST_CASE("OwnMlp's gradient is its loss's (finite differences through the Model interface)", "[train][own_model]") {
  OwnMlp model(3, 4, 2, nn::Loss::mean_squared_error(), 3);
  const std::vector<float> x = {0.5f, -1.0f, 0.25f, 1.5f, 0.0f, -0.5f};
  const std::vector<float> y = {1.0f, -1.0f, 0.5f, 2.0f};
  const auto targets = distopt::Targets::real(y, 2);
  const distopt::Samples<float> batch(x.data(), 2, {3});
  model.parameters().zero_grad();
  (void)model.loss_and_gradient(batch, targets, 1.0);
  auto& p = model.parameters();
  for (const std::ptrdiff_t i : {std::ptrdiff_t{0}, std::ptrdiff_t{5}, p.block(2).offset + 3, p.block(3).offset}) {
    const float saved = p.values()[i];
    const float h = 1e-2f;
    p.values()[i] = saved + h;
    const double up = model.evaluate(batch, targets).loss;
    p.values()[i] = saved - h;
    const double down = model.evaluate(batch, targets).loss;
    p.values()[i] = saved;
    CHECK(p.grads()[i] == Approx((up - down) / (2 * h)).epsilon(2e-2).margin(1e-4));
  }
}

TEST_CASE("OwnMlp on a real table through LocalTrainer: DiLoCo and synchronous SGD learn, on float features", "[train][own_model][local]") {
  const Split s = split(data::load_arrays(tables / "breast_cancer.npz"));
  const data::FeatureNormalizer norm(data::feature_statistics(s.train));
  const data::Source train_set(s.train, norm), test_set(s.test, norm);
  const OwnMlp start(30, 16, 2, nn::Loss::cross_entropy(), 1);
  const train::RunData sets(train_set, std::nullopt, test_set);

  // DiLoCo (Douillard et al. 2023): inner AdamW, outer Nesterov SGD; K = 4, H = 8.
  local::LocalTrainer diloco(start, optim::AdamW(start.parameters(), {.lr = 3e-3, .weight_decay = 1e-4}),
                             local::diloco_outer(start.parameters()), train_set,
                             {.workers = 4, .local_steps = 8, .batch_size = 16, .seed = 2});
  const auto a = train::run_local(diloco, optim::Constant{3e-3}, sets, {.epochs = 12});
  // Synchronous SGD at the same global batch: K = 4 workers averaging after every step.
  local::LocalTrainer sync(start, optim::Sgdm(start.parameters(), {.lr = 0.05, .momentum = 0.9}), local::LocalSgd{}, train_set,
                           {.workers = 4, .local_steps = 1, .batch_size = 16, .seed = 2});
  const auto b = train::run_local(sync, optim::Constant{0.05}, sets, {.epochs = 12});
  INFO("DiLoCo test accuracy " << a.test.accuracy << ", synchronous " << b.test.accuracy);
  CHECK(a.status == train::Status::completed);
  CHECK(a.test.accuracy > 0.93);  // a linear model reaches about 0.95 on this table
  CHECK(b.test.accuracy > 0.93);
  CHECK(diloco.communication().rounds < sync.communication().rounds / 4);
  CHECK(diloco.communication().bytes_per_worker < sync.communication().bytes_per_worker / 4);
}

TEST_CASE("A regression through train::run_training: MSE, no accuracy, the best epoch by validation loss", "[train][own_model]") {
  const Split s = split(data::load_arrays(tables / "diabetes.npz"));
  const data::FeatureNormalizer norm(data::feature_statistics(s.train));
  // Targets of 25 to 346: the model predicts them raw, so a good lr is small.
  OwnMlp model(10, 16, 1, nn::Loss::mean_squared_error(), 4);
  optim::AdamW adam(model.parameters(), {.lr = 0.05, .weight_decay = 0.0});
  const data::Source train_set(s.train, norm), test_set(s.test, norm);
  const double before = train::evaluate(model, test_set).loss;
  test_support::TempDir dir("regression");
  const auto result = train::run_training(model, adam, optim::Constant{0.05}, train::RunData(train_set, test_set, test_set),
                                          {.epochs = 60, .batch_size = 32, .prefetch = false,
                                           .description = {.optimizer = "adamw", .lr = 0.05, .weight_decay = 0.0}, .out = dir.path()});
  INFO("test MSE " << before << " -> " << result.test.loss);
  CHECK(result.status == train::Status::completed);
  CHECK(std::isnan(result.test.accuracy));
  CHECK(result.best_epoch > 0);
  // The variance of the targets is about 5900; a linear model's MSE on this table is about 3000.
  CHECK(result.test.loss < 4500.0);
  CHECK(result.test.loss < before / 5);

  // Weights only, for inference: the best epoch's weights into a fresh model give its test loss.
  const train::CheckpointFolder folder(dir.path(), "adamw", 32, 0.05, 0.0);
  OwnMlp fresh(10, 16, 1, nn::Loss::mean_squared_error(), 99);
  train::load_weights(folder.file(*folder.latest()), fresh.parameters());
  CHECK(train::evaluate(fresh, test_set).loss == result.test.loss);
  train::save_weights(dir / "weights.npz", model.parameters());
  OwnMlp again(10, 16, 1, nn::Loss::mean_squared_error(), 98);
  train::load_weights(dir / "weights.npz", again.parameters());
  CHECK(train::evaluate(again, test_set).loss == result.test.loss);
  OwnMlp wider(10, 17, 1, nn::Loss::mean_squared_error(), 98);
  REQUIRE_THROWS_WITH(train::load_weights(dir / "weights.npz", wider.parameters()),
                      Contains("weights.npz") && Contains("fc1.weight") && Contains("[16, 10]") && Contains("[17, 10]"));
}

TEST_CASE("The trainers refuse a model that does not fit the data, naming both", "[train][own_model][errors]") {
  const auto table = data::load_arrays(tables / "wine.npz");
  const data::Source set(table);
  const OwnMlp wrong_inputs(12, 8, 3, nn::Loss::cross_entropy());
  REQUIRE_THROWS_WITH(local::LocalTrainer(wrong_inputs, optim::Sgdm(wrong_inputs.parameters(), {.lr = 0.1}), local::LocalSgd{}, set,
                                          {.workers = 2}),
                      Contains("LocalTrainer") && Contains("12 values") && Contains("wine.npz") && Contains("[13]"));
  const auto diabetes = data::load_arrays(tables / "diabetes.npz");
  const data::Source reg(diabetes);
  OwnMlp two_outputs(10, 8, 2, nn::Loss::mean_squared_error());
  optim::Sgdm sgd(two_outputs.parameters(), {.lr = 0.1});
  REQUIRE_THROWS_WITH(train::CentralTrainer(two_outputs, sgd, reg, {}),
                      Contains("2 outputs") && Contains("1 real-valued targets"));
  // Cross-entropy on real-valued targets: refused at the first batch, naming the loss.
  OwnMlp classifier(10, 8, 1, nn::Loss::cross_entropy());
  optim::Sgdm sgd2(classifier.parameters(), {.lr = 0.1});
  REQUIRE_THROWS_WITH(train::run_training(classifier, sgd2, optim::Constant{0.1}, train::RunData(reg), {.epochs = 1, .prefetch = false}),
                      Contains("cross-entropy needs class ids"));
}
