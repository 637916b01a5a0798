// A consumer of distopt::train: a centralized run and a LocalTrainer run under train::run.
#include <distopt/local/local_trainer.hpp>
#include <distopt/local/outer.hpp>
#include <distopt/nn/lenet5.hpp>
#include <distopt/optim/sgdm.hpp>
#include <distopt/train/local_run.hpp>
#include <distopt/train/run.hpp>

#include <cstdio>
#include <vector>

int main() {
  distopt::data::LabelledImages set = distopt::data::allocate_images(40, {1, 16, 16}, false);
  for (std::size_t i = 0; i < set.images.size(); ++i) set.images.data()[i] = static_cast<std::uint8_t>((i * 31) % 256);
  for (std::size_t i = 0; i < 40; ++i) set.fine[i] = static_cast<std::uint8_t>(i % 4);
  const distopt::data::Normalizer normalizer(distopt::data::channel_statistics(set));
  const distopt::train::RunData sets{&set, &set, nullptr, normalizer};
  distopt::nn::LeNet5<float> net({.preset = distopt::nn::Preset::classic, .classes = 4, .channels = 1, .image_size = 16});
  distopt::optim::Sgdm sgdm(net.parameters(), {.lr = 0.05, .momentum = 0.9});
  const auto central = distopt::train::run_training(net, sgdm, distopt::optim::Constant{0.05}, sets,
                                                    {.epochs = 2, .batch_size = 8, .prefetch = false});
  distopt::local::LocalTrainer trainer(net, distopt::optim::Sgdm(net.parameters(), {.lr = 0.05}), distopt::local::LocalSgd{}, set,
                                       normalizer, {.workers = 2, .local_steps = 2, .batch_size = 8});
  const auto local = distopt::train::run_local(trainer, distopt::optim::Constant{0.05}, sets, {.epochs = 2});
  const bool ok = central.status == distopt::train::Status::completed && local.status == distopt::train::Status::completed &&
                  trainer.communication().rounds > 0;
  std::printf("%s (distopt::train: %s, %s)\n", ok ? "consumer ok" : "consumer FAILED",
              std::string(distopt::train::to_string(central.status)).c_str(), std::string(distopt::train::to_string(local.status)).c_str());
  return ok ? 0 : 1;
}
