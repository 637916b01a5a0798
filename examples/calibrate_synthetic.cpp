// Calibrates the synthetic CIFAR-100 (include/distopt/data/synthetic.hpp): generates it in memory,
// normalises each channel with the train split's mean and std, and trains the study's LeNet-5 (or a
// softmax regression on the raw pixels, the baseline the task must beat) with SGDM, a seeded
// shuffle per epoch and no augmentation, printing train loss and accuracy and test top-1/top-5 per
// epoch. The generator's defaults were tuned with it until the LeNet-5 lands near what it reaches on
// the real data, the linear model stays well below, and a much larger batch is visibly worse.
#include <distopt/core/parallel.hpp>
#include <distopt/core/rng.hpp>
#include <distopt/data/synthetic.hpp>
#include <distopt/nn/lenet5.hpp>
#include <distopt/nn/linear.hpp>
#include <distopt/nn/loss.hpp>
#include <distopt/nn/model.hpp>
#include <distopt/optim/accumulation.hpp>
#include <distopt/optim/sgdm.hpp>

#include <CLI/CLI.hpp>

#include "common/numbers_cli.hpp"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

namespace {

using distopt::nn::Samples;
using distopt::nn::Targets;
using distopt::nn::LossStats;
namespace cifar100 = distopt::data::cifar100;

/// Softmax regression, logits = x W^T + b on the flattened normalised pixels: the linear baseline.
/// Zero-initialised (the loss is convex). Serial and deterministic; small enough not to need threads.
class SoftmaxRegression {
 public:
  using scalar_type = float;
  using params_type = distopt::ParameterSet;

  SoftmaxRegression(std::ptrdiff_t features, std::ptrdiff_t classes) : layer_{"fc", features, classes} {
    weight_ = params_.add("fc.weight", {classes, features});
    bias_ = params_.add("fc.bias", {classes});
  }

  [[nodiscard]] params_type& parameters() noexcept { return params_; }
  [[nodiscard]] const params_type& parameters() const noexcept { return params_; }
  [[nodiscard]] std::ptrdiff_t output_size() const noexcept { return layer_.out_features; }
  [[nodiscard]] std::ptrdiff_t input_size() const noexcept { return layer_.in_features; }

  void forward(const Samples<float>& x, float* logits) {
    layer_.forward(params_.value(weight_).data(), params_.value(bias_).data(), x.data, x.count, logits, 0,
                   layer_.out_features, false, gemm_);
  }

  LossStats evaluate(const Samples<float>& x, const Targets& y) { return run(x, y.classes, 0.0, false); }

  LossStats loss_and_gradient(const Samples<float>& x, const Targets& y, double weight = 1.0) {
    return run(x, y.classes, weight, true);
  }

 private:
  LossStats run(const Samples<float>& x, std::span<const std::int32_t> labels, double weight, bool gradient) {
    const std::ptrdiff_t classes = layer_.out_features;
    logits_.resize(static_cast<std::size_t>(x.count * classes));
    d_logits_.resize(logits_.size());
    forward(x, logits_.data());
    const distopt::nn::CrossEntropy criterion{};
    LossStats stats;
    const double scale = weight / static_cast<double>(x.count);
    for (std::ptrdiff_t r = 0; r < x.count; ++r) {
      const float* z = logits_.data() + r * classes;
      const std::int32_t label = labels[static_cast<std::size_t>(r)];
      stats.loss += criterion.row(z, classes, label, gradient ? d_logits_.data() + r * classes : nullptr, scale);
      stats.correct1 += distopt::nn::in_top_k(z, classes, label, 1) ? 1 : 0;
      stats.correct5 += distopt::nn::in_top_k(z, classes, label, 5) ? 1 : 0;
    }
    stats.loss /= static_cast<double>(x.count);
    stats.count = x.count;
    if (gradient)
      layer_.backward_weights(x.data, d_logits_.data(), x.count, params_.grad(weight_).data(),
                              params_.grad(bias_).data(), 0, classes, gemm_);
    return stats;
  }

  distopt::nn::Linear layer_;
  params_type params_;
  std::size_t weight_ = 0, bias_ = 0;
  distopt::nn::gemm::Workspace<float> gemm_;
  std::vector<float> logits_, d_logits_;
};

/// uint8 images to normalised floats through a per-channel table: (v - mean_c) / std_c.
struct Normaliser {
  std::array<std::array<float, 256>, 3> table{};

  explicit Normaliser(const distopt::data::LabelledImages& train) {
    const std::size_t n = train.size();
    for (std::size_t c = 0; c < 3; ++c) {
      std::array<std::uint64_t, 256> histogram{};
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t* p = train.images.data() + i * cifar100::pixels_per_image + c * 1024;
        for (std::size_t k = 0; k < 1024; ++k) ++histogram[p[k]];
      }
      double count = 0, sum = 0, sum2 = 0;
      for (std::size_t v = 0; v < 256; ++v) {
        const auto h = static_cast<double>(histogram[v]), x = static_cast<double>(v) / 255.0;
        count += h;
        sum += h * x;
        sum2 += h * x * x;
      }
      const double mean = sum / count, sd = std::sqrt(std::max(sum2 / count - mean * mean, 1e-12));
      std::printf("channel %zu: mean %.4f std %.4f\n", c, mean, sd);
      for (std::size_t v = 0; v < 256; ++v)
        table[c][v] = static_cast<float>((static_cast<double>(v) / 255.0 - mean) / sd);
    }
  }

  /// Images `indices` of `data` into `out` (NCHW floats) and their fine labels into `labels`.
  void gather(const distopt::data::LabelledImages& data, std::span<const std::size_t> indices, float* out,
              std::int32_t* labels) const {
    const auto n = static_cast<std::ptrdiff_t>(indices.size());
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t j = 0; j < n; ++j) {
      const std::size_t i = indices[static_cast<std::size_t>(j)];
      const std::uint8_t* p = data.images.data() + i * cifar100::pixels_per_image;
      float* q = out + static_cast<std::size_t>(j) * cifar100::pixels_per_image;
      for (std::size_t c = 0; c < 3; ++c)
        for (std::size_t k = 0; k < 1024; ++k) q[c * 1024 + k] = table[c][p[c * 1024 + k]];
      labels[j] = data.fine[i];
    }
  }
};

struct Settings {
  std::ptrdiff_t batch = 64;
  std::ptrdiff_t micro_batch = 512;
  int epochs = 10;
  double lr = 0.01, momentum = 0.9, weight_decay = 4e-4;
  std::uint64_t seed = 0;
};

LossStats evaluate(auto& model, const distopt::data::LabelledImages& data, const Normaliser& norm) {
  constexpr std::size_t eval_batch = 500;
  std::vector<float> x(eval_batch * cifar100::pixels_per_image);
  std::vector<std::int32_t> labels(eval_batch);
  std::vector<std::size_t> indices(eval_batch);
  LossStats total;
  for (std::size_t first = 0; first < data.size(); first += eval_batch) {
    const std::size_t n = std::min(eval_batch, data.size() - first);
    std::iota(indices.begin(), indices.begin() + static_cast<std::ptrdiff_t>(n), first);
    norm.gather(data, std::span(indices.data(), n), x.data(), labels.data());
    const auto s = model.evaluate(Samples<float>(distopt::Images<float>{x.data(), static_cast<std::ptrdiff_t>(n), 3, 32, 32}),
                                  std::span<const std::int32_t>(labels.data(), n));
    total.loss += s.loss * static_cast<double>(s.count);
    total.correct1 += s.correct1;
    total.correct5 += s.correct5;
    total.count += s.count;
  }
  total.loss /= static_cast<double>(std::max<std::int64_t>(total.count, 1));
  return total;
}

double percent(std::int64_t hits, std::int64_t count) {
  return 100.0 * static_cast<double>(hits) / static_cast<double>(std::max<std::int64_t>(count, 1));
}

void train(auto& model, const distopt::data::Cifar100& data, const Normaliser& norm, const Settings& s) {
  using Clock = std::chrono::steady_clock;
  distopt::optim::Sgdm sgdm(model.parameters(),
                            {.lr = s.lr, .momentum = s.momentum, .weight_decay = s.weight_decay});
  const std::size_t n = data.train.size();
  const auto batch = static_cast<std::size_t>(s.batch);
  std::vector<std::size_t> order(n);
  std::vector<float> x(batch * cifar100::pixels_per_image);
  std::vector<std::int32_t> labels(batch);
  const distopt::Rng shuffle_root = distopt::Rng(s.seed).split(0x5EED);
  std::printf("%5s %10s %9s %9s %9s %9s %10s %8s\n", "epoch", "train_loss", "train_%", "test_loss", "top1_%",
              "top5_%", "images/s", "seconds");
  std::vector<double> history;
  const auto start = Clock::now();
  for (int epoch = 1; epoch <= s.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    std::iota(order.begin(), order.end(), std::size_t{0});
    distopt::Rng rng = shuffle_root.split(static_cast<std::uint64_t>(epoch));
    rng.shuffle(order.begin(), order.end());
    LossStats running;
    for (std::size_t first = 0; first < n; first += batch) {
      const std::size_t size = std::min(batch, n - first);
      norm.gather(data.train, std::span(order.data() + first, size), x.data(), labels.data());
      const Samples<float> all(distopt::Images<float>{x.data(), static_cast<std::ptrdiff_t>(size), 3, 32, 32});
      model.parameters().zero_grad();
      for (const auto& micro : distopt::optim::split_batch(static_cast<std::int64_t>(size), s.micro_batch)) {
        const auto st = model.loss_and_gradient(
            all.slice(micro.begin, micro.end),
            std::span<const std::int32_t>(labels.data() + micro.begin, static_cast<std::size_t>(micro.end - micro.begin)),
            micro.weight);
        running.loss += st.loss * static_cast<double>(st.count);
        running.correct1 += st.correct1;
        running.count += st.count;
      }
      sgdm.step(model.parameters());
    }
    const double train_seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    const LossStats test = evaluate(model, data.test, norm);
    const double seconds = std::chrono::duration<double>(Clock::now() - epoch_start).count();
    history.push_back(percent(test.correct1, test.count));
    std::printf("%5d %10.4f %9.2f %9.4f %9.2f %9.2f %10.0f %8.1f\n", epoch,
                running.loss / static_cast<double>(running.count), percent(running.correct1, running.count),
                test.loss, percent(test.correct1, test.count), percent(test.correct5, test.count),
                static_cast<double>(n) / train_seconds, seconds);
    std::fflush(stdout);
  }
  std::printf("test top-1 per epoch:");
  for (double a : history) std::printf(" %.2f", a);
  std::printf("\ntraining and evaluation: %.1f s\n", std::chrono::duration<double>(Clock::now() - start).count());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains LeNet-5 (or a linear model) on the synthetic CIFAR-100 to check its difficulty"};
  distopt::data::SyntheticOptions data_options;
  Settings settings;
  std::string model = "lenet";
  int threads = 0;
  app.add_option("--train", data_options.train_records, "train images")->capture_default_str();
  app.add_option("--test", data_options.test_records, "test images")->capture_default_str();
  app.add_option("--epochs", settings.epochs, "epochs")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch", settings.batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--micro-batch", settings.micro_batch, "largest micro-batch (gradient accumulation above it)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--lr", settings.lr, "SGDM learning rate")->capture_default_str()->check(distopt::cli::number_in(1e-12, 1e3));
  app.add_option("--momentum", settings.momentum, "SGDM momentum")->capture_default_str()->check(distopt::cli::number_in(0, 1, true));
  app.add_option("--weight-decay", settings.weight_decay, "SGDM weight decay")->capture_default_str()->check(distopt::cli::number_in(0, 10));
  app.add_option("--seed", settings.seed, "seed of the data, the weights and the shuffles")->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads (0: the default)")->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--model", model, "lenet or linear")->capture_default_str()->check(CLI::IsMember({"lenet", "linear"}));
  // The generator's difficulty knobs, to tune it without recompiling.
  app.add_option("--noise", data_options.noise, "pixel noise, grey levels")->capture_default_str()->check(distopt::cli::number_in(0, 128));
  app.add_option("--distractor", data_options.distractor, "probability of a distractor")->capture_default_str()->check(distopt::cli::number_in(0, 1));
  app.add_option("--distractor-scale", data_options.distractor_scale, "distractor radius / object radius, at most")
      ->capture_default_str()->check(distopt::cli::number_in(1e-6, 1.5));
  app.add_option("--clutter", data_options.clutter, "most clutter strokes")->capture_default_str();
  app.add_option("--hue-jitter", data_options.hue_jitter, "hue jitter")->capture_default_str()->check(distopt::cli::number_in(0, 1));
  app.add_option("--colour-swap", data_options.colour_swap, "probability of random colours")->capture_default_str()->check(distopt::cli::number_in(0, 1));
  app.add_option("--min-radius", data_options.min_radius, "smallest object radius, pixels")->capture_default_str()->check(distopt::cli::number_in(3, 16));
  app.add_option("--max-radius", data_options.max_radius, "largest object radius, pixels")->capture_default_str()->check(distopt::cli::number_in(3, 16));
  app.add_option("--max-shift", data_options.max_shift, "largest shift, pixels")->capture_default_str()->check(distopt::cli::number_in(0, 16));
  app.add_option("--max-rotation", data_options.max_rotation, "largest rotation, degrees")->capture_default_str()->check(distopt::cli::number_in(0, 180));
  CLI11_PARSE(app, argc, argv);
  data_options.seed = settings.seed;

  try {
    std::optional<distopt::parallel::ThreadCount> thread_count;
    if (threads > 0) thread_count.emplace(threads);
    std::printf("%d OpenMP threads; model %s, batch %td, lr %g, momentum %g, weight decay %g, %d epochs, seed %llu\n",
                distopt::parallel::max_threads(), model.c_str(), settings.batch, settings.lr, settings.momentum,
                settings.weight_decay, settings.epochs, static_cast<unsigned long long>(settings.seed));
    const auto generation_start = std::chrono::steady_clock::now();
    const distopt::data::Cifar100 data = distopt::data::synthetic_cifar100(data_options);
    const double generation =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - generation_start).count();
    std::printf("generated %zu train + %zu test images in %.2f s (%.0f images/s)\n", data.train.size(),
                data.test.size(), generation,
                static_cast<double>(data.train.size() + data.test.size()) / std::max(generation, 1e-9));
    const Normaliser norm(data.train);
    if (model == "lenet") {
      distopt::nn::LeNet5<float> net({.preset = distopt::nn::Preset::hsu, .seed = settings.seed});
      train(net, data, norm, settings);
    } else {
      SoftmaxRegression linear(static_cast<std::ptrdiff_t>(cifar100::pixels_per_image),
                               static_cast<std::ptrdiff_t>(cifar100::fine_classes));
      train(linear, data, norm, settings);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "calibrate_synthetic: %s\n", e.what());
    return 1;
  }
  return 0;
}
