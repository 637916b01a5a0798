// Data pipeline throughput: the loader must never slow training down. Target: >= 20,000
// augmented, normalised images/s on one thread, ten times LeNet-5's training rate on this
// machine (bench_lenet), so one thread of preparation keeps up with the model on all cores.
#include <distopt/distopt.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

namespace {

namespace data = distopt::data;

constexpr double target_images_per_second = 20'000;

/// 50,000 random images, the size of CIFAR-100's training set, so the loader reads from memory
/// rather than cache as it does in training.
const data::LabelledImages& training_set() {
  static const data::LabelledImages set = [] {
    data::LabelledImages s;
    constexpr std::size_t n = data::cifar100::train_records;
    s.images = xt::xtensor<std::uint8_t, 4>::from_shape({n, 3, 32, 32});
    distopt::Rng rng(1);
    for (std::size_t i = 0; i < s.images.size(); i += 8) {
      const std::uint64_t bits = rng.next_u64();
      std::memcpy(s.images.data() + i, &bits, 8);
    }
    for (std::size_t i = 0; i < n; ++i) s.fine.push_back(static_cast<std::uint8_t>(i % 100)), s.coarse.push_back(static_cast<std::uint8_t>(i % 20));
    return s;
  }();
  return set;
}

/// One thread preparing shuffled, augmented, normalised batches of 64, epoch after epoch;
/// Arg(1) lets the background thread prepare them (the caller only waits).
void BM_Data_LoaderAugmented(benchmark::State& state) {
  const auto& set = training_set();
  distopt::parallel::ThreadCount threads(1);
  data::Loader loader(set, data::Normalizer(data::channel_statistics(set)),
                      {.batch_size = 64, .seed = 3, .augmentation = data::Augmentation{}, .prefetch = state.range(0) != 0});
  std::uint64_t epoch = 0;
  std::int64_t images = 0;
  for (auto _ : state) {
    const data::Batch* batch = loader.next();
    if (batch == nullptr) {
      loader.start_epoch(++epoch);
      batch = loader.next();
    }
    benchmark::DoNotOptimize(batch->images().data);
    images += static_cast<std::int64_t>(batch->size());
  }
  state.SetItemsProcessed(images);
  state.counters["of_target"] = benchmark::Counter(static_cast<double>(images) / target_images_per_second,
                                                   benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Data_LoaderAugmented)->ArgName("prefetch")->Arg(0)->Arg(1)->UseRealTime();

/// Evaluation batches: normalisation only, in order.
void BM_Data_LoaderPlain(benchmark::State& state) {
  const auto& set = training_set();
  distopt::parallel::ThreadCount threads(1);
  data::Loader loader(set, data::Normalizer(data::channel_statistics(set)), {.batch_size = 256, .shuffle = false});
  std::int64_t images = 0;
  for (auto _ : state) {
    const data::Batch* batch = loader.next();
    if (batch == nullptr) {
      loader.start_epoch(0);
      batch = loader.next();
    }
    benchmark::DoNotOptimize(batch->images().data);
    images += static_cast<std::int64_t>(batch->size());
  }
  state.SetItemsProcessed(images);
}
BENCHMARK(BM_Data_LoaderPlain)->UseRealTime();

/// A table of Fashion-MNIST's size as float features (50,000 x 784), read as a user's arrays are.
const data::ArrayDataset& float_table() {
  static const data::ArrayDataset table = [] {
    constexpr std::size_t n = 50'000, d = 784;
    std::vector<float> x(n * d);
    std::vector<std::int32_t> y(n);
    distopt::Rng rng(2);
    for (auto& v : x) v = static_cast<float>(rng.uniform_double());
    for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<std::int32_t>(i % 10);
    return data::ArrayDataset::classification(std::move(x), {static_cast<std::ptrdiff_t>(d)}, std::move(y), 10, "table");
  }();
  return table;
}

/// The arrays loader (shuffled batches of 256 rows, gathered and standardised per feature, one
/// thread) beside a plain memcpy of the same number of bytes measured in the same run: of_memcpy
/// is the loader's bytes per second over memcpy's (best of 20 copies of 256 rows, contiguous).
void BM_Data_ArraysLoader(benchmark::State& state) {
  const auto& table = float_table();
  distopt::parallel::ThreadCount threads(1);
  const data::FeatureNormalizer norm(data::feature_statistics(table));
  data::Loader loader(data::Source(table, norm), {.batch_size = 256, .seed = 3});
  const std::size_t row_bytes = 784 * sizeof(float), batch_bytes = 256 * row_bytes;
  std::vector<float> to(256 * 784);
  double memcpy_seconds = 1e9;
  for (int r = 0; r < 20; ++r) {
    const std::size_t first = static_cast<std::size_t>(r) * 997 % (50'000 - 256);
    const auto start = std::chrono::steady_clock::now();
    std::memcpy(to.data(), table.features().data() + first * 784, batch_bytes);
    benchmark::ClobberMemory();
    memcpy_seconds = std::min(memcpy_seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::uint64_t epoch = 0;
  std::int64_t rows = 0;
  for (auto _ : state) {
    const data::Batch* batch = loader.next();
    if (batch == nullptr) {
      loader.start_epoch(++epoch);
      batch = loader.next();
    }
    benchmark::DoNotOptimize(batch->inputs().data);
    rows += static_cast<std::int64_t>(batch->size());
  }
  state.SetItemsProcessed(rows);
  state.SetBytesProcessed(rows * static_cast<std::int64_t>(row_bytes));
  state.counters["memcpy_GBps"] = static_cast<double>(batch_bytes) / memcpy_seconds / 1e9;
  state.counters["of_memcpy"] =
      benchmark::Counter(static_cast<double>(rows) * static_cast<double>(row_bytes) / (static_cast<double>(batch_bytes) / memcpy_seconds),
                         benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Data_ArraysLoader)->UseRealTime();

/// Stage 1's one-off costs on the whole training set: statistics and a content fingerprint.
void BM_Data_ChannelStatistics(benchmark::State& state) {
  const auto& set = training_set();
  distopt::parallel::ThreadCount threads(static_cast<int>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(data::channel_statistics(set));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(set.images.size()));
}
BENCHMARK(BM_Data_ChannelStatistics)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Data_Fingerprint(benchmark::State& state) {
  const auto& set = training_set();
  distopt::parallel::ThreadCount threads(static_cast<int>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(data::fingerprint(set));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(set.images.size()));
}
BENCHMARK(BM_Data_Fingerprint)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

/// Reading Fashion-MNIST's training split as Debian installs it: two gzipped IDX files inflated
/// by zlib and checked (60,000 images and labels). Target: under a second (issue 14).
void BM_Data_ReadFashionMnistTrain(benchmark::State& state) {
  const std::filesystem::path folder(data::fashion_mnist_folder);
  if (!std::filesystem::exists(folder / "train-images-idx3-ubyte.gz")) {
    state.SkipWithError("Fashion-MNIST is not installed (Debian: dataset-fashion-mnist)");
    return;
  }
  std::size_t images = 0;
  for (auto _ : state) {
    auto pixels = data::read_idx_images(folder / "train-images-idx3-ubyte.gz");
    auto labels = data::read_idx_labels(folder / "train-labels-idx1-ubyte.gz", 10);
    images = labels.size();
    benchmark::DoNotOptimize(pixels.data());
    benchmark::DoNotOptimize(labels.data());
  }
  state.counters["images"] = static_cast<double>(images);
  state.counters["of_target"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);  // reads per second: > 1 meets it
}
BENCHMARK(BM_Data_ReadFashionMnistTrain)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
