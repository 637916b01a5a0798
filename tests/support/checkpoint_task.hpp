// The run behind the committed format-1 checkpoints (tests/data/checkpoints): a classic LeNet-5 on
// 1 x 16 x 16 images (15,586 parameters, so each checkpoint stays small), its data, optimizers,
// schedule and run options. make_v1.cpp wrote the files with these; test_checkpoint_compat.cpp
// loads them and continues the runs.
#pragma once

#include <filesystem>

#include "distopt/data/statistics.hpp"
#include "distopt/data/transforms.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/local_run.hpp"
#include "distopt/train/run.hpp"
#include "data.hpp"

namespace test_support {

struct CheckpointTask {
  distopt::data::LabelledImages train, validation, test;
  distopt::data::Normalizer normalizer;
  [[nodiscard]] distopt::train::RunData run() const { return {&train, &validation, &test, normalizer}; }
};

inline const CheckpointTask& checkpoint_task() {
  static const CheckpointTask task = [] {
    const auto labels = [](std::size_t n) {
      std::vector<std::uint8_t> l;
      for (std::size_t i = 0; i < n; ++i) l.push_back(static_cast<std::uint8_t>(i % 10));
      return l;
    };
    const distopt::data::ImageShape shape{1, 16, 16};
    auto train = random_images(labels(64), 11, shape, false);
    const distopt::data::Normalizer normalizer(distopt::data::channel_statistics(train));
    return CheckpointTask{std::move(train), random_images(labels(20), 12, shape, false),
                          random_images(labels(20), 13, shape, false), normalizer};
  }();
  return task;
}

inline distopt::nn::LeNet5<float> checkpoint_model() {
  return distopt::nn::LeNet5<float>(
      {.preset = distopt::nn::Preset::classic, .classes = 10, .channels = 1, .image_size = 16, .seed = 3});
}
inline distopt::optim::SgdmOptions checkpoint_sgdm() { return {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4}; }
inline distopt::optim::AdamWOptions checkpoint_adamw() { return {.lr = 0.003, .weight_decay = 0.01}; }
inline distopt::optim::Schedule checkpoint_schedule() { return distopt::optim::Cosine{.lr = 0.05, .t_max = 24}; }

inline distopt::train::RunOptions checkpoint_run_options(const std::filesystem::path& out, std::string optimizer, double lr,
                                                        double weight_decay) {
  return {.epochs = 3, .batch_size = 8, .seed = 4, .augmentation = std::nullopt, .prefetch = false, .eval_batch = 32,
          .description = {.optimizer = std::move(optimizer), .lr = lr, .weight_decay = weight_decay}, .out = out};
}

using CheckpointLocalTrainer = distopt::local::LocalTrainer<distopt::nn::LeNet5<float>,
                                                            distopt::optim::Sgdm<distopt::BasicParameterSet<float>>,
                                                            distopt::local::SlowMo>;

inline CheckpointLocalTrainer checkpoint_local_trainer(const distopt::nn::LeNet5<float>& model) {
  const auto& task = checkpoint_task();
  return CheckpointLocalTrainer(model, distopt::optim::Sgdm(model.parameters(), checkpoint_sgdm()),
                                distopt::local::SlowMo({.alpha = 1.0, .beta = 0.6}), task.train, task.normalizer,
                                {.workers = 2, .local_steps = 2, .batch_size = 8, .seed = 6, .augmentation = std::nullopt});
}

inline distopt::train::LocalRunOptions checkpoint_local_run_options(const std::filesystem::path& out) {
  return {.epochs = 3, .out = out, .eval_batch = 32};
}

}  // namespace test_support
