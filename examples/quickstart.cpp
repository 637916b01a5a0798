// A first look at the core: a parameter set shaped like LeNet-5 (Hsu et al. 2020), its blocks,
// replicas, and deterministic randomness. Grows into the study driver as the library grows.
#include <distopt/distopt.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  CLI::App app{"distopt quickstart: the ParameterSet of LeNet-5 and the seeded RNG"};
  std::uint64_t seed = 0;
  int workers = 4;
  app.add_option("--seed", seed, "seed of every random draw")->capture_default_str();
  app.add_option("--workers", workers, "replicas to make and average")->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  distopt::ParameterSet params;
  params.add("conv1.weight", {64, 3, 5, 5});
  params.add("conv1.bias", {64});
  params.add("conv2.weight", {64, 64, 5, 5});
  params.add("conv2.bias", {64});
  params.add("fc1.weight", {384, 1600});
  params.add("fc1.bias", {384});
  params.add("fc2.weight", {192, 384});
  params.add("fc2.bias", {192});
  params.add("fc3.weight", {100, 192});
  params.add("fc3.bias", {100});

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
  return 0;
}
