// The command-line trainer: one training run on any data the library reads (CIFAR-100 or its
// synthetic stand-in, an IDX folder such as Fashion-MNIST or MNIST, or float arrays in an .npz),
// with LeNet-5 or an MLP, any of the library's optimizers and schedules, checkpoints, resume,
// metrics in JSON Lines, a one-row summary.csv and, with --plot, a PNG of the curves.
//
//   train --synthetic-train 5000 --synthetic-test 1000 --epochs 3 --optimizer sgdm --lr 0.01 --plot
//   train --data /usr/share/datasets/fashion-mnist --model lenet5-classic --epochs 2
//   train --data table.npz --model mlp:64,32 --epochs 30 --batch-size 16
//
// Everything a run writes goes under --out:
//   <out>/data/synthetic-<seed>-<n_train>-<n_test>/cifar-100-binary/  the generated data (made once)
//   <out>/prepared/<data key>-v<validation ratio>/                    split + statistics (data/cache.hpp;
//                                                                     images only: arrays are split in memory)
//   <out>/train/<optimizer>/<batch_size>/<lr>/<weight_decay>/         the run folder: <epoch>.npz
//                                                                     checkpoints, metrics.jsonl,
//                                                                     summary.csv, metrics.png
// Exit status: 0 when the run finished, early-stopped or diverged (a diverged run is a result of a
// hyperparameter search, not a failure of the program: the summary says "diverged"), 1 on any
// error (one line on stderr), 2 or more for a bad command line (CLI11).
#include <distopt/core/error.hpp>
#include <distopt/core/parallel.hpp>
#include <distopt/data/arrays.hpp>
#include <distopt/data/cache.hpp>
#include <distopt/data/cifar.hpp>
#include <distopt/data/idx.hpp>
#include <distopt/data/split.hpp>
#include <distopt/data/synthetic.hpp>
#include <distopt/nn/lenet5.hpp>
#include <distopt/nn/sequential.hpp>
#include <distopt/optim/adamw.hpp>
#include <distopt/optim/lamb.hpp>
#include <distopt/optim/lars.hpp>
#include <distopt/optim/schedule.hpp>
#include <distopt/optim/sgdm.hpp>
#include "common/numbers_cli.hpp"
#include "common/plots.hpp"
#include <distopt/train/checkpoint.hpp>
#include <distopt/train/interrupt.hpp>
#include <distopt/train/run_folder.hpp>
#include <distopt/train/metrics.hpp>
#include <distopt/train/models.hpp>
#include <distopt/train/run.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#ifndef DISTOPT_TOOLS_DIR
#define DISTOPT_TOOLS_DIR "tools"
#endif
#ifndef DISTOPT_PYTHON
#define DISTOPT_PYTHON "/usr/bin/python3"
#endif

namespace {

namespace fs = std::filesystem;
using distopt::message;
using distopt::io::format_number;

/// Everything the command line sets.
struct Config {
  std::string data = "synthetic";
  std::size_t synthetic_train = distopt::data::cifar100::train_records;
  std::size_t synthetic_test = distopt::data::cifar100::test_records;
  std::string model = "auto";
  std::string optimizer = "sgdm";
  std::optional<double> lr;            ///< unset: the optimizer's default (default_lr)
  std::optional<double> weight_decay;  ///< unset: the optimizer's default (default_weight_decay)
  double momentum = 0.9;
  std::size_t batch_size = 64;
  std::size_t epochs = 10;
  std::string scheduler = "cosine";
  std::size_t warmup = 0;
  std::size_t step_size = 0;            ///< step: epochs between decays; 0: a third of the epochs
  std::vector<std::size_t> milestones;  ///< multistep: epochs; empty: half and three quarters
  double gamma = 0.1;
  double power = 1.0;
  std::size_t accumulation_steps = 0;
  std::size_t patience = 0;
  double validation_ratio = 0.1;
  std::size_t subset = 0;  ///< train on the first this many samples of the training split (0: all)
  bool no_augmentation = false;
  std::uint64_t seed = 0;
  int threads = 0;
  std::string out = "out";
  bool resume = false;
  bool overwrite = false;
  std::size_t keep_last = 2;
  std::size_t log_every = 50;
  bool plot = false;
};

double default_lr(const std::string& optimizer) {
  if (optimizer == "sgdm") return 0.01;  // the study (Hsu et al. 2020, Table 1)
  if (optimizer == "lars") return 0.1;
  return 1e-3;  // adamw, lamb
}

double default_weight_decay(const std::string& optimizer) {
  return optimizer == "adamw" || optimizer == "lamb" ? 1e-2 : 4e-4;
}

/// Training images left after the validation split: the same rounding as data::split_indices, so
/// the schedule (which counts steps) is known before any data is read, and a bad combination of
/// flags fails before minutes of data generation.
std::size_t train_split_size(std::size_t n, double ratio) {
  return n - static_cast<std::size_t>(std::llround(ratio * static_cast<double>(n)));
}

/// The learning-rate schedule the flags describe, in optimizer steps: epochs times steps_per_epoch,
/// with `warmup` epochs of linear warmup first (the schedule then starts from its own step 0, so
/// the decay spans the epochs after the warmup and the multistep milestones stay absolute epochs).
distopt::optim::Schedule make_schedule(const Config& c, double lr, std::int64_t steps_per_epoch) {
  using namespace distopt::optim;
  distopt::require(c.warmup < c.epochs, "--warmup (", c.warmup, " epochs) must be below --epochs (", c.epochs, ")");
  const auto epochs_after_warmup = static_cast<std::int64_t>(c.epochs - c.warmup);
  const std::int64_t decay_steps = epochs_after_warmup * steps_per_epoch;
  const auto warmup_steps = static_cast<std::int64_t>(c.warmup) * steps_per_epoch;
  const Schedule base = [&]() -> Schedule {
    if (c.scheduler == "constant") return Constant{.lr = lr};
    if (c.scheduler == "cosine") return Cosine{.lr = lr, .t_max = decay_steps};
    if (c.scheduler == "polynomial") return Polynomial{.lr = lr, .total_steps = decay_steps, .power = c.power};
    if (c.scheduler == "step") {
      const std::size_t every = c.step_size > 0 ? c.step_size : std::max<std::size_t>(1, c.epochs / 3);
      return StepDecay{.lr = lr, .step_size = static_cast<std::int64_t>(every) * steps_per_epoch, .gamma = c.gamma};
    }
    std::vector<std::size_t> epochs = c.milestones;
    if (epochs.empty()) epochs = {std::max<std::size_t>(c.warmup + 1, c.epochs / 2), std::max<std::size_t>(c.warmup + 2, 3 * c.epochs / 4)};
    std::vector<std::int64_t> steps;
    for (const std::size_t e : epochs) {
      distopt::require(e > c.warmup, "--milestones: epoch ", e, " is not after the ", c.warmup, " warmup epochs");
      const std::int64_t s = static_cast<std::int64_t>(e - c.warmup) * steps_per_epoch;
      if (steps.empty() || s > steps.back()) steps.push_back(s);
    }
    return MultiStep{.lr = lr, .milestones = steps, .gamma = c.gamma};
  }();
  // Warmup from a tenth of the rate: a step at lr 0 would be wasted.
  return c.warmup > 0 ? warmup(warmup_steps, 0.1, base) : base;
}

/// "1e-05"-style numbers in the hyperparameter columns: short and exact enough to tell runs apart.
std::string number(double v) { return format_number(v, 10); }

/// The CIFAR-100 (real or synthetic) the run trains on, and the key its prepared cache is filed under.
struct CifarSource {
  distopt::data::Cifar100 data;
  std::string key;
  fs::path folder;
};

CifarSource load_cifar(const Config& c, const fs::path& out) {
  namespace data = distopt::data;
  CifarSource s;
  if (c.data != "synthetic") {
    s.folder = c.data;
    s.key = message("cifar100-", c.seed);
    s.data = data::load_cifar100(s.folder);
    return s;
  }
  s.key = message("synthetic-", c.seed, "-", c.synthetic_train, "-", c.synthetic_test);
  s.folder = out / "data" / s.key;
  const data::Cifar100Options sizes{.train_records = c.synthetic_train, .test_records = c.synthetic_test};
  const fs::path root = s.folder / data::cifar100::folder_name;
  bool complete = true;
  for (const char* name : {"train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"})
    complete = complete && fs::exists(root / name);
  if (complete) {
    try {
      s.data = data::load_cifar100(s.folder, sizes);
      std::cerr << "data: reusing " << root.string() << '\n';
      return s;
    } catch (const std::exception& e) {
      // Our own generated files, damaged: drawing them again gives the same bytes.
      std::cerr << "data: regenerating " << root.string() << " (" << e.what() << ")\n";
    }
  }
  std::cerr << "data: generating " << c.synthetic_train << " + " << c.synthetic_test << " synthetic images into "
            << root.string() << '\n';
  data::make_synthetic_cifar100(
      s.folder, data::SyntheticOptions{.seed = c.seed, .train_records = c.synthetic_train, .test_records = c.synthetic_test});
  s.data = data::load_cifar100(s.folder, sizes);
  return s;
}


/// What the run trains on, whatever its source: the sets as train::run reads them, and what
/// the summary and the model need to know of them. Built in place (its Sources refer to its own
/// members), so it never moves.
struct Problem {
  std::string kind;                         ///< "images" or "arrays"
  std::string label;                        ///< the data column of summary.csv
  std::optional<distopt::data::PreparedData> prepared;  ///< images: split, statistics, cache
  fs::path prepared_folder;
  distopt::data::ArrayDataset train, validation, test;  ///< arrays
  std::optional<distopt::data::FeatureNormalizer> features;
  distopt::train::RunData sets;
  distopt::Shape sample;
  distopt::data::TargetInfo targets;
  std::size_t n_train = 0, n_validation = 0, n_test = 0;
};

/// The first --subset samples of a training split of `n`, or nothing when --subset keeps them all.
std::optional<std::vector<std::size_t>> subset_of(const Config& c, std::size_t n) {
  if (c.subset == 0 || c.subset >= n) return std::nullopt;
  std::vector<std::size_t> first(c.subset);
  std::iota(first.begin(), first.end(), std::size_t{0});
  return first;
}

/// An IDX folder holds train-images-idx3-ubyte (gzipped or not).
bool idx_folder(const fs::path& folder) {
  return fs::exists(folder / "train-images-idx3-ubyte.gz") || fs::exists(folder / "train-images-idx3-ubyte");
}

/// Images: a CIFAR-format folder (or synthetic), or an IDX folder; split, statistics and the
/// prepared cache as the study makes them.
void load_images(const Config& c, const fs::path& out, Problem& p) {
  namespace data = distopt::data;
  data::ImageDataset source;
  std::string key;
  if (c.data != "synthetic" && idx_folder(c.data)) {
    const bool fashion = fs::path(c.data).filename().string().find("fashion") != std::string::npos;
    source = data::load_idx_dataset(c.data, fashion ? data::fashion_mnist_info() : data::mnist_info());
    key = message(source.info.name, "-", c.seed);
    p.label = c.data;
  } else {
    CifarSource s = load_cifar(c, out);
    source = data::to_dataset(s.data);
    key = s.key;
    p.label = c.data == "synthetic" ? s.key : s.folder.string();
  }
  const data::SplitOptions split{.validation_ratio = c.validation_ratio, .seed = c.seed};
  p.prepared_folder = out / "prepared" / message(key, "-v", number(c.validation_ratio));
  bool cached = false;
  p.prepared = data::load_or_prepare(p.prepared_folder, source, split, &cached);
  std::cerr << "prepared: " << (cached ? "loaded " : "wrote ") << p.prepared_folder.string() << "  (" << p.prepared->train.size()
            << " train, " << p.prepared->validation.size() << " validation, " << p.prepared->test.size() << " test)\n";
  p.kind = "images";
  if (const auto first = subset_of(c, p.prepared->train.size())) p.prepared->train = data::subset(p.prepared->train, *first);
  p.sets = distopt::train::RunData::from(*p.prepared);
  p.sample = p.prepared->train.sample_shape();
  p.targets = data::TargetInfo::class_ids(p.prepared->info.classes);
  p.n_train = p.prepared->train.size(), p.n_validation = p.prepared->validation.size(), p.n_test = p.prepared->test.size();
}

/// Arrays: x, y (and x_test, y_test if there) of an .npz; without a test split, a fifth of the
/// samples is held out as one (stratified where targets are classes), then the validation split.
/// Standardised per feature with the training split's statistics.
void load_arrays(const Config& c, Problem& p) {
  namespace data = distopt::data;
  const distopt::Archive archive = distopt::Archive::load(c.data);
  data::ArrayDataset all = data::arrays_from(archive, {}, c.data);
  if (archive.contains("x_test") || archive.contains("y_test")) {
    p.test = data::arrays_from(archive, {.features = "x_test", .targets = "y_test"}, c.data);
    distopt::require(p.test.sample_shape() == all.sample_shape() && p.test.target_info().are_classes() == all.target_info().are_classes(),
                     c.data, ": 'x_test' and 'y_test' hold samples of shape ", p.test.sample_shape().str(), " with ",
                     p.test.target_info().str(), "; 'x' and 'y' of shape ", all.sample_shape().str(), " with ", all.target_info().str());
  } else {
    const auto held = data::split_indices(all, {.validation_ratio = 0.2, .seed = c.seed ^ 0x7E57});
    p.test = all.subset(held.validation);
    all = all.subset(held.train);
  }
  const auto split = data::split_indices(all, {.validation_ratio = c.validation_ratio, .seed = c.seed});
  p.train = all.subset(split.train);
  p.validation = all.subset(split.validation);
  if (const auto first = subset_of(c, p.train.size())) p.train = p.train.subset(*first);
  distopt::require(p.train.size() > 0, "--validation-ratio ", c.validation_ratio, " leaves no training samples of ", all.size());
  p.features.emplace(data::feature_statistics(p.train));
  p.kind = "arrays";
  p.label = c.data;
  p.sample = p.train.sample_shape();
  p.targets = p.train.target_info();
  if (p.targets.are_classes()) p.targets.classes = std::max(p.targets.classes, p.test.target_info().classes);
  p.n_train = p.train.size(), p.n_validation = p.validation.size(), p.n_test = p.test.size();
  std::optional<data::Source> validation;
  if (p.n_validation > 0) validation.emplace(p.validation, *p.features);
  p.sets = distopt::train::RunData(data::Source(p.train, *p.features), validation, data::Source(p.test, *p.features));
  std::cerr << "arrays: " << c.data << "  (" << p.n_train << " train, " << p.n_validation << " validation, " << p.n_test
            << " test samples of shape " << p.sample.str() << ", " << p.targets.str() << ")\n";
}

std::unique_ptr<Problem> load_problem(const Config& c, const fs::path& out) {
  auto p = std::make_unique<Problem>();
  if (c.data.ends_with(".npz")) load_arrays(c, *p);
  else load_images(c, out, *p);
  return p;
}

/// The hidden widths of "mlp:256,128" (empty for "mlp").
std::vector<std::ptrdiff_t> mlp_widths(const std::string& model) {
  std::vector<std::ptrdiff_t> widths;
  if (model == "mlp") return widths;
  std::string rest = model.substr(4);
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string part = rest.substr(0, comma);
    std::size_t used = 0;
    long long w = 0;
    try {
      w = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    distopt::require(used == part.size() && w >= 1 && w <= 1'000'000, "--model ", model, ": '", part,
                     "' is not a width in [1, 1000000]; write mlp:256,128");
    widths.push_back(static_cast<std::ptrdiff_t>(w));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
  }
  return widths;
}

/// The terminal's progress lines without the run's description: the optimizer label every record
/// carries and the hyperparameters on the summary (they stay in metrics.jsonl, where a search or
/// plot.py needs them; the command line already printed them).
class TerseProgress final : public distopt::train::MetricSink {
 public:
  explicit TerseProgress(std::vector<std::string> hidden) : hidden_(std::move(hidden)) {}
  void write(const distopt::train::Record& record) override {
    distopt::train::Record shown = record;
    if (record.event == "summary")
      std::erase_if(shown.values, [&](const auto& v) { return std::find(hidden_.begin(), hidden_.end(), v.first) != hidden_.end(); });
    std::erase_if(shown.labels, [](const auto& l) { return l.first == "optimizer"; });
    progress_.write(shown);
  }

 private:
  std::vector<std::string> hidden_;
  distopt::train::ProgressSink progress_{std::cerr};
};

/// The command line that continues this run: the same arguments with --resume and without
/// --overwrite, quoted for a POSIX shell where needed.
std::string resume_command(const std::vector<std::string>& args) {
  std::string out;
  bool resume = false;
  for (const std::string& a : args) {
    if (a == "--overwrite") continue;
    resume = resume || a == "--resume";
    const bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") ==
                                         std::string::npos;
    std::string quoted = "'";
    for (const char ch : a) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    out += (out.empty() ? "" : " ") + (plain ? a : quoted + "'");
  }
  return resume ? out : out + " --resume";
}

/// --milestones as text, `separator` between the epochs.
std::string milestones_text(const Config& c, std::string_view separator) {
  std::string text;
  for (const std::size_t m : c.milestones) text += message(text.empty() ? "" : separator, m);
  return text;
}

/// What identifies a run beyond what train::run_training knows (run_config): every flag that
/// changes its result. Not --threads (the same bits for any count), nor the output flags.
distopt::train::RunConfig flag_config(const Config& c) {
  distopt::train::RunConfig config;
  config.set("data", c.data);
  if (c.data == "synthetic") config.set("synthetic_train", c.synthetic_train).set("synthetic_test", c.synthetic_test);
  config.set("model", c.model).set("scheduler", c.scheduler).set("warmup", c.warmup).set("step_size", c.step_size);
  config.set("milestones", milestones_text(c, ",")).set("gamma", c.gamma).set("power", c.power);
  config.set("validation_ratio", c.validation_ratio).set("subset", c.subset);
  return config;
}

template <class Model, class Optimizer>
int train(const Config& c, Model& model, Optimizer& optimizer, const Problem& problem, const std::vector<std::string>& command) {
  const double lr = *c.lr, weight_decay = *c.weight_decay;  // resolved to the optimizer's defaults in main
  namespace train = distopt::train;
  const fs::path out = c.out;
  const auto steps_per_epoch = static_cast<std::int64_t>((problem.n_train + c.batch_size - 1) / c.batch_size);
  const distopt::optim::Schedule schedule = make_schedule(c, lr, steps_per_epoch);

  const train::CheckpointFolder run(out, c.optimizer, c.batch_size, lr, weight_decay);
  // Held to the end: summary.csv and the plot are this run's too.
  const auto claim = train::claim_folder(run.path(), "run folder");
  const fs::path metrics_file = run.path() / "metrics.jsonl";
  // The study's crop and flip on images; on arrays only where the samples are images (and asked).
  const bool augment = !c.no_augmentation && (problem.kind == "images" || problem.sample.rank == 3);

  train::RunOptions options{
      .epochs = c.epochs,
      .batch_size = c.batch_size,
      .step = {.accumulation_steps = c.accumulation_steps, .log_every = c.log_every},
      .patience = c.patience,
      .seed = c.seed,
      .augmentation = augment ? std::optional(distopt::data::Augmentation{}) : std::nullopt,
      .description = {.optimizer = c.optimizer,
                      .lr = lr,
                      .weight_decay = weight_decay,
                      .values = {{"momentum", c.momentum}, {"warmup_epochs", static_cast<double>(c.warmup)}}},
      .out = out,
      .keep_last = c.keep_last,
      .resume = c.resume,
      .overwrite = c.overwrite,
      .config = flag_config(c),
  };
  std::vector<std::string> hyperparameter_names = {"lr", "weight_decay", "batch_size"};
  for (const auto& h : options.description.values) hyperparameter_names.push_back(h.first);
  train::Metrics metrics;
  metrics.add(std::make_shared<train::JsonLinesSink>(metrics_file, /*append=*/c.resume));
  metrics.add(std::make_shared<TerseProgress>(std::move(hyperparameter_names)));

  std::cerr << "training " << c.model << " (" << model.parameters().num_parameters() << " parameters) with " << c.optimizer
            << " lr " << number(lr) << " wd " << number(weight_decay) << ", batch " << c.batch_size << ", " << steps_per_epoch
            << " steps per epoch, " << c.scheduler << " schedule, " << distopt::parallel::max_threads() << " threads\n";
  const train::RunResult result = train::run_training(model, optimizer, schedule, problem.sets, options, metrics);

  // The signal that stopped this run, if one did.
  const int stopped_by = result.status == train::Status::interrupted ? train::stop_requested() : 0;
  if (stopped_by != 0) {
    std::fprintf(stderr, "train: stopped by signal %d after %llu epochs and %lld steps; the checkpoint in %s continues with:\n  %s\n",
                 stopped_by, static_cast<unsigned long long>(result.epochs_done), static_cast<long long>(result.steps), run.path().c_str(),
                 resume_command(command).c_str());
  }
  const std::vector<std::string> header = {
      "status", "epochs_done", "steps", "best_epoch", "best_validation_accuracy", "test_loss", "test_top1", "test_top5",
      "seconds", "message", "data", "n_train", "n_validation", "n_test", "model", "optimizer", "lr", "weight_decay",
      "momentum", "batch_size", "epochs", "scheduler", "warmup", "step_size", "milestones", "gamma", "power",
      "accumulation_steps", "patience", "validation_ratio", "augmentation", "seed", "threads", "subset"};
  const std::vector<std::string> row = {
      std::string(train::to_string(result.status)), message(result.epochs_done), message(result.steps), message(result.best_epoch),
      // No epoch finished (diverged in the first): no best, rather than the -inf the search starts from.
      result.best_epoch > 0 ? number(result.best_validation_accuracy) : "nan", number(result.test.loss), number(result.test.accuracy),
      number(result.test.top5), format_number(result.seconds, 4), result.message,
      problem.label, message(problem.n_train), message(problem.n_validation), message(problem.n_test), c.model, c.optimizer, number(lr),
      number(weight_decay), number(c.momentum), message(c.batch_size), message(c.epochs), c.scheduler, message(c.warmup),
      message(c.step_size), milestones_text(c, " "), number(c.gamma), number(c.power), message(c.accumulation_steps),
      message(c.patience), number(c.validation_ratio), augment ? "on" : "off", message(c.seed),
      message(distopt::parallel::max_threads()), message(c.subset)};
  const fs::path summary_file = run.path() / "summary.csv";
  distopt::io::write_csv(summary_file, header, {row});

  std::printf("status     %s after %llu epochs (%lld steps, %.1f s)%s%s\n", std::string(train::to_string(result.status)).c_str(),
              static_cast<unsigned long long>(result.epochs_done), static_cast<long long>(result.steps), result.seconds,
              result.message.empty() ? "" : ": ", result.message.c_str());
  if (train::finished(result.status) && !problem.targets.are_classes()) {
    std::printf("test       MSE %.6g%s\n", result.test.loss,
                result.best_epoch > 0 ? message("  (weights of epoch ", result.best_epoch, ", the lowest validation loss)").c_str() : "");
  } else if (train::finished(result.status)) {
    std::printf("test       loss %.4f  top-1 %.4f  top-5 %.4f", result.test.loss, result.test.accuracy, result.test.top5);
    if (result.best_epoch > 0)
      std::printf("  (weights of epoch %lld, best validation top-1 %.4f)", static_cast<long long>(result.best_epoch),
                  result.best_validation_accuracy);
    std::printf("\n");
  }
  std::printf("data       %s\n", problem.label.c_str());
  if (!problem.prepared_folder.empty()) std::printf("prepared   %s\n", problem.prepared_folder.c_str());
  std::printf("run        %s\n", run.path().c_str());
  std::string kept;
  for (const std::uint64_t e : run.epochs()) kept += message(kept.empty() ? "" : " ", e, ".npz");
  std::printf("checkpoints %s\n", kept.empty() ? "(none)" : kept.c_str());
  std::printf("metrics    %s\n", metrics_file.c_str());
  std::printf("summary    %s\n", summary_file.c_str());
  if (stopped_by != 0) return train::StopOnSignals::exit_status(stopped_by);

  if (c.plot) {
    const fs::path png = run.path() / "metrics.png";
    distopt::study::PlotScripts{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON}.require_ok(
        "plot.py", {metrics_file.string(), "-o", png.string(), "--title",
                    message(c.model, " ", c.optimizer, " bs ", c.batch_size, " lr ", number(lr), " wd ", number(weight_decay))});
    std::printf("plot       %s\n", png.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app{"distopt train: one training run of LeNet-5 or an MLP on CIFAR-100 (or its synthetic stand-in), an IDX folder "
               "(Fashion-MNIST, MNIST) or float arrays in an .npz, with checkpoints, resume, metrics (JSON Lines), a summary.csv "
               "and an optional plot"};
  app.footer(
      "Output: <out>/train/<optimizer>/<batch_size>/<lr>/<weight_decay>/ holds <epoch>.npz checkpoints, metrics.jsonl,\n"
      "summary.csv and metrics.png (--plot); <out>/data and <out>/prepared cache the data between runs.\n"
      "Exit status: 0 when the run completed, stopped early or DIVERGED (a non-finite loss is a result for a\n"
      "hyperparameter search, not an error: the output and summary.csv say status 'diverged'); 1 with a one-line\n"
      "message on any error; 2 or more for a bad command line.");
  app.get_formatter()->column_width(34);

  app.add_option("--data", c.data,
                 "'synthetic' (generated into <out>/data); a folder holding CIFAR-100's cifar-100-binary/ (the full 50000 + "
                 "10000 records); an IDX folder (train-images-idx3-ubyte[.gz], t10k-..., e.g. /usr/share/datasets/fashion-mnist); "
                 "or an .npz file with x [N, ...] float features and y [N] class ids or [N, width] real targets (x_test, y_test "
                 "optional: else a fifth is held out as the test set)")
      ->capture_default_str()
      ->check(CLI::IsMember({"synthetic"}) | CLI::ExistingDirectory | CLI::ExistingFile);
  app.add_option("--synthetic-train", c.synthetic_train, "training images to generate (synthetic data)")
      ->capture_default_str()->check(CLI::Range(100, 1'000'000));
  app.add_option("--synthetic-test", c.synthetic_test, "test images to generate (synthetic data)")
      ->capture_default_str()->check(CLI::Range(1, 1'000'000));
  app.add_option("--model", c.model,
                 "auto (LeNet-5 sized from the images: classic on 28 x 28, hsu otherwise; mlp:128 on arrays), lenet5 (Hsu et "
                 "al. 2020: 64/64 channels, 384/192 units), lenet5-classic (6/16, 120/84), or mlp:W1,W2,... (linear layers of "
                 "those widths with ReLU, then one to the outputs; samples flattened first)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& m) -> std::string {
            if (m == "auto" || m == "lenet5" || m == "lenet5-classic" || m == "mlp" || m.starts_with("mlp:")) return {};
            return message("'", m, "' is not auto, lenet5, lenet5-classic or mlp:W1,W2,...");
          },
          "MODEL"));
  app.add_option("--optimizer", c.optimizer, "sgdm, adamw, lars or lamb; also names the run folder")
      ->capture_default_str()->check(CLI::IsMember({"sgdm", "adamw", "lars", "lamb"}));
  app.add_option("--lr", c.lr, "peak learning rate [default: 0.01 sgdm, 0.1 lars, 0.001 adamw and lamb]")
      ->check(distopt::cli::number_in(1e-12, 1e3));
  app.add_option("--weight-decay", c.weight_decay, "weight decay [default: 4e-4 sgdm and lars, 0.01 adamw and lamb]")
      ->check(distopt::cli::number_in(0, 10));
  app.add_option("--momentum", c.momentum, "momentum of sgdm and lars; Adam's beta1 for adamw and lamb")
      ->capture_default_str()->check(distopt::cli::number_in(0, 1, true));
  app.add_option("--batch-size", c.batch_size, "images per optimizer step")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--epochs", c.epochs, "epochs to train in all (with --resume: up to this many)")
      ->capture_default_str()->check(CLI::Range(1, 100'000));
  app.add_option("--scheduler", c.scheduler,
                 "learning-rate schedule over the epochs after warmup: constant, cosine (to 0), step (times --gamma every "
                 "--step-size epochs), multistep (times --gamma at each --milestones epoch), polynomial (to 0, --power)")
      ->capture_default_str()->check(CLI::IsMember({"constant", "cosine", "step", "multistep", "polynomial"}));
  app.add_option("--warmup", c.warmup, "epochs of linear warmup from lr/10 before the schedule (0: none)")
      ->capture_default_str()->check(CLI::Range(0, 100'000));
  app.add_option("--step-size", c.step_size, "step: epochs between decays (0: a third of --epochs)")
      ->capture_default_str()->check(CLI::Range(0, 100'000));
  app.add_option("--milestones", c.milestones, "multistep: epochs at which the lr is multiplied by --gamma [default: "
                                               "half and three quarters of --epochs]")
      ->delimiter(',')->check(CLI::Range(1, 100'000));
  app.add_option("--gamma", c.gamma, "step, multistep: decay factor")->capture_default_str()->check(distopt::cli::number_in(0, 1));
  app.add_option("--power", c.power, "polynomial: exponent")->capture_default_str()->check(distopt::cli::number_in(0, 100));
  app.add_option("--accumulation-steps", c.accumulation_steps,
                 "micro-batches per step, gradients accumulated (0: automatic, batches above 4096 in pieces of <= 4096)")
      ->capture_default_str()->check(CLI::Range(0, 1 << 20));
  app.add_option("--patience", c.patience, "early stopping: stop after this many epochs without a better validation accuracy (0: never)")
      ->capture_default_str()->check(CLI::Range(0, 100'000));
  app.add_option("--validation-ratio", c.validation_ratio, "share of the training set held out for validation (0: none)")
      ->capture_default_str()->check(distopt::cli::number_in(0, 0.9));
  app.add_option("--subset", c.subset, "train on the first this many samples of the training split (0: all): quick trials")
      ->capture_default_str()->check(CLI::Range(0, 1'000'000'000));
  app.add_flag("--no-augmentation", c.no_augmentation, "train without random crops and flips (images; arrays are never augmented "
                                                      "unless their samples are [C, H, W])");
  app.add_option("--seed", c.seed, "seed of the synthetic data, the split, the initial weights, the order and augmentation")
      ->capture_default_str();
  app.add_option("--threads", c.threads, "OpenMP threads (0: OMP_NUM_THREADS or all cores)")
      ->capture_default_str()->check(CLI::Range(0, 1024));
  app.add_option("--out", c.out, "output root")->capture_default_str();
  app.add_flag("--resume", c.resume, "continue from the run folder's latest checkpoint (same flags; a larger --epochs trains on, "
                                     "but cosine and polynomial decays are then recomputed for the new length); "
                                     "metrics.jsonl is appended to");
  app.add_flag("--overwrite", c.overwrite, "without --resume: delete an earlier run's checkpoints in the run folder first");
  app.add_option("--keep-last", c.keep_last, "checkpoints kept besides the best epoch's")
      ->capture_default_str()->check(CLI::Range(1, 1'000'000));
  app.add_option("--log-every", c.log_every, "a 'step' record (loss, accuracy, lr, images/s) every this many steps (0: none)")
      ->capture_default_str()->check(CLI::Range(0, 1'000'000));
  app.add_flag("--plot", c.plot, "after the run, draw metrics.png in the run folder (" DISTOPT_PYTHON " tools/plot.py)");
  CLI11_PARSE(app, argc, argv);
  const std::vector<std::string> command(argv, argv + argc);
  // From here on SIGINT, SIGTERM and SIGHUP stop the run after its current step, with a checkpoint.
  const distopt::train::StopOnSignals signals;

  try {
    if (!c.lr) c.lr = default_lr(c.optimizer);
    if (!c.weight_decay) c.weight_decay = default_weight_decay(c.optimizer);
    distopt::require(!(c.resume && c.overwrite), "--resume and --overwrite exclude each other");
    std::optional<distopt::parallel::ThreadCount> threads;
    if (c.threads > 0) threads.emplace(c.threads);

    // What can be checked without data is checked first: generating synthetic data takes minutes.
    if (c.data == "synthetic")
      distopt::require(train_split_size(c.synthetic_train, c.validation_ratio) > 0, "--validation-ratio ", c.validation_ratio,
                       " leaves no training images of ", c.synthetic_train);
    if (c.model.starts_with("mlp")) (void)mlp_widths(c.model);
    // A run folder another process holds is refused before minutes of data preparation; one that
    // is not there yet is claimed (created) by run_training, once the run is known to be valid.
    std::shared_ptr<const distopt::io::FileLock> claim;
    if (const auto folder = distopt::train::CheckpointFolder(c.out, c.optimizer, c.batch_size, *c.lr, *c.weight_decay).path();
        fs::is_directory(folder))
      claim = distopt::train::claim_folder(folder, "run folder");
    const std::unique_ptr<Problem> problem = load_problem(c, c.out);

    const auto with_optimizer = [&](auto& model) {
      namespace optim = distopt::optim;
      const auto& params = model.parameters();
      if (c.optimizer == "sgdm") {
        optim::Sgdm optimizer(params, {.lr = *c.lr, .momentum = c.momentum, .weight_decay = *c.weight_decay});
        return train(c, model, optimizer, *problem, command);
      }
      if (c.optimizer == "adamw") {
        optim::AdamW optimizer(params, {.lr = *c.lr, .beta1 = c.momentum, .weight_decay = *c.weight_decay});
        return train(c, model, optimizer, *problem, command);
      }
      if (c.optimizer == "lars") {
        optim::Lars optimizer(params, {.lr = *c.lr, .momentum = c.momentum, .weight_decay = *c.weight_decay});
        return train(c, model, optimizer, *problem, command);
      }
      optim::Lamb optimizer(params, {.lr = *c.lr, .beta1 = c.momentum, .weight_decay = *c.weight_decay});
      return train(c, model, optimizer, *problem, command);
    };

    const std::string model = c.model == "auto" ? (problem->kind == "images" ? "lenet5-auto" : "mlp:128") : c.model;
    if (model.starts_with("lenet5")) {
      distopt::require(problem->kind == "images", "--model ", c.model, ": LeNet-5 reads images, '", c.data, "' holds samples of shape ",
                       problem->sample.str(), "; use --model mlp:W1,W2,...");
      distopt::nn::LeNet5Options options = distopt::train::model_options(problem->prepared->info, c.seed);
      if (model == "lenet5") options.preset = distopt::nn::Preset::hsu;
      if (model == "lenet5-classic") options.preset = distopt::nn::Preset::classic;
      distopt::nn::LeNet5<float> net(options);
      return with_optimizer(net);
    }
    namespace layers = distopt::nn::layers;
    std::vector<distopt::nn::LayerSpec> specs;
    if (problem->sample.rank > 1) specs.push_back(layers::flatten());
    for (const std::ptrdiff_t width : mlp_widths(model)) {
      specs.push_back(layers::linear(width));
      specs.push_back(layers::relu());
    }
    const bool classes = problem->targets.are_classes();
    specs.push_back(layers::linear(static_cast<std::ptrdiff_t>(classes ? problem->targets.classes : problem->targets.width)));
    distopt::nn::Sequential<float> net(problem->sample, specs,
                                       {.loss = classes ? distopt::nn::Loss::cross_entropy() : distopt::nn::Loss::mean_squared_error(),
                                        .seed = c.seed});
    return with_optimizer(net);
  } catch (const distopt::train::FolderRefused& e) {
    std::cerr << "train: error: " << e.what() << "\ntrain: --resume continues the run in that folder, --overwrite replaces "
              << "it; another --out (or another --optimizer, --batch-size, --lr, --weight-decay) is another folder\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "train: error: " << e.what() << '\n';
    return 1;
  }
}
