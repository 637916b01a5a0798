// LeNet-5 training and inference throughput, beside the machine's measured fp32 FMA peak and,
// when LibTorch is installed, beside LibTorch running the same model and step in the same run.
//
// Every distopt benchmark runs once per path of the kernels this CPU runs (nn/isa.hpp: avx512,
// avx2, portable), the path named after the benchmark's name (`<path>` below); the context line
// `isa` names the one a program takes by default.
// BM_Peak_Fma/<path>/<threads>: fused multiply-adds on independent registers of the path, the
//   machine's fp32 ceiling for its kernels.
// BM_Gemm_MicroKernel/<path>: the 6 x (2 packets) micro-kernel alone on L1-resident panels.
// <model>: hsu and classic on CIFAR-shaped 3 x 32 x 32 inputs; fmnist, the quick study's model
//   (classic on Fashion-MNIST's 1 x 28 x 28, conv1 padded by 2, 10 classes).
// BM_Torch_LeNet5_TrainStep/<model>/<batch>/<threads>: LibTorch (torch::nn, torch::optim::SGD).
// BM_LeNet5_TrainStep/<path>/<model>/<batch>/<threads>: zero_grad, forward, cross-entropy, backward,
//   SGDM step (lr 0.01, momentum 0.9, weight decay 4e-4); items/s = images/s. Counters: `of_peak`,
//   the share of the FMA peak the step's arithmetic reaches; `vs_torch`, LibTorch's step time
//   over ours (> 1: faster than LibTorch). Both from best-of timings (the machine is shared).
// BM_LeNet5_Forward/<path>/<model>/<batch>/<threads>: logits only.
// BM_LeNet5_Layers/<path>/<model>/64/1: one thread, per-pass timing (the per-layer table of the summary).
#include <distopt/distopt.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#if DISTOPT_HAVE_TORCH
#include "torch_reference/torch_lenet.hpp"
#endif

namespace {

namespace nn = distopt::nn;
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// --- the machine's fp32 FMA peak ------------------------------------------------------------

// Twelve independent chains of FMAs on the path's float packets (nn/kernels/gemm-inl.hpp:
// fma_chains), on every thread: 2 FMA pipes x 4 cycles of latency covered, 16 registers enough.
double peak_flops(nn::Isa isa, int threads, std::int64_t iterations) {
  const nn::ScopedIsa path(isa);
  distopt::parallel::ThreadCount scope(threads);
  const std::int64_t lanes = nn::gemm::shape<float>().lanes;
  const auto start = Clock::now();
  float sink = 0;
#pragma omp parallel reduction(+ : sink)
  sink += nn::with_kernels([&](auto k) { return fma_chains(k, iterations); });
  benchmark::DoNotOptimize(sink);
  return 2.0 * 12 * static_cast<double>(lanes) * static_cast<double>(iterations) * threads / seconds_since(start);
}

constexpr int eval_batch = 1000;
std::map<std::pair<nn::Isa, int>, double> best_peak;  // (path, threads) -> FLOP/s

double peak(nn::Isa isa, int threads) {
  auto& best = best_peak[{isa, threads}];
  if (best == 0)
    for (int rep = 0; rep < 5; ++rep) best = std::max(best, peak_flops(isa, threads, 50'000'000));
  return best;
}

void BM_Peak_Fma(benchmark::State& state, nn::Isa isa, int threads) {
  for (auto _ : state) state.counters["GFLOPs"] = peak(isa, threads) / 1e9;
}

// --- the model --------------------------------------------------------------------------------

// FLOPs (2 per multiply-add) of one image in each pass of a training step: the forward pass,
// the weight gradients (as much again), and the input gradients of every layer but conv1
// (nothing needs the gradient of the images). Pooling, ReLU and the loss count as 0.
std::array<double, nn::pass_count> pass_flops(const nn::LeNet5Options& o) {
  const bool hsu = o.preset == nn::Preset::hsu;
  const double c1 = hsu ? 64 : 6, c2 = hsu ? 64 : 16, f1 = hsu ? 384 : 120, f2 = hsu ? 192 : 84;
  const double classes = static_cast<double>(o.classes);
  const double s1 = static_cast<double>(o.image_size + 2 * o.padding) - 4, p1 = std::floor(s1 / 2), s2 = p1 - 4,
               p2 = std::floor(s2 / 2);
  const double conv1 = 2 * c1 * static_cast<double>(o.channels) * 25 * s1 * s1, conv2 = 2 * c2 * c1 * 25 * s2 * s2;
  const double fc1 = 2 * c2 * p2 * p2 * f1, fc2 = 2 * f1 * f2, fc3 = 2 * f2 * classes;
  std::array<double, nn::pass_count> flops{};
  auto at = [&](nn::Pass p) -> double& { return flops[static_cast<std::size_t>(p)]; };
  at(nn::Pass::conv1_forward) = at(nn::Pass::conv1_weights) = conv1;
  at(nn::Pass::conv2_forward) = at(nn::Pass::conv2_weights) = at(nn::Pass::conv2_input) = conv2;
  at(nn::Pass::fc1_forward) = fc1;
  at(nn::Pass::fc2_forward) = fc2;
  at(nn::Pass::fc3_forward) = fc3;
  at(nn::Pass::fc1_backward) = 2 * fc1;
  at(nn::Pass::fc2_backward) = 2 * fc2;
  at(nn::Pass::fc3_backward) = 2 * fc3;
  return flops;
}
double training_flops(const nn::LeNet5Options& o) {
  double sum = 0;
  for (double f : pass_flops(o)) sum += f;
  return sum;
}
// The forward pass alone.
double forward_flops(const nn::LeNet5Options& o) {
  const auto f = pass_flops(o);
  return f[static_cast<std::size_t>(nn::Pass::conv1_forward)] + f[static_cast<std::size_t>(nn::Pass::conv2_forward)] +
         f[static_cast<std::size_t>(nn::Pass::fc1_forward)] + f[static_cast<std::size_t>(nn::Pass::fc2_forward)] +
         f[static_cast<std::size_t>(nn::Pass::fc3_forward)];
}

// The benchmarked models: the two presets on CIFAR-shaped inputs (3 x 32 x 32, 100 classes), and
// `fmnist`, the quick study's model (classic on Fashion-MNIST's 1 x 28 x 28, conv1 padded by 2,
// 10 classes).
nn::LeNet5Options model_options(const std::string& model) {
  if (model == "hsu") return {.preset = nn::Preset::hsu};
  if (model == "classic") return {.preset = nn::Preset::classic};
  return {.preset = nn::Preset::classic, .classes = 10, .channels = 1, .image_size = 28, .padding = 2};
}
const std::array<std::string, 3> models = {"hsu", "classic", "fmnist"};

struct Batch {
  nn::LeNet5Options shape;
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  Batch(const nn::LeNet5Options& o, std::ptrdiff_t n, std::uint64_t seed)
      : shape(o), images(static_cast<std::size_t>(n * o.channels * o.image_size * o.image_size)),
        labels(static_cast<std::size_t>(n)) {
    distopt::Rng rng(seed);
    for (float& v : images) v = static_cast<float>(rng.normal());
    for (auto& l : labels) l = static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(o.classes)));
  }
  [[nodiscard]] nn::Images<float> view() const {
    return {images.data(), static_cast<std::ptrdiff_t>(labels.size()), shape.channels, shape.image_size,
            shape.image_size};
  }
};

using Key = std::tuple<std::string, int, int>;  // (model, batch, threads)
using PathKey = std::tuple<nn::Isa, std::string, int, int>;  // (path, model, batch, threads)
std::map<Key, double> best_torch_step;                      // seconds
std::map<PathKey, double> best_step, best_forward;          // seconds
struct PassTimes {
  std::array<double, nn::pass_count> seconds{};  // per step, one thread
  double step = 0;                               // seconds per step with timing on
  int batch = 0;
};
std::map<std::pair<nn::Isa, std::string>, PassTimes> pass_times;  // (path, model) -> the per-layer split
std::map<nn::Isa, double> micro_kernel_flops;


// The training step every benchmark times: zero_grad, loss and gradient, SGDM; constructed with
// one step taken, so the workspace is sized outside the timing.
struct TrainStep {
  nn::LeNet5<float> net;
  distopt::optim::Sgdm<nn::LeNet5<float>::params_type> sgdm;
  Batch data;

  TrainStep(const std::string& model, int batch)
      : net(model_options(model)),
        sgdm(net.parameters(), {.lr = 0.01, .momentum = 0.9, .weight_decay = 4e-4}),
        data(model_options(model), batch, 1) {
    operator()();
  }
  void operator()() {
    net.parameters().zero_grad();
    benchmark::DoNotOptimize(net.loss_and_gradient(data.view(), data.labels));
    sgdm.step(net.parameters());
  }
};

void BM_LeNet5_TrainStep(benchmark::State& state, nn::Isa isa, const std::string& preset, int batch, int threads) {
  const nn::ScopedIsa path(isa);
  distopt::parallel::ThreadCount scope(threads);
  TrainStep step(preset, batch);
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    step();
    best = std::min(best, seconds_since(t0));
  }
  auto& record = best_step[{isa, preset, batch, threads}];
  record = record > 0 ? std::min(record, best) : best;
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["best_img_per_s"] = batch / best;
  state.counters["of_peak"] = training_flops(step.net.options()) * batch / best / peak(isa, threads);
  const auto torch = best_torch_step.find({preset, batch, threads});
  if (torch != best_torch_step.end()) state.counters["vs_torch"] = torch->second / best;
}

void BM_LeNet5_Forward(benchmark::State& state, nn::Isa isa, const std::string& preset, int batch, int threads) {
  const nn::ScopedIsa path(isa);
  distopt::parallel::ThreadCount scope(threads);
  nn::LeNet5<float> net(model_options(preset));
  const Batch data(net.options(), batch, 1);
  std::vector<float> logits(static_cast<std::size_t>(batch * net.options().classes));
  net.forward(data.view(), logits.data());
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    net.forward(data.view(), logits.data());
    benchmark::DoNotOptimize(logits.data());
    best = std::min(best, seconds_since(t0));
  }
  auto& record = best_forward[{isa, preset, batch, threads}];
  record = record > 0 ? std::min(record, best) : best;
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["best_img_per_s"] = batch / best;
  state.counters["of_peak"] = forward_flops(net.options()) * batch / best / peak(isa, threads);
}

// One thread, timing on: where a training step's time goes, pass by pass.
void BM_LeNet5_Layers(benchmark::State& state, nn::Isa isa, const std::string& preset, int batch) {
  const nn::ScopedIsa path(isa);
  distopt::parallel::ThreadCount scope(1);
  TrainStep step(preset, batch);
  step.net.time_passes(true);
  double total = 0;
  std::int64_t steps = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    step();
    total += seconds_since(t0);
    ++steps;
  }
  PassTimes& times = pass_times[{isa, preset}];
  times.seconds = step.net.pass_seconds();
  for (double& t : times.seconds) t /= static_cast<double>(steps);
  times.step = total / static_cast<double>(steps);
  times.batch = batch;
  state.SetItemsProcessed(state.iterations() * batch);
}

// The micro-kernel alone on L1-resident panels: what the product reaches before packing and
// epilogues, against the FMA peak of one core.
void BM_Gemm_MicroKernel(benchmark::State& state, nn::Isa isa) {
  const nn::ScopedIsa path(isa);
  const nn::gemm::Shape b = nn::gemm::shape<float>();
  distopt::AlignedBuffer<float> lhs(b.mr * b.kc), rhs(b.nr * b.kc), tile(b.mr * b.nr);
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    nn::with_kernels([&](auto k) { micro_kernels(k, 1000, lhs.data(), rhs.data(), tile.data()); });
    benchmark::DoNotOptimize(tile.data());
    benchmark::ClobberMemory();
    best = std::min(best, seconds_since(t0));
  }
  micro_kernel_flops[isa] = 2.0 * static_cast<double>(b.mr * b.nr * b.kc) * 1000 / best;
  state.counters["GFLOPs"] = micro_kernel_flops[isa] / 1e9;
  state.counters["of_peak"] = micro_kernel_flops[isa] / peak(isa, 1);
}

#if DISTOPT_HAVE_TORCH
void BM_Torch_LeNet5_TrainStep(benchmark::State& state, const std::string& preset, int batch, int threads) {
  distopt_bench::torch_set_threads(threads);
  const nn::LeNet5Options o = model_options(preset);
  distopt_bench::TorchLeNet net(o.preset == nn::Preset::hsu ? "hsu" : "classic", batch, 0,
                                {.channels = o.channels, .size = o.image_size, .padding = o.padding,
                                 .classes = o.classes});
  net.train_step();
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    net.train_step();
    best = std::min(best, seconds_since(t0));
  }
  auto& reference = best_torch_step[{preset, batch, threads}];
  reference = reference > 0 ? std::min(reference, best) : best;
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["best_img_per_s"] = batch / best;
}
#endif

std::string name(const char* what, const std::string& preset, int batch, int threads) {
  return distopt::message(what, "/", preset, "/", batch, "/", threads);
}

std::string name(const char* what, nn::Isa isa, const std::string& preset, int batch, int threads) {
  return distopt::message(what, "/", nn::isa_name(isa), "/", preset, "/", batch, "/", threads);
}

void register_all() {
  for (nn::Isa isa : nn::supported_isas()) {
    for (int t : {1, 2})
      benchmark::RegisterBenchmark(distopt::message("BM_Peak_Fma/", nn::isa_name(isa), "/", t).c_str(),
                                   [=](benchmark::State& s) { BM_Peak_Fma(s, isa, t); })
          ->Iterations(1);
    benchmark::RegisterBenchmark(distopt::message("BM_Gemm_MicroKernel/", nn::isa_name(isa)).c_str(),
                                 [=](benchmark::State& s) { BM_Gemm_MicroKernel(s, isa); })
        ->UseRealTime();
  }
  for (const std::string& preset : models)
    for (int batch : {64, 256})
      for (int t : {1, 2}) {
#if DISTOPT_HAVE_TORCH
        benchmark::RegisterBenchmark(name("BM_Torch_LeNet5_TrainStep", preset, batch, t).c_str(),
                                     [=](benchmark::State& s) { BM_Torch_LeNet5_TrainStep(s, preset, batch, t); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
#endif
        for (nn::Isa isa : nn::supported_isas())
          benchmark::RegisterBenchmark(name("BM_LeNet5_TrainStep", isa, preset, batch, t).c_str(),
                                       [=](benchmark::State& s) { BM_LeNet5_TrainStep(s, isa, preset, batch, t); })
              ->UseRealTime()
              ->Unit(benchmark::kMillisecond);
      }
  for (nn::Isa isa : nn::supported_isas())
    for (const std::string& preset : models) {
      for (int t : {1, 2})
        benchmark::RegisterBenchmark(name("BM_LeNet5_Forward", isa, preset, eval_batch, t).c_str(),
                                     [=](benchmark::State& s) { BM_LeNet5_Forward(s, isa, preset, eval_batch, t); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(distopt::message("BM_LeNet5_Layers/", nn::isa_name(isa), "/", preset, "/64/1").c_str(),
                                   [=](benchmark::State& s) { BM_LeNet5_Layers(s, isa, preset, 64); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
}

// The figures the targets are stated in, computed from this run's timings, path by path.
void print_path_summary(nn::Isa isa) {
  const nn::ScopedIsa path(isa);
  std::printf("\n=== kernels: %s; FMA peak %.1f GFLOP/s on 1 thread, %.1f on 2, measured above ===\n",
              nn::gemm::isa().c_str(), peak(isa, 1) / 1e9, peak(isa, 2) / 1e9);
  if (const auto mk = micro_kernel_flops.find(isa); mk != micro_kernel_flops.end())
    std::printf("micro-kernel: %.1f GFLOP/s, %.0f%% of the 1-thread peak\n", mk->second / 1e9,
                100 * mk->second / peak(isa, 1));
  std::printf("\n%-20s %13s %12s %8s %9s\n", "train step", "distopt img/s", "LibTorch", "ratio", "of peak");
  for (const auto& [key, seconds] : best_step) {
    const auto& [path_isa, preset, batch, threads] = key;
    if (path_isa != isa) continue;
    const double flops = training_flops(model_options(preset)) * batch / seconds;
    const auto torch = best_torch_step.find({preset, batch, threads});
    std::printf("%-20s %13.0f", distopt::message(preset, "/", batch, "/", threads).c_str(), batch / seconds);
    if (torch != best_torch_step.end())
      std::printf(" %12.0f %7.2fx", batch / torch->second, torch->second / seconds);
    else
      std::printf(" %12s %8s", "-", "-");
    std::printf(" %8.0f%%\n", 100 * flops / peak(isa, threads));
  }
  std::printf("\n%-20s %12s %14s %8s\n", "evaluation", "img/s", "train img/s", "ratio");
  for (const auto& [key, seconds] : best_forward) {
    const auto& [path_isa, preset, batch, threads] = key;
    if (path_isa != isa) continue;
    // Against the training step at batch 256 (the study's evaluation runs beside training).
    const auto train = best_step.find({isa, preset, 256, threads});
    std::printf("%-20s %12.0f", distopt::message(preset, "/", batch, "/", threads).c_str(), batch / seconds);
    if (train != best_step.end())
      std::printf(" %14.0f %7.2fx\n", 256 / train->second, (batch / seconds) / (256 / train->second));
    else
      std::printf(" %14s %8s\n", "-", "-");
  }
  for (const auto& [key, times] : pass_times) {
    const auto& [path_isa, preset] = key;
    if (path_isa != isa) continue;
    const auto flops = pass_flops(model_options(preset));
    double sum = 0;
    for (double t : times.seconds) sum += t;
    std::printf("\nper layer: %s, batch %d, 1 thread (step %.2f ms; the passes add up to %.2f ms)\n", preset.c_str(),
                times.batch, 1e3 * times.step, 1e3 * sum);
    std::printf("%-22s %9s %9s %8s %7s\n", "pass", "ms", "GFLOP/s", "of peak", "share");
    for (std::size_t p = 0; p < nn::pass_count; ++p) {
      const double t = times.seconds[p];
      std::printf("%-22s %9.3f", nn::to_string(static_cast<nn::Pass>(p)), 1e3 * t);
      if (flops[p] > 0)
        std::printf(" %9.1f %7.0f%%", flops[p] * times.batch / t / 1e9, 100 * flops[p] * times.batch / t / peak(isa, 1));
      else
        std::printf(" %9s %8s", "-", "-");
      std::printf(" %6.1f%%\n", 100 * t / times.step);
    }
  }
}

void print_summary() {
  std::printf("\nSummary (the path a program takes by default on this CPU: %s)\n",
              std::string(nn::isa_name(nn::active_isa())).c_str());
  for (nn::Isa isa : nn::supported_isas()) print_path_summary(isa);
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
#if DISTOPT_HAVE_TORCH
  benchmark::AddCustomContext("torch", distopt_bench::torch_version() + ", BLAS: " + distopt_bench::torch_blas_info());
#endif
  // LibTorch's convolutions run in oneDNN, which takes the widest ISA of the CPU at run time, as
  // distopt's default path does: every path of ours is compared with that one LibTorch.
  benchmark::AddCustomContext("isa", nn::gemm::isa() + ", chosen at run time (DISTOPT_ISA to force one)");
#if DISTOPT_HAVE_TORCH
  const char* onednn = std::getenv("ONEDNN_MAX_CPU_ISA");
  benchmark::AddCustomContext("torch_onednn_isa", onednn != nullptr ? onednn : "widest of the CPU (ONEDNN_MAX_CPU_ISA unset)");
#endif
  benchmark::RunSpecifiedBenchmarks();
  print_summary();
  benchmark::Shutdown();
  return 0;
}
