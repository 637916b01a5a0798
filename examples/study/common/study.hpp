// The study's shared machinery, so each stage program stays a page: scale (quick, standard, full,
// smoke), data (Fashion-MNIST by default, CIFAR-100 or IDX files from a folder, or the synthetic
// CIFAR-format stand-in; prepared once and cached), resumable stage markers, and result tables.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/data/cache.hpp"
#include "distopt/data/cifar.hpp"
#include "distopt/data/idx.hpp"
#include "distopt/data/split.hpp"
#include "distopt/data/synthetic.hpp"
#include "distopt/data/transforms.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/train/metrics.hpp"
#include "distopt/train/models.hpp"

namespace distopt::study {

/// How big the study runs, and the grids it searches. `quick` (the default, ./scripts/run) is the
/// study's protocol on a 30,000-image subset of Fashion-MNIST's training set at a few epochs,
/// sized to finish within 15 minutes on 2 cores; `standard` is the study's grids on all the data
/// at reduced epochs (an afternoon); `full` the study's own scale (150 epochs); `smoke` is for
/// tests (its numbers mean nothing; that every stage runs, resumes and agrees across processes does).
///
/// Every stage-4 run takes at least `min_steps` optimizer steps and every LocalSGD or SlowMo cell
/// at least `min_rounds` rounds: a stage raises its epochs until the largest batch (or the
/// sparsest cell) gets them, and says so. Cells that a finding compares run with `seeds` seeds.
struct Scale {
  std::string name = "quick";  ///< "quick", "standard", "full" or "smoke": part of every stamp, so scales never share runs
  std::size_t subset_train = 30'000;  ///< use only this many images of the official training set (0: all), before the split
  std::size_t synthetic_train = 6'000;  ///< sizes of the synthetic CIFAR-format set (--synthetic)
  std::size_t synthetic_test = 1'000;
  /// Synthetic data is an easier variant of the calibrated default (less noise, no distractors or
  /// clutter) at every scale but full, so that a few epochs already separate the methods.
  bool easy_synthetic = true;
  double validation_ratio = 0.2;  ///< the study's train_valid_test split
  std::size_t seeds = 2;          ///< seeds of the cells a finding compares
  std::size_t patience = 2;       ///< n_epochs_stop of stage 3's retrain (early stopping on validation)
  std::size_t epochs_lenet = 3;   ///< stage 2
  std::size_t epochs_search = 2;  ///< stage 3, per trial
  std::size_t epochs_final = 5;   ///< stage 3 retrain (at most; early stopping may end it sooner)
  std::size_t epochs_large = 3;   ///< stage 4, every run (raised to reach min_steps at the largest batch)
  std::size_t epochs_local = 4;   ///< stages 5 and 6, every run (raised to reach min_rounds in the cells compared)
  std::size_t min_steps = 100;
  std::size_t min_rounds = 30;
  std::vector<double> sgdm_lrs{0.01, 0.05};
  std::vector<double> adamw_lrs{1e-3, 3e-3};
  std::vector<double> weight_decays{4e-4, 5e-3};
  /// LARS and LAMB lr grids. The standard and full grids hold the study's values (LARS lr 1.5
  /// with wd 1e-3; LAMB lr 4.8 / (2^5 * 100) = 1.5e-3 with wd 4e-4); quick's three points
  /// bracket what won on Fashion-MNIST at batches 128 and 1024 (LAMB chose 2.4e-2, the top of
  /// {1.5e-3, 6e-3, 2.4e-2}, at both).
  std::vector<double> lars_lrs{1.5, 6.0, 24.0};
  std::vector<double> lamb_lrs{3e-3, 1.2e-2, 4.8e-2};
  std::vector<std::size_t> batch_sizes{128, 1024};  ///< stage 4's sweep; LARS and LAMB are searched at each
  std::size_t micro_batch = 4096;  ///< accumulation above it: batch_size // 4096 micro-batches, the study's rule
  std::vector<std::size_t> workers{2, 4, 8};
  std::vector<std::size_t> local_steps{4, 8, 16};
  std::size_t compare_workers = 4;   ///< the K of the cells stage 5's and 6's findings compare
  std::size_t compare_steps = 8;     ///< their H
  std::vector<double> slowmo_alphas{0.5, 1.0};
  std::vector<double> slowmo_betas{0.6, 0.8};
  double epochs_scale = 1.0;  ///< multiplies every epoch count above (--epochs-scale)

  /// The study's grids on all of the data at reduced epochs: an afternoon on 2 cores for
  /// Fashion-MNIST with the classic LeNet-5, longer for CIFAR-100 with hsu.
  static Scale standard() {
    Scale s;
    s.name = "standard";
    s.subset_train = 0;
    s.synthetic_train = 50'000;
    s.synthetic_test = 10'000;
    s.seeds = 3;
    s.patience = 5;
    s.epochs_lenet = 20;
    s.epochs_search = 5;
    s.epochs_final = 30;
    s.epochs_large = 20;
    s.epochs_local = 20;
    s.sgdm_lrs = {0.003, 0.01, 0.03, 0.1};
    s.adamw_lrs = {3e-4, 1e-3, 3e-3};
    s.weight_decays = {0.0, 4e-4, 5e-3};
    s.lars_lrs = {0.5, 1.5, 3.0, 6.0, 12.0, 24.0};
    s.lamb_lrs = {7.5e-4, 1.5e-3, 3e-3, 6e-3, 1.2e-2, 2.4e-2, 4.8e-2};
    s.batch_sizes = {128, 512, 2048, 8192};
    s.local_steps = {4, 8, 16, 32, 64};
    s.compare_steps = 16;
    s.slowmo_alphas = {0.5, 1.0, 2.0};
    s.slowmo_betas = {0.0, 0.5, 0.6, 0.7, 0.9};
    return s;
  }
  /// The study's scale: all of the data, 150 epochs, the whole grids, batches to 16k.
  static Scale full() {
    Scale s = standard();
    s.name = "full";
    s.easy_synthetic = false;
    s.patience = 10;
    s.epochs_lenet = 150;
    s.epochs_search = 30;
    s.epochs_final = 150;
    s.epochs_large = 150;
    s.epochs_local = 150;
    s.batch_sizes = {128, 256, 512, 1024, 2048, 4096, 8192, 16384};
    return s;
  }
  static Scale quick_scale() { return Scale{}; }
  /// A pass through every stage in seconds, for the tests (which also run under the sanitizers,
  /// 20 times slower): 300 images, one epoch, one-cell grids, one seed (H = 2, so that an epoch
  /// holds rounds; a batch of 128 over micro-batches of 64, so that the sweep accumulates).
  static Scale smoke() {
    Scale s;
    s.name = "smoke";
    s.subset_train = 375;  // 300 train + 75 validation
    s.synthetic_train = 375;
    s.synthetic_test = 100;
    s.seeds = 1;
    s.patience = 1;
    s.epochs_lenet = 1;
    s.epochs_search = 1;
    s.epochs_final = 1;
    s.epochs_large = 1;
    s.epochs_local = 1;
    s.min_steps = 0;
    s.min_rounds = 0;
    s.sgdm_lrs = {0.05};
    s.adamw_lrs = {3e-3};
    s.weight_decays = {4e-4};
    s.lars_lrs = {1.5};
    s.lamb_lrs = {6e-3};
    s.batch_sizes = {128};
    s.micro_batch = 64;
    s.workers = {2};
    s.local_steps = {2};
    s.compare_workers = 2;
    s.compare_steps = 2;
    s.slowmo_alphas = {1.0};
    s.slowmo_betas = {0.6};
    return s;
  }
  /// `epochs` times epochs_scale, at least 1.
  [[nodiscard]] std::size_t scaled(std::size_t epochs) const {
    return std::max<std::size_t>(1, static_cast<std::size_t>(std::llround(static_cast<double>(epochs) * epochs_scale)));
  }
};

/// Where the study reads and writes: `data` a CIFAR-100 folder (holding cifar-100-binary/) or a
/// folder of IDX files (MNIST, Fashion-MNIST); empty: Debian's Fashion-MNIST
/// (/usr/share/datasets/fashion-mnist), or with `synthetic` the library's synthetic CIFAR-format
/// set, generated into <work>/data and read back through the CIFAR-100 reader. `results` holds the
/// tables and plots, `work` caches and checkpoints.
struct Config {
  Scale scale{};
  std::filesystem::path data{};
  bool synthetic = false;
  std::filesystem::path results = "results";
  std::filesystem::path work = "out";
  std::uint64_t seed = 0;
  int threads = 0;

  /// The folder the data is read from.
  [[nodiscard]] std::filesystem::path data_folder() const {
    if (synthetic) return work / "data" / synthetic_key();
    if (!data.empty()) return data;
    return std::string(data::fashion_mnist_folder);
  }
  /// True when the data is CIFAR-100's binary format (real or synthetic), else IDX.
  [[nodiscard]] bool cifar_format() const {
    return synthetic || std::filesystem::exists(data_folder() / data::cifar100::folder_name);
  }
  /// What every table and plot says about its data.
  [[nodiscard]] std::string data_label() const {
    const std::string subset =
        scale.subset_train > 0 && !synthetic ? message(", ", scale.subset_train, " training images of the official set") : std::string();
    if (synthetic)
      return message("SYNTHETIC CIFAR-format data (", scale.easy_synthetic ? "easy variant, " : "", "seed ", seed, ", ",
                     scale.synthetic_train, " train / ", scale.synthetic_test, " test images), not real data");
    if (cifar_format()) return message("CIFAR-100 (", data_folder().string(), subset, ")");
    const bool fashion = data.empty() || data_folder().string().find("fashion") != std::string::npos;
    return message(fashion ? "Fashion-MNIST" : "IDX data", " (", data_folder().string(), subset, ")");
  }
  /// The scale's name: "quick", "standard", "full" or "smoke".
  [[nodiscard]] std::string mode() const { return scale.name; }
  /// The i-th seed of the cells a finding compares: seed, seed + 1, ...
  [[nodiscard]] std::uint64_t seed_of(std::size_t i) const { return seed + i; }

 private:
  [[nodiscard]] std::string synthetic_key() const {
    return message("synthetic-", scale.easy_synthetic ? "easy-" : "", seed, "-", scale.synthetic_train, "-", scale.synthetic_test);
  }
};

/// The synthetic data's options for `scale` (see Scale::easy_synthetic).
[[nodiscard]] inline data::SyntheticOptions synthetic_options(const Scale& scale, std::uint64_t seed) {
  data::SyntheticOptions o{.seed = seed, .train_records = scale.synthetic_train, .test_records = scale.synthetic_test};
  if (scale.easy_synthetic) {
    o.noise = 4.0;
    o.distractor = 0.0;
    o.clutter = 0;
    o.colour_swap = 0.0;
    o.max_rotation = 10.0;
    o.max_shift = 2.0;
  }
  return o;
}

/// Fills `config.data` from DISTOPT_DATA when it is empty and the variable is set.
inline void apply_environment(Config& config) {
  if (config.data.empty() && !config.synthetic)
    if (const char* env = std::getenv("DISTOPT_DATA"); env != nullptr && *env != '\0') config.data = env;
}

/// The prepared data of the study (stage 1's output): the data set of `config` read once, the
/// training subset of the scale taken, split (stratified, the scale's validation ratio), the
/// train split's statistics computed, all cached under <work>/prepared. Later stages call this
/// too and get the cache.
[[nodiscard]] inline data::PreparedData prepare_data(const Config& config, bool* loaded_from_cache = nullptr) {
  namespace fs = std::filesystem;
  data::ImageDataset source;
  std::string key;
  const fs::path folder = config.data_folder();
  if (config.synthetic && !fs::exists(folder / data::cifar100::folder_name / "test.bin"))
    data::make_synthetic_cifar100(folder, synthetic_options(config.scale, config.seed));
  if (config.cifar_format()) {
    // A folder named with --data may hold any number of CIFAR-format records (a smaller set in
    // CIFAR-100's format, or the synthetic files); stage 1's card shows the counts read.
    const data::Cifar100Options sizes =
        config.synthetic ? data::Cifar100Options{.train_records = config.scale.synthetic_train, .test_records = config.scale.synthetic_test}
                         : data::Cifar100Options{.train_records = std::nullopt, .test_records = std::nullopt};
    source = data::to_dataset(data::load_cifar100(folder, sizes));
    key = config.synthetic ? folder.filename().string() : "cifar100";
  } else {
    source = data::load_idx_dataset(folder);
    key = "idx-" + source.info.name;
  }
  if (!config.synthetic && config.scale.subset_train > 0 && config.scale.subset_train < source.train.size()) {
    // A stratified draw, so every class keeps its share of the subset.
    const auto parts = data::split_indices(source.train.fine,
                                           {.validation_ratio = static_cast<double>(config.scale.subset_train) /
                                                                static_cast<double>(source.train.size()),
                                            .seed = config.seed});
    source.train = data::subset(source.train, parts.validation);
    key += message("-subset", config.scale.subset_train);
  }
  for (char& c : key)
    if (c == '/' || c == ' ') c = '_';
  return data::load_or_prepare(config.work / "prepared" / key, source,
                               {.validation_ratio = config.scale.validation_ratio, .seed = config.seed}, loaded_from_cache);
}

/// The prepared data on every rank of `comm`: rank 0 prepares (and caches) it first, then the
/// others read the cache, or prepare their own where they do not share rank 0's file system.
template <class Comm>
[[nodiscard]] data::PreparedData prepare_data(const Config& config, Comm& comm) {
  if (comm.rank() != 0) comm.barrier();
  data::PreparedData prepared = prepare_data(config);
  if (comm.rank() == 0) comm.barrier();
  return prepared;
}

/// A markdown table (GitHub style) with a header row.
[[nodiscard]] inline std::string markdown_table(const std::vector<std::string>& header,
                                                const std::vector<std::vector<std::string>>& rows) {
  std::ostringstream out;
  const auto line = [&](const std::vector<std::string>& cells) {
    out << '|';
    for (const auto& c : cells) out << ' ' << c << " |";
    out << '\n';
  };
  line(header);
  out << '|';
  for (std::size_t i = 0; i < header.size(); ++i) out << "---|";
  out << '\n';
  for (const auto& row : rows) line(row);
  return out.str();
}

/// "" when `chosen` lies inside `grid`, else a warning that it is at the grid's edge: the best
/// value may lie beyond the values tried, and a wider grid (--standard) would tell.
[[nodiscard]] inline std::string edge_note(const std::string& what, double chosen, const std::vector<double>& grid) {
  if (grid.size() < 2) return {};
  const auto [lo, hi] = std::minmax_element(grid.begin(), grid.end());
  if (chosen != *lo && chosen != *hi) return {};
  return message(what, " ", io::format_number(chosen), " is the ", chosen == *hi ? "largest" : "smallest",
                 " value of its grid: the best may lie beyond it. ");
}

/// A number in stamps and CSV cells: exact enough to tell settings apart.
[[nodiscard]] inline std::string exact(double v) { return io::format_number(v, 10); }

/// A percentage with one decimal, "nan" when not a number.
[[nodiscard]] inline std::string percent(double fraction) {
  if (!(fraction == fraction)) return "nan";
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << 100.0 * fraction;
  return out.str();
}

/// A difference of two fractions in percentage points with its sign and one decimal ("+1.5"),
/// "nan" when not a number: the observations compare runs in points.
[[nodiscard]] inline std::string signed_points(double fraction) {
  if (!(fraction == fraction)) return "nan";
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << (fraction >= 0 ? "+" : "") << 100.0 * fraction;
  return out.str();
}

/// `v` with `decimals` fixed decimals (seconds, images per second), "nan" when not a number.
[[nodiscard]] inline std::string fixed(double v, int decimals) {
  if (!(v == v)) return "nan";
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(decimals);
  out << v;
  return out.str();
}

/// The model follows the data: the classic LeNet-5 (LeCun et al. 1998: 6 and 16 channels, 120 and
/// 84 units) on 28 x 28 grey images, zero-padded to LeCun's 32 x 32 field by conv1; the study's
/// hsu LeNet-5 (Hsu et al. 2020) on 32 x 32 colour images.
[[nodiscard]] inline nn::LeNet5Options model_options(const data::DatasetInfo& info, std::uint64_t seed) {
  return train::model_options(info, seed);
}

/// "classic LeNet-5 (LeCun et al. 1998)" or "hsu LeNet-5 (Hsu et al. 2020)", for tables.
[[nodiscard]] inline std::string model_label(const data::DatasetInfo& info) {
  return model_options(info, 0).preset == nn::Preset::classic ? "classic LeNet-5 (LeCun et al. 1998, 28 x 28 padded to 32 x 32)"
                                                              : "hsu LeNet-5 (Hsu et al. 2020)";
}

/// The augmentation of the training runs: CIFAR's random crop with 4-pixel padding and horizontal
/// flip on 32 x 32 colour images; on 28 x 28 grey images a horizontal flip only (the clothes of
/// Fashion-MNIST are left-right symmetric; a crop of a centred 28 x 28 item mostly cuts it).
[[nodiscard]] inline data::Augmentation augmentation_for(const data::DatasetInfo& info) {
  if (info.shape.height == 28) return {.padding = 0, .horizontal_flip = true};
  return {};
}

/// "random crop (padding 4) + horizontal flip" or "horizontal flip", for tables.
[[nodiscard]] inline std::string augmentation_label(const data::Augmentation& a) {
  if (a.padding == 0) return a.horizontal_flip ? "horizontal flip" : "none";
  return message("random crop (padding ", a.padding, ")", a.horizontal_flip ? " + horizontal flip" : "");
}

}  // namespace distopt::study
