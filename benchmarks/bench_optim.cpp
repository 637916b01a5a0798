// Optimizer steps against the memory bandwidth measured beside them.
//
// BM_Triad/<n>/<threads> is STREAM's triad a = b + s * c over n floats (12 bytes per element, as
// STREAM counts). BM_Optim_Step/<optimizer>/<n>/<threads> reports bytes/s of the minimal traffic of
// one step (SGDM 20 B per parameter: read w, g, b, write w, b; AdamW 28 B; LARS 28 B and LAMB 36 B:
// their fused update plus a norm pass reading w and g) and `of_triad`, that figure over the triad's
// at the same size and thread count, measured earlier in the same run.
#include <distopt/distopt.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <utility>

namespace {

using distopt::ParameterSet;
namespace optim = distopt::optim;

std::map<std::pair<std::int64_t, int>, double> triad_bytes_per_second;

// Names are built with distopt::message: GCC 12 misreports std::string's operator+ (-Wrestrict,
// GCC PR 105329).
std::string size_label(std::int64_t n) { return distopt::message("1e", std::lround(std::log10(static_cast<double>(n)))); }

void BM_Triad(benchmark::State& state, std::int64_t n, int threads) {
  distopt::parallel::ThreadCount scope(threads);
  distopt::AlignedBuffer<float> a(n), b(n), c(n);
  const float s = 3.0f;
  auto triad = [&] {
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
  };
  triad();  // first touch outside the timing
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    triad();
    benchmark::ClobberMemory();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double bytes = 12.0 * static_cast<double>(n) * static_cast<double>(state.iterations());
  triad_bytes_per_second[{n, threads}] = bytes / seconds;
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
}

ParameterSet make_params(std::int64_t n) {
  ParameterSet params;
  params.add("weight", {n / 100, 100});  // 2-D: LARS and LAMB adapt it
  distopt::Rng rng(1);
  for (float& w : params.values()) w = rng.uniform() - 0.5f;
  for (float& g : params.grads()) g = (rng.uniform() - 0.5f) * 1e-3f;
  return params;
}

template <class Optimizer>
void BM_Optim_Step(benchmark::State& state, std::int64_t n, int threads, double bytes_per_parameter,
                   typename Optimizer::options_type options) {
  distopt::parallel::ThreadCount scope(threads);
  ParameterSet params = make_params(n);
  Optimizer optimizer(params, options);
  optimizer.step(params);  // first touch of the state outside the timing
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    optimizer.step(params);
    benchmark::ClobberMemory();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double bytes = bytes_per_parameter * static_cast<double>(n) * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  const auto triad = triad_bytes_per_second.find({n, threads});
  if (triad != triad_bytes_per_second.end()) state.counters["of_triad"] = bytes / seconds / triad->second;
}

void register_all() {
  const std::int64_t sizes[] = {100'000, 1'000'000, 10'000'000, 100'000'000};
  const int thread_counts[] = {1, 2};
  for (std::int64_t n : sizes)
    for (int t : thread_counts)
      benchmark::RegisterBenchmark(distopt::message("BM_Triad/", size_label(n), "/", t).c_str(),
                                   [n, t](benchmark::State& s) { BM_Triad(s, n, t); })
          ->UseRealTime()
          ->MinTime(1.0)  // the reference of every ratio: worth a steadier figure
          ->Unit(benchmark::kMillisecond);
  for (std::int64_t n : sizes)
    for (int t : thread_counts) {
      const std::string suffix = distopt::message("/", size_label(n), "/", t);
      auto add = [&](const std::string& name, auto function) {
        benchmark::RegisterBenchmark(distopt::message("BM_Optim_Step/", name, suffix).c_str(), function)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      };
      add("sgdm", [n, t](benchmark::State& s) {
        BM_Optim_Step<optim::Sgdm<ParameterSet>>(s, n, t, 20, {.lr = 0.01, .momentum = 0.9, .weight_decay = 1e-4});
      });
      add("adamw", [n, t](benchmark::State& s) { BM_Optim_Step<optim::AdamW<ParameterSet>>(s, n, t, 28, {.lr = 1e-3}); });
      add("lars", [n, t](benchmark::State& s) {
        BM_Optim_Step<optim::Lars<ParameterSet>>(s, n, t, 28, {.lr = 0.1, .weight_decay = 1e-3});
      });
      add("lamb", [n, t](benchmark::State& s) { BM_Optim_Step<optim::Lamb<ParameterSet>>(s, n, t, 36, {.lr = 1e-3}); });
    }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
