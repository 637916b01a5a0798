// The study's shared machinery, so each stage program stays a page: scale (quick or full), data
// (real CIFAR-100 or the synthetic stand-in, prepared once and cached), resumable stage markers,
// and result tables.
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
#include "distopt/data/synthetic.hpp"
#include "distopt/train/metrics.hpp"

namespace distopt::study {

/// How big the study runs. `quick` shrinks data, epochs and grids (all six stages took 436 s on two
/// idle cores; the target is 15 minutes); `full` is the study's own scale (150 epochs, full grids);
/// `smoke` is for tests.
struct Scale {
  std::string name = "quick";  ///< "quick", "full" or "smoke": part of every stamp, so scales never share runs
  std::size_t synthetic_train = 6'000;   ///< synthetic set sizes (real CIFAR-100 is 50,000 / 10,000)
  std::size_t synthetic_test = 1'000;
  /// Synthetic data at quick scale is an easier variant of the calibrated default (less noise,
  /// no distractors or clutter, class colours kept, smaller poses), so that a few epochs on a few
  /// thousand images already separate the methods: hsu LeNet-5 with SGDM (lr 0.05) reaches about
  /// 48% test accuracy after 3 epochs of 5,400 images, where the default data is still at chance.
  bool easy_synthetic = true;
  std::size_t subset_train = 0;          ///< use only this many training images of real data (0: all)
  double validation_ratio = 0.1;
  std::size_t epochs_lenet = 3;          ///< stage 2
  std::size_t epochs_search = 2;         ///< stages 3 and 4, per trial
  std::size_t epochs_final = 3;          ///< stage 3 retrain, stage 4 sweep, stages 5 and 6
  std::vector<double> sgdm_lrs{0.01, 0.05};
  std::vector<double> adamw_lrs{1e-3, 3e-3};
  std::vector<double> weight_decays{4e-4, 5e-3};
  std::vector<double> lars_lrs{1.0, 4.0};
  std::vector<double> lamb_lrs{2e-3, 8e-3};
  std::vector<std::size_t> batch_sizes{128, 512, 2048};
  std::size_t micro_batch_cap = 1024;    ///< accumulation above this (4096 at full scale)
  std::vector<std::size_t> workers{2, 4, 8};
  std::vector<std::size_t> local_steps{4, 16};  ///< at quick scale an epoch is only 11 to 43 local steps
  std::vector<double> slowmo_alphas{0.5, 1.0};
  std::vector<double> slowmo_betas{0.0, 0.5};

  /// The study's scale: full data, 150 epochs, the whole grids.
  static Scale full() {
    Scale s;
    s.name = "full";
    s.easy_synthetic = false;
    s.synthetic_train = 50'000;
    s.synthetic_test = 10'000;
    s.epochs_lenet = 150;
    s.epochs_search = 30;
    s.epochs_final = 150;
    s.sgdm_lrs = {0.003, 0.01, 0.03, 0.1};
    s.adamw_lrs = {3e-4, 1e-3, 3e-3};
    s.weight_decays = {0.0, 4e-4, 5e-3};
    s.lars_lrs = {0.5, 1.0, 2.0, 4.0, 8.0};
    s.lamb_lrs = {1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2};
    s.batch_sizes = {128, 256, 512, 1024, 2048, 4096, 8192, 16384};
    s.micro_batch_cap = 4096;
    s.workers = {2, 4, 8};
    s.local_steps = {4, 8, 16, 32, 64};
    s.slowmo_alphas = {0.5, 1.0, 2.0};
    s.slowmo_betas = {0.0, 0.5, 0.7, 0.9};
    return s;
  }
  static Scale quick_scale() { return Scale{}; }
  /// A pass through every stage in seconds, for the tests (which also run under the sanitizers,
  /// 20 times slower): 300 images, one epoch, one-cell grids (H = 2, so that an epoch holds
  /// rounds; a batch of 128 over a micro-batch cap of 64, so that the sweep accumulates).
  /// Its numbers mean nothing; that every stage runs, resumes and agrees across processes does.
  static Scale smoke() {
    Scale s;
    s.name = "smoke";
    s.synthetic_train = 300;
    s.synthetic_test = 100;
    s.epochs_lenet = 1;
    s.epochs_search = 1;
    s.epochs_final = 1;
    s.sgdm_lrs = {0.05};
    s.adamw_lrs = {3e-3};
    s.weight_decays = {4e-4};
    s.lars_lrs = {1.0};
    s.lamb_lrs = {8e-3};
    s.batch_sizes = {128};
    s.micro_batch_cap = 64;
    s.workers = {2};
    s.local_steps = {2};
    s.slowmo_alphas = {1.0};
    s.slowmo_betas = {0.5};
    return s;
  }
};

/// Where the study reads and writes: `data` a CIFAR-100 folder (empty: synthetic data, or the
/// DISTOPT_DATA environment variable when set), `results` the tables and plots, `work` caches and
/// checkpoints.
struct Config {
  Scale scale{};
  std::filesystem::path data{};
  std::filesystem::path results = "results";
  std::filesystem::path work = "out";
  std::uint64_t seed = 0;
  int threads = 0;

  /// True when no real CIFAR-100 folder is given.
  [[nodiscard]] bool synthetic() const { return data.empty(); }
  /// What every table and plot says about its data.
  [[nodiscard]] std::string data_label() const {
    if (!synthetic()) return message("CIFAR-100 (", data.string(), ")");
    return message("SYNTHETIC CIFAR-format data (", scale.easy_synthetic ? "easy variant, " : "", "seed ", seed, ", ",
                   scale.synthetic_train, " train / ", scale.synthetic_test, " test images), not CIFAR-100");
  }
  /// The scale's name: "quick", "full" or "smoke".
  [[nodiscard]] std::string mode() const { return scale.name; }
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
  if (config.data.empty())
    if (const char* env = std::getenv("DISTOPT_DATA"); env != nullptr && *env != '\0') config.data = env;
}

/// The prepared data of the study (stage 1's output): real CIFAR-100 from `config.data`, or the
/// synthetic set generated into <work>/data once; split, statistics, cached under <work>/prepared.
/// Later stages call this too and get the cache.
[[nodiscard]] inline data::PreparedData prepare_data(const Config& config, bool* loaded_from_cache = nullptr) {
  namespace fs = std::filesystem;
  data::Cifar100 source;
  std::string key;
  if (config.synthetic()) {
    key = message("synthetic-", config.scale.easy_synthetic ? "easy-" : "", config.seed, "-", config.scale.synthetic_train, "-",
                  config.scale.synthetic_test);
    const fs::path folder = config.work / "data" / key;
    if (!fs::exists(folder / data::cifar100::folder_name / "test.bin"))
      data::make_synthetic_cifar100(folder, synthetic_options(config.scale, config.seed));
    source = data::load_cifar100(folder, {.train_records = config.scale.synthetic_train, .test_records = config.scale.synthetic_test});
  } else {
    key = "cifar100";
    source = data::load_cifar100(config.data);
    if (config.scale.subset_train > 0 && config.scale.subset_train < source.train.size()) {
      const auto parts = data::split_indices(source.train.fine,
                                             {.validation_ratio = 1.0 - static_cast<double>(config.scale.subset_train) /
                                                                            static_cast<double>(source.train.size()),
                                              .seed = config.seed});
      source.train = data::subset(source.train, parts.train);
      key += message("-subset", config.scale.subset_train);
    }
  }
  return data::load_or_prepare(config.work / "prepared" / key, source,
                               {.validation_ratio = config.scale.validation_ratio, .seed = config.seed}, loaded_from_cache);
}

/// Resumable stages: a stage writes <results>/<stage>/DONE, holding the mode and data label, as
/// its very last act; `reproduce` skips stages whose marker matches the current configuration.
class StageMarker {
 public:
  StageMarker(const Config& config, std::string stage) : file_(config.results / stage / "DONE"), stamp_(stamp(config)) {}

  [[nodiscard]] bool done() const {
    std::ifstream in(file_);
    std::stringstream text;
    text << in.rdbuf();
    return in.good() && text.str() == stamp_;
  }
  void mark_done() const {
    std::filesystem::create_directories(file_.parent_path());
    const std::filesystem::path temp = file_.string() + ".tmp";
    {
      std::ofstream out(temp, std::ios::trunc);
      out << stamp_;
    }
    std::filesystem::rename(temp, file_);
  }

 private:
  static std::string stamp(const Config& c) { return message(c.mode(), "\n", c.data_label(), "\n"); }
  std::filesystem::path file_;
  std::string stamp_;
};

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

/// Writes `text` to `file` through a temporary file and a rename.
inline void write_text(const std::filesystem::path& file, const std::string& text) {
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  const std::filesystem::path temp = file.string() + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << text;
    out.flush();
    require<std::runtime_error>(out.good(), "cannot write '", temp.string(), "'");
  }
  std::filesystem::rename(temp, file);
}

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

}  // namespace distopt::study
