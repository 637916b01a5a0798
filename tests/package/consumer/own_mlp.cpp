// A consumer's own model on its own data: OwnMlp (an Eigen MLP written against nn::Model only,
// examples/own_mlp.hpp) trained by LocalTrainer with DiLoCo on float arrays read from an .npz
// (the breast cancer table), no quantisation to bytes. Learning is asserted: test accuracy above
// 0.93 (a linear model reaches about 0.95).
#include "own_mlp.hpp"

#include <distopt/data/arrays.hpp>
#include <distopt/data/split.hpp>
#include <distopt/local/local_trainer.hpp>
#include <distopt/local/outer.hpp>
#include <distopt/optim/adamw.hpp>
#include <distopt/train/local_run.hpp>

#include <cstdio>

int main() {
  namespace data = distopt::data;
  const data::ArrayDataset all = data::load_arrays(DISTOPT_TABLE);
  const auto split = data::split_indices(all, {.validation_ratio = 0.25, .seed = 1});
  const data::ArrayDataset train = all.subset(split.train), test = all.subset(split.validation);
  const data::FeatureNormalizer norm(data::feature_statistics(train));
  const data::Source train_set(train, norm), test_set(test, norm);
  const OwnMlp model(30, 16, 2, distopt::nn::Loss::cross_entropy(), 1);
  distopt::local::LocalTrainer diloco(model, distopt::optim::AdamW(model.parameters(), {.lr = 3e-3, .weight_decay = 1e-4}),
                                      distopt::local::diloco_outer(model.parameters()), train_set,
                                      {.workers = 4, .local_steps = 8, .batch_size = 16, .seed = 2});
  const auto result = distopt::train::run_local(diloco, distopt::optim::Constant{3e-3},
                                                distopt::train::RunData(train_set, std::nullopt, test_set), {.epochs = 12});
  const bool ok = result.test.accuracy > 0.93;
  std::printf("%s: DiLoCo K = 4, H = 8 on %s: test accuracy %.4f (bar 0.93), %lld rounds, %.0f bytes per worker\n",
              ok ? "consumer ok" : "consumer FAILED", train_set.name().c_str(), result.test.accuracy,
              static_cast<long long>(diloco.communication().rounds), diloco.communication().bytes_per_worker);
  return ok ? 0 : 1;
}
