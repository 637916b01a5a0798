// A first look at the library: the study's LeNet-5 (Hsu et al. 2020) and its parameter set, replicas
// drawn from independent random streams, then a few SGDM steps on one fixed batch of random images
// (the loss must fall: the model can memorise it). Grows into the study driver as the library grows.
#include <distopt/distopt.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>

int main(int argc, char** argv) {
  CLI::App app{"distopt quickstart: the ParameterSet of LeNet-5 and the seeded RNG"};
  std::uint64_t seed = 0;
  int workers = 4;
  int steps = 20;
  int batch = 64;
  app.add_option("--seed", seed, "seed of every random draw")->capture_default_str();
  app.add_option("--workers", workers, "replicas to make and average")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "SGDM steps on the fixed batch")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--batch", batch, "images in the batch")->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  distopt::nn::LeNet5<float> net({.preset = distopt::nn::Preset::hsu, .seed = seed});
  distopt::ParameterSet params = net.parameters();

  std::printf("distopt %d.%d.%d, %d OpenMP threads\n", distopt::version.major, distopt::version.minor,
              distopt::version.patch, distopt::parallel::max_threads());
  std::printf("%-14s %-18s %10s %10s\n", "block", "shape", "offset", "size");
  for (const auto& block : params.blocks())
    std::printf("%-14s %-18s %10td %10td\n", block.name.c_str(), distopt::message(block.shape).c_str(),
                block.offset, block.size);
  std::printf("%td parameters in a flat buffer of %td floats (%.2f MB)\n", params.num_parameters(),
              params.size(), static_cast<double>(params.size()) * 4e-6);

  // Each worker draws from its own stream: the same numbers whatever thread runs it.
  const distopt::Rng root(seed);
  std::vector<distopt::ParameterSet> replicas(static_cast<std::size_t>(workers), params);
  distopt::parallel::for_each_chunk(workers, 1, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
    for (auto k = begin; k < end; ++k) {
      distopt::Rng rng = root.split(static_cast<std::uint64_t>(k));
      for (auto& w : replicas[static_cast<std::size_t>(k)].values()) w = static_cast<float>(rng.normal(0.0, 0.01));
    }
  });
  params.values().setZero();
  for (const auto& replica : replicas) params.values() += replica.values();
  params.values() /= static_cast<float>(workers);
  std::printf("average of %d replicas: mean %.3e, max |w| %.3e\n", workers,
              static_cast<double>(params.values().mean()), static_cast<double>(params.values().cwiseAbs().maxCoeff()));

  // Train on one fixed batch: the loss must fall as the model memorises it.
  const distopt::Rng data = root.split(1000);
  std::vector<float> images(static_cast<std::size_t>(batch) * 3 * 32 * 32);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  distopt::Rng draw = data;
  for (float& v : images) v = static_cast<float>(draw.normal());
  for (auto& l : labels) l = static_cast<std::int32_t>(draw.below(100));
  distopt::optim::Sgdm sgdm(net.parameters(), {.lr = 0.01, .momentum = 0.9, .weight_decay = 4e-4});
  const distopt::nn::Images<float> x{images.data(), batch, 3, 32, 32};
  const auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < steps; ++step) {
    net.parameters().zero_grad();
    const auto stats = net.loss_and_gradient(x, labels);
    sgdm.step(net.parameters());
    if (step % 5 == 0 || step == steps - 1)
      std::printf("step %3d  loss %.4f  top-1 %5.1f%%\n", step, stats.loss,
                  100.0 * static_cast<double>(stats.correct1) / static_cast<double>(stats.count));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%d training steps of %d images in %.2f s: %.0f images/s\n", steps, batch, seconds,
              steps * batch / seconds);
  return 0;
}
