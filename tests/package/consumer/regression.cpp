// A regression through train::run_training: OwnMlp with mean squared error on the diabetes table
// (442 x 10, real-valued targets). Learning is asserted: the test MSE falls below 4500 (the
// targets' variance is about 5900; a linear model reaches about 3000). It includes the umbrella
// header, which the README pairs with distopt::train: this consumer links that alone.
#include "own_mlp.hpp"

#include <distopt/distopt.hpp>

#include <cmath>
#include <cstdio>

int main() {
  namespace data = distopt::data;
  const data::ArrayDataset all = data::load_arrays(DISTOPT_TABLE);
  const auto split = data::split_indices(all, {.validation_ratio = 0.25, .seed = 7});
  const data::ArrayDataset train = all.subset(split.train), test = all.subset(split.validation);
  const data::FeatureNormalizer norm(data::feature_statistics(train));
  const data::Source train_set(train, norm), test_set(test, norm);
  OwnMlp model(10, 16, 1, distopt::nn::Loss::mean_squared_error(), 4);
  distopt::optim::AdamW adam(model.parameters(), {.lr = 0.05, .weight_decay = 0.0});
  const auto result = distopt::train::run_training(model, adam, distopt::optim::Constant{0.05},
                                                   distopt::train::RunData(train_set, test_set, test_set),
                                                   {.epochs = 60, .batch_size = 32, .prefetch = false});
  const bool ok = result.test.loss < 4500.0 && std::isnan(result.test.accuracy);
  std::printf("%s: MSE regression on %s: test MSE %.1f (bar 4500), best epoch %lld\n", ok ? "consumer ok" : "consumer FAILED",
              train_set.name().c_str(), result.test.loss, static_cast<long long>(result.best_epoch));
  return ok ? 0 : 1;
}
