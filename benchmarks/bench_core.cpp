// Core throughput: the RNG that every augmentation and shard draws from, and replica copies,
// which LocalTrainer makes once per worker per round.
#include <distopt/distopt.hpp>

#include <benchmark/benchmark.h>

namespace {

void BM_Rng_Uniform(benchmark::State& state) {
  distopt::Rng rng(1);
  float sink = 0;
  for (auto _ : state) {
    for (int i = 0; i < 1024; ++i) sink += rng.uniform();
    benchmark::DoNotOptimize(sink);
  }
  state.SetItemsProcessed(state.iterations() * 1024);
}
BENCHMARK(BM_Rng_Uniform);

void BM_ParameterSet_AssignValues(benchmark::State& state) {
  distopt::ParameterSet source;
  source.add("w", {state.range(0)});
  distopt::ParameterSet target = source;
  source.values().setOnes();
  for (auto _ : state) {
    target.assign_values(source);
    benchmark::DoNotOptimize(target.values().data());
    benchmark::ClobberMemory();
  }
  // Read one buffer, write the other.
  state.SetBytesProcessed(state.iterations() * state.range(0) * 2 * static_cast<std::int64_t>(sizeof(float)));
}
BENCHMARK(BM_ParameterSet_AssignValues)->Arg(1 << 16)->Arg(1 << 20)->Arg(1 << 24);

}  // namespace

BENCHMARK_MAIN();
