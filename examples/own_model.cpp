// Your model on your data: an MLP written against nn::Model (own_mlp.hpp) trained by
// LocalTrainer with K = 4 workers on a real table from an .npz file, once with DiLoCo (inner
// AdamW, H local steps, outer Nesterov SGD) and once synchronously (averaging after every step),
// printing each one's test accuracy (or, for real-valued targets, test MSE) and the bytes each
// worker sent.
//
//   own_model                                   the breast cancer table (tests/data/tables, made by
//                                               tools/datasets/sklearn_tables.py from python3-sklearn)
//   own_model --data wine.npz --hidden 32
//   own_model --data diabetes.npz               a regression: MSE
//   own_model --fashion-mnist                   Fashion-MNIST's pixels as 784 flat features
#include "own_mlp.hpp"

#include <distopt/data/arrays.hpp>
#include <distopt/data/idx.hpp>
#include <distopt/data/split.hpp>
#include <distopt/local/local_trainer.hpp>
#include <distopt/local/outer.hpp>
#include <distopt/optim/adamw.hpp>
#include <distopt/optim/sgdm.hpp>
#include <distopt/train/local_run.hpp>
#include <distopt/train/run.hpp>

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#ifndef DISTOPT_TABLES_DIR
#define DISTOPT_TABLES_DIR "tests/data/tables"
#endif

namespace {

namespace data = distopt::data;
namespace local = distopt::local;
namespace optim = distopt::optim;
namespace train = distopt::train;

struct Config {
  std::string data = DISTOPT_TABLES_DIR "/breast_cancer.npz";
  bool fashion_mnist = false;
  std::ptrdiff_t hidden = 32;
  std::size_t workers = 4, local_steps = 8, batch_size = 16, epochs = 30;
  std::uint64_t seed = 1;
};

// Fashion-MNIST's images as float arrays of 784 pixels / 255: a table like any other.
data::ArrayDataset as_table(const data::LabelledImages& images, const char* name) {
  std::vector<std::size_t> all(images.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  std::vector<float> x(all.size() * 784);
  std::vector<std::int32_t> y(all.size());
  images.copy(all, x, y, {});
  return data::ArrayDataset::classification(std::move(x), {784}, std::move(y), 10, name);
}

struct Outcome {
  double metric;
  double bytes_per_worker;
  std::int64_t rounds;
};

template <class Inner, class Outer>
Outcome run(const char* label, const OwnMlp& start, const Inner& inner, Outer outer, double lr, const data::Source& train_set,
            const data::Source& test_set, const Config& c, std::size_t local_steps) {
  local::LocalTrainer trainer(start, inner, std::move(outer), train_set,
                              {.workers = c.workers, .local_steps = local_steps, .batch_size = c.batch_size, .seed = c.seed});
  const auto result = train::run_local(trainer, optim::Constant{lr}, train::RunData(train_set, std::nullopt, test_set), {.epochs = c.epochs});
  const bool classes = train_set.target_info().are_classes();
  const double metric = classes ? result.test.accuracy : result.test.loss;
  std::printf("%-12s K = %zu, H = %-3zu %s %8.4f   %6lld rounds, %10.0f bytes sent per worker, %.1f s\n", label, c.workers,
              local_steps, classes ? "test accuracy" : "test MSE     ", metric, static_cast<long long>(trainer.communication().rounds),
              trainer.communication().bytes_per_worker, result.seconds);
  return {metric, trainer.communication().bytes_per_worker, trainer.communication().rounds};
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app{"own_model: an MLP of your own on a table of your own, with LocalTrainer (DiLoCo and synchronous SGD)"};
  app.add_option("--data", c.data, ".npz with x [N, ...] float features and y [N] class ids or [N, width] real targets")
      ->capture_default_str()->check(CLI::ExistingFile);
  app.add_flag("--fashion-mnist", c.fashion_mnist, "train on Fashion-MNIST's pixels as 784 flat features instead");
  app.add_option("--hidden", c.hidden, "hidden units")->capture_default_str()->check(CLI::Range(1, 100'000));
  app.add_option("--workers", c.workers, "K")->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--local-steps", c.local_steps, "H of DiLoCo")->capture_default_str()->check(CLI::Range(1, 100'000));
  app.add_option("--batch-size", c.batch_size, "samples per worker step")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--epochs", c.epochs, "passes over the training split")->capture_default_str()->check(CLI::Range(1, 100'000));
  app.add_option("--seed", c.seed, "split, weights, shards, order")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    data::ArrayDataset train_arrays, test_arrays;
    if (c.fashion_mnist) {
      const auto images = data::load_fashion_mnist();
      train_arrays = as_table(images.train, "fashion-mnist train");
      test_arrays = as_table(images.test, "fashion-mnist test");
    } else {
      const auto all = data::load_arrays(c.data);
      const auto split = data::split_indices(all, {.validation_ratio = 0.25, .seed = c.seed});
      train_arrays = all.subset(split.train);
      test_arrays = all.subset(split.validation);
    }
    const data::FeatureNormalizer norm(data::feature_statistics(train_arrays));
    const data::Source train_set(train_arrays, norm), test_set(test_arrays, norm);
    const data::TargetInfo info = train_set.target_info();
    const bool classes = info.are_classes();
    const auto outputs = static_cast<std::ptrdiff_t>(classes ? info.classes : info.width);
    const OwnMlp start(train_set.sample_shape().size(), c.hidden, outputs,
                       classes ? distopt::nn::Loss::cross_entropy() : distopt::nn::Loss::mean_squared_error(), c.seed);
    std::printf("%s: %zu train, %zu test samples of shape %s, %s; MLP %td-%td-%td (%td parameters)\n", train_set.name().c_str(),
                train_set.size(), test_set.size(), train_set.sample_shape().str().c_str(), info.str().c_str(),
                train_set.sample_shape().size(), c.hidden, outputs, start.parameters().num_parameters());
    const double adam_lr = classes ? 3e-3 : 3e-2, sgd_lr = classes ? 0.05 : 1e-3;
    const Outcome diloco = run("DiLoCo", start, optim::AdamW(start.parameters(), {.lr = adam_lr, .weight_decay = 1e-4}),
                               local::diloco_outer(start.parameters()), adam_lr, train_set, test_set, c, c.local_steps);
    const Outcome sync = run("synchronous", start, optim::Sgdm(start.parameters(), {.lr = sgd_lr, .momentum = 0.9}), local::LocalSgd{},
                             sgd_lr, train_set, test_set, c, 1);
    std::printf("DiLoCo sent %.1fx fewer bytes per worker than synchronous SGD; its %s is %s by %.4f\n",
                sync.bytes_per_worker / diloco.bytes_per_worker, classes ? "accuracy" : "MSE",
                (classes ? diloco.metric >= sync.metric : diloco.metric <= sync.metric) ? "better" : "worse",
                std::abs(diloco.metric - sync.metric));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "own_model: error: " << e.what() << '\n';
    return 1;
  }
}
