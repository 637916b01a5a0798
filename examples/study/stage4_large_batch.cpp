// Stage 4 of the study: large-batch training. LARS and LAMB get a learning-rate search at one
// large batch; then the four optimizers (LARS, LAMB with their best lr; SGDM and AdamW with lrs
// scaled from their batch-64 values) train at every batch size of the scale under one schedule,
// with gradient accumulation above the micro-batch cap, and the test accuracies are tabulated
// and plotted against the batch size.
//
// Choices the study leaves open, made here:
//  - Search batch: the largest of the scale's batch sizes that is <= 4096 (the largest one that
//    needs no accumulation at full scale; LARS and LAMB are large-batch methods, so their lr is
//    searched where they are meant to work). --search-batch overrides it.
//  - Schedule, the SAME for every run of the stage (search and sweep, all four optimizers):
//    linear warmup over 10% of the steps from a tenth of the peak lr (Goyal et al. 2017), then
//    polynomial decay to 0 with power 2 over the remaining steps (You, Gitman, Ginsburg 2017, the
//    LARS paper's "poly(2)"). LAMB's paper decays polynomially too; keeping its power at 2 as well
//    makes the comparison one of optimizers, not of schedules, and its searched lr is the one the
//    sweep uses under exactly the schedule it was searched with.
//  - LARS and LAMB keep their searched lr at every batch size of the sweep (the layer-wise trust
//    ratio is what is meant to carry them across batch sizes). SGDM scales 0.01 at batch 64
//    linearly (Goyal et al. 2017), AdamW 1e-3 at batch 64 with the square root (Hoffer et al.
//    2017; Adam's update is normalised, so a linear rule overshoots).
//  - Every run starts from the same initial weights and sees the same data order (config.seed),
//    so the differences are the optimizer's and the batch size's.
// Resumable: each run stores its result in <results>/stage4_large_batch/runs/<config key>/<run>/
// summary.csv and is not redone; a run cut mid-way resumes from its last checkpoint under
// <work>/stage4_large_batch/<config key>/ (deleted once the run's result is stored, unless
// --keep-checkpoints). --force starts every run again.
#include "study_cli.hpp"

#include <distopt/core/error.hpp>
#include <distopt/data/split.hpp>
#include <distopt/nn/lenet5.hpp>
#include <distopt/optim/adamw.hpp>
#include <distopt/optim/lamb.hpp>
#include <distopt/optim/lars.hpp>
#include <distopt/optim/schedule.hpp>
#include <distopt/optim/sgdm.hpp>
#include <distopt/study/plots.hpp>
#include <distopt/study/runs.hpp>
#include <distopt/study/sinks.hpp>
#include <distopt/study/study.hpp>
#include <distopt/train/metrics.hpp>
#include <distopt/train/run.hpp>
#include <distopt/train/search.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace optim = distopt::optim;
namespace train = distopt::train;
namespace study = distopt::study;
using distopt::message;
using train::format_number;

constexpr const char* stage = "stage4_large_batch";

// The study's fixed hyperparameters of this stage.
constexpr double lars_weight_decay = 1e-3;
constexpr double lars_momentum = 0.9;
constexpr double lamb_weight_decay = 4e-4;
constexpr double lamb_beta1 = 0.9;
constexpr double sgdm_base_lr = 0.01;  // Hsu et al. 2020, Table 1, at batch 64
constexpr double sgdm_momentum = 0.9;
constexpr double sgdm_weight_decay = 4e-4;
constexpr double adamw_base_lr = 1e-3;
constexpr double adamw_beta1 = 0.9;
constexpr double adamw_weight_decay = 0.01;
constexpr std::int64_t base_batch = 64;
// The schedule every run shares.
constexpr double warmup_fraction = 0.1;
constexpr double warmup_start_factor = 0.1;  // a first step at lr 0 would be wasted
constexpr double decay_power = 2.0;

const std::vector<std::string> sweep_optimizers = {"lars", "lamb", "sgdm", "adamw"};

std::string display_name(const std::string& optimizer) {
  if (optimizer == "lars") return "LARS";
  if (optimizer == "lamb") return "LAMB";
  if (optimizer == "sgdm") return "SGDM";
  return "AdamW";
}

/// The step counts of a run: micro-batches per step, steps per epoch and in all, warmup steps.
struct Steps {
  std::size_t accumulation = 1;
  std::size_t per_epoch = 0;
  std::size_t total = 0;
  std::size_t warmup = 0;
};

Steps steps_of(std::size_t batch, std::size_t epochs, std::size_t n_train, std::size_t micro_batch_cap) {
  Steps s;
  s.accumulation = batch > micro_batch_cap ? (batch + micro_batch_cap - 1) / micro_batch_cap : 1;
  s.per_epoch = (n_train + batch - 1) / batch;  // the loader keeps the last, partial batch
  s.total = s.per_epoch * epochs;
  s.warmup = std::max<std::size_t>(1, static_cast<std::size_t>(std::llround(warmup_fraction * static_cast<double>(s.total))));
  return s;
}

/// Linear warmup, then polynomial decay (power 2) to 0 at the last step.
optim::Schedule schedule_of(double lr, const Steps& s) {
  const auto decay_steps = static_cast<std::int64_t>(std::max<std::size_t>(1, s.total > s.warmup ? s.total - s.warmup : 1));
  return optim::warmup(static_cast<std::int64_t>(s.warmup), warmup_start_factor,
                       optim::Polynomial{.lr = lr, .total_steps = decay_steps, .power = decay_power});
}

/// One training run of the stage.
struct RunSpec {
  std::string phase{};  ///< "search" or "sweep"
  std::string optimizer{};
  std::size_t batch_size = 0;
  double lr = 0;
  double weight_decay = 0;
  double momentum = 0;  ///< momentum of SGDM and LARS, beta1 of AdamW and LAMB
  std::size_t epochs = 0;

  /// Unique among the stage's runs, and a folder name.
  [[nodiscard]] std::string id() const {
    return message(phase, "_", optimizer, "_b", batch_size, "_lr", format_number(lr, 10), "_wd", format_number(weight_decay, 10),
                   "_e", epochs);
  }
};

/// What a run ended with (stored in its folder, so a re-run of the stage does not redo it).
struct Outcome {
  RunSpec spec{};
  Steps steps{};
  std::string status{};
  std::uint64_t epochs_done = 0;
  std::int64_t best_epoch = -1;
  double validation_accuracy = std::nan("");  ///< the best over the run
  double test_accuracy = std::nan("");
  double test_top5 = std::nan("");
  double seconds = 0;
  std::string message{};
  bool reused = false;

  [[nodiscard]] bool ok() const { return status == "completed" || status == "early_stopped"; }
};

std::string number(double v) { return format_number(v, 10); }

const std::vector<std::string> outcome_header = {
    "run", "phase", "optimizer", "batch_size", "lr", "weight_decay", "momentum", "epochs", "accumulation_steps",
    "steps_per_epoch", "warmup_steps", "total_steps", "status", "epochs_done", "best_epoch", "best_validation_accuracy",
    "test_accuracy", "test_top5", "seconds", "message"};

std::vector<std::string> outcome_row(const Outcome& o) {
  return {o.spec.id(), o.spec.phase, o.spec.optimizer, message(o.spec.batch_size), number(o.spec.lr),
          number(o.spec.weight_decay), number(o.spec.momentum), message(o.spec.epochs), message(o.steps.accumulation),
          message(o.steps.per_epoch), message(o.steps.warmup), message(o.steps.total), o.status, message(o.epochs_done),
          message(o.best_epoch), number(o.validation_accuracy), number(o.test_accuracy), number(o.test_top5),
          format_number(o.seconds, 6), o.message};
}

/// The stored outcome of `spec` in `file`, if there is one that matches it; a damaged or foreign
/// file is reported and ignored (the run is redone).
std::optional<Outcome> load_outcome(const fs::path& file, const RunSpec& spec) {
  std::ifstream in(file);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  const auto rows = study::parse_csv(text.str());
  try {
    distopt::require(rows.size() == 2 && rows[0] == outcome_header && rows[1].size() == outcome_header.size(),
                     "not a run summary of this program");
    const auto& r = rows[1];
    distopt::require(r[0] == spec.id(), "it is the summary of run '", r[0], "'");
    Outcome o;
    o.spec = spec;
    o.steps = {.accumulation = std::stoull(r[8]), .per_epoch = std::stoull(r[9]), .total = std::stoull(r[11]), .warmup = std::stoull(r[10])};
    o.status = r[12];
    o.epochs_done = std::stoull(r[13]);
    o.best_epoch = std::stoll(r[14]);
    o.validation_accuracy = std::stod(r[15]);
    o.test_accuracy = std::stod(r[16]);
    o.test_top5 = std::stod(r[17]);
    o.seconds = std::stod(r[18]);
    o.message = r[19];
    o.reused = true;
    return o;
  } catch (const std::exception& e) {
    std::cerr << "  " << file.string() << ": ignored (" << e.what() << "); the run is done again\n";
    return std::nullopt;
  }
}

/// One short line per epoch on stderr, so a long run shows it is alive.
class EpochLine final : public train::MetricSink {
 public:
  explicit EpochLine(std::size_t epochs) : epochs_(epochs) {}
  void write(const train::Record& r) override {
    if (r.event != "epoch") return;
    std::fprintf(stderr, "      epoch %llu/%zu  loss %.4f  validation %s%%  %.1f s\n", static_cast<unsigned long long>(r.epoch),
                 epochs_, r.get("loss"), study::percent(r.get("validation_accuracy")).c_str(), r.get("seconds"));
  }

 private:
  std::size_t epochs_;
};

/// Where a configuration's runs are filed: results and checkpoints of quick and full mode, or of
/// two data sets, never mix.
std::string config_key(const study::Config& c, std::size_t max_train) {
  const std::string limit = max_train > 0 ? message("-maxtrain", max_train) : std::string();
  if (c.synthetic())
    return message(c.mode(), "-synthetic-", c.seed, "-", c.scale.synthetic_train, "-", c.scale.synthetic_test, limit);
  return message(c.mode(), "-cifar100-", c.seed, c.scale.subset_train > 0 ? message("-subset", c.scale.subset_train) : std::string(),
                 limit);
}

/// Everything the runs of the stage share.
class Stage {
 public:
  Stage(const study_cli::Flags& flags, std::size_t max_train, bool keep_checkpoints)
      : config_(flags.config),
        fresh_(flags.force),
        keep_checkpoints_(keep_checkpoints),
        results_(config_.results / stage),
        runs_(results_ / "runs" / config_key(config_, max_train)),
        checkpoints_(config_.work / stage / config_key(config_, max_train)) {
    prepared_ = study::prepare_data(config_);
    if (max_train > 0 && max_train < prepared_.train.size()) {
      std::vector<std::size_t> first(max_train);
      std::iota(first.begin(), first.end(), std::size_t{0});
      prepared_.train = distopt::data::subset(prepared_.train, first);
    }
    sets_ = train::RunData::from(prepared_);
    fs::create_directories(results_);
    // A fresh start (--force) replaces the metrics of earlier attempts; otherwise a resumed
    // stage appends (plot.py keeps the last record of an epoch).
    metrics_file_ = std::make_shared<train::JsonLinesSink>(results_ / "metrics.jsonl", /*append=*/!fresh_);
  }

  [[nodiscard]] const study::Config& config() const { return config_; }
  [[nodiscard]] const fs::path& results() const { return results_; }
  [[nodiscard]] std::size_t n_train() const { return prepared_.train.size(); }
  [[nodiscard]] std::size_t n_validation() const { return prepared_.validation.size(); }
  [[nodiscard]] std::size_t n_test() const { return prepared_.test.size(); }
  [[nodiscard]] std::shared_ptr<train::MetricSink> metrics_file() const { return metrics_file_; }

  [[nodiscard]] Steps steps(const RunSpec& spec) const {
    return steps_of(spec.batch_size, spec.epochs, n_train(), config_.scale.micro_batch_cap);
  }

  /// The run's outcome: the stored one, or trained now (resuming a cut run) and stored.
  Outcome run(const RunSpec& spec) {
    const fs::path folder = runs_ / spec.id();
    const fs::path result_file = folder / "summary.csv";
    if (!fresh_)
      if (auto stored = load_outcome(result_file, spec)) {
        print(*stored);
        return *stored;
      }
    std::error_code ec;
    fs::remove(result_file, ec);

    const Steps s = steps(spec);
    std::fprintf(stderr, "    %s: %zu steps per epoch, %zu micro-batch(es) per step, %zu warmup steps of %zu\n",
                 spec.id().c_str(), s.per_epoch, s.accumulation, s.warmup, s.total);
    distopt::nn::LeNet5<float> model({.seed = config_.seed});
    const auto& params = model.parameters();
    train::RunResult result;
    const auto go = [&](auto& optimizer) { result = train_one(spec, s, model, optimizer); };
    if (spec.optimizer == "lars") {
      optim::Lars optimizer(params, {.lr = spec.lr, .momentum = spec.momentum, .weight_decay = spec.weight_decay});
      go(optimizer);
    } else if (spec.optimizer == "lamb") {
      optim::Lamb optimizer(params, {.lr = spec.lr, .beta1 = spec.momentum, .weight_decay = spec.weight_decay});
      go(optimizer);
    } else if (spec.optimizer == "sgdm") {
      optim::Sgdm optimizer(params, {.lr = spec.lr, .momentum = spec.momentum, .weight_decay = spec.weight_decay});
      go(optimizer);
    } else {
      distopt::require(spec.optimizer == "adamw", "unknown optimizer '", spec.optimizer, "'");
      optim::AdamW optimizer(params, {.lr = spec.lr, .beta1 = spec.momentum, .weight_decay = spec.weight_decay});
      go(optimizer);
    }

    Outcome o{.spec = spec,
              .steps = s,
              .status = result.status,
              .epochs_done = result.epochs_done,
              .best_epoch = result.best_epoch,
              .validation_accuracy = std::isfinite(result.best_validation_accuracy) ? result.best_validation_accuracy : std::nan(""),
              .test_accuracy = result.test.accuracy,
              .test_top5 = result.test.top5,
              .seconds = result.seconds,
              .message = result.message};
    train::write_csv(result_file, outcome_header, {outcome_row(o)});
    if (!keep_checkpoints_ && !result.checkpoints.empty()) fs::remove_all(result.checkpoints, ec);
    print(o);
    return o;
  }

 private:
  template <class Model, class Optimizer>
  train::RunResult train_one(const RunSpec& spec, const Steps& s, Model& model, Optimizer& optimizer) {
    const train::RunOptions options{
        .epochs = spec.epochs,
        .batch_size = spec.batch_size,
        .step = {.micro_batch_cap = config_.scale.micro_batch_cap, .log_every = 0},
        .seed = config_.seed,
        .optimizer_name = spec.optimizer,
        .hyperparameters = {{"base_lr", spec.lr},
                            {"weight_decay", spec.weight_decay},
                            {"momentum", spec.momentum},
                            {"batch_size", static_cast<double>(spec.batch_size)},
                            {"accumulation_steps", static_cast<double>(s.accumulation)},
                            {"warmup_steps", static_cast<double>(s.warmup)},
                            {"total_steps", static_cast<double>(s.total)}},
        .out = checkpoints_ / spec.phase,
        .keep_last = 1,
        .keep_best = false,  // the best weights travel inside every checkpoint anyway
        .resume = !fresh_,
        .overwrite = true,
    };
    train::Metrics metrics;
    metrics.add(std::make_shared<study::RunLabel>(spec.id(), metrics_file_));
    metrics.add(std::make_shared<EpochLine>(spec.epochs));
    return train::run_training(model, optimizer, schedule_of(spec.lr, s), sets_, options, metrics);
  }

  static void print(const Outcome& o) {
    std::printf("  %-6s %-5s batch %5zu  lr %-9s %-9s validation %5s%%  test %5s%%  %6.1f s%s\n", o.spec.phase.c_str(),
                o.spec.optimizer.c_str(), o.spec.batch_size, format_number(o.spec.lr, 4).c_str(), o.status.c_str(),
                study::percent(o.validation_accuracy).c_str(), study::percent(o.test_accuracy).c_str(), o.seconds,
                o.reused ? "  (stored result)" : "");
    std::fflush(stdout);
  }

  study::Config config_;
  bool fresh_;
  bool keep_checkpoints_;
  fs::path results_, runs_, checkpoints_;
  distopt::data::PreparedData prepared_;
  train::RunData sets_;
  std::shared_ptr<train::MetricSink> metrics_file_;
};

/// The lr search of one optimizer at the search batch: its outcomes (trial order), the best lr
/// and, when no trial completed, why the fallback was taken.
struct SearchResult {
  std::string optimizer{};
  std::vector<Outcome> outcomes{};
  double best_lr = std::nan("");
  std::string note{};
};

SearchResult search(Stage& st, const std::string& optimizer, const std::vector<double>& lrs, double weight_decay,
                    double momentum, std::size_t batch) {
  SearchResult out{.optimizer = optimizer};
  std::printf("lr search: %s, batch %zu, weight decay %s, %zu epochs per trial, lrs", display_name(optimizer).c_str(), batch,
              format_number(weight_decay).c_str(), st.config().scale.epochs_search);
  for (const double lr : lrs) std::printf(" %s", format_number(lr).c_str());
  std::printf("\n");
  std::fflush(stdout);

  const std::vector<train::Trial> trials = train::grid_trials({train::Dimension::grid("lr", lrs)}, st.config().seed);
  std::vector<Outcome> outcomes(trials.size());
  train::Metrics trial_metrics;
  trial_metrics.add(std::make_shared<study::RunLabel>(message("search_", optimizer), st.metrics_file()));
  const auto results = train::run_search(
      trials,
      [&](const train::Trial& trial) {
        const RunSpec spec{.phase = "search", .optimizer = optimizer, .batch_size = batch, .lr = trial.get("lr"),
                           .weight_decay = weight_decay, .momentum = momentum, .epochs = st.config().scale.epochs_search};
        const Outcome o = st.run(spec);
        outcomes[trial.index] = o;
        return train::TrialResult{.status = o.status, .validation_accuracy = o.validation_accuracy,
                                  .test_accuracy = o.test_accuracy, .epochs = o.epochs_done, .seconds = o.seconds,
                                  .message = o.message};
      },
      {.parallel_trials = 1, .metrics = trial_metrics});
  train::write_search_table(st.results() / message("search_", optimizer), train::rank(results));
  out.outcomes = std::move(outcomes);
  try {
    out.best_lr = train::best(results).trial.get("lr");
  } catch (const std::runtime_error& e) {
    // The sweep still needs an lr: the smallest of the grid is the least likely to diverge.
    out.best_lr = *std::min_element(lrs.begin(), lrs.end());
    out.note = message("no trial completed (", e.what(), "); the sweep uses the smallest lr, ", format_number(out.best_lr));
  }
  std::printf("  best lr of %s: %s%s%s\n", display_name(optimizer).c_str(), format_number(out.best_lr).c_str(),
              out.note.empty() ? "" : "  -- ", out.note.c_str());
  return out;
}

/// The accuracy cell of a table: a percentage, or the status of a run that has none.
std::string accuracy_cell(const Outcome& o) {
  if (o.ok()) return study::percent(o.test_accuracy);
  return message("**", o.status, "**");
}

void body(const study_cli::Flags& flags, std::size_t search_batch_flag, std::size_t max_train, bool keep_checkpoints,
          bool plot) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  Stage st(flags, max_train, keep_checkpoints);
  const study::Scale& scale = st.config().scale;
  distopt::require(!scale.batch_sizes.empty(), "Scale.batch_sizes is empty");

  std::size_t search_batch = search_batch_flag;
  if (search_batch == 0) {
    search_batch = scale.batch_sizes.front();
    for (const std::size_t b : scale.batch_sizes)
      if (b <= 4096) search_batch = std::max(search_batch, b);
  }
  std::printf("data: %zu train, %zu validation, %zu test images; micro-batch cap %zu; search batch %zu\n", st.n_train(),
              st.n_validation(), st.n_test(), scale.micro_batch_cap, search_batch);

  // 1. The lr searches.
  std::vector<SearchResult> searches;
  searches.push_back(search(st, "lars", scale.lars_lrs, lars_weight_decay, lars_momentum, search_batch));
  searches.push_back(search(st, "lamb", scale.lamb_lrs, lamb_weight_decay, lamb_beta1, search_batch));

  // 2. The batch-size sweep, four optimizers under the same schedule.
  std::printf("batch-size sweep: %zu epochs per run, batch sizes", scale.epochs_final);
  for (const std::size_t b : scale.batch_sizes) std::printf(" %zu", b);
  std::printf("\n");
  std::vector<std::vector<Outcome>> sweep;  // [batch][optimizer]
  for (const std::size_t batch : scale.batch_sizes) {
    std::vector<Outcome> row;
    for (const std::string& opt : sweep_optimizers) {
      RunSpec spec{.phase = "sweep", .optimizer = opt, .batch_size = batch, .epochs = scale.epochs_final};
      const auto b = static_cast<std::int64_t>(batch);
      if (opt == "lars") spec.lr = searches[0].best_lr, spec.weight_decay = lars_weight_decay, spec.momentum = lars_momentum;
      if (opt == "lamb") spec.lr = searches[1].best_lr, spec.weight_decay = lamb_weight_decay, spec.momentum = lamb_beta1;
      if (opt == "sgdm")
        spec.lr = optim::linear_scaling(sgdm_base_lr, base_batch, b), spec.weight_decay = sgdm_weight_decay,
        spec.momentum = sgdm_momentum;
      if (opt == "adamw")
        spec.lr = optim::sqrt_scaling(adamw_base_lr, base_batch, b), spec.weight_decay = adamw_weight_decay,
        spec.momentum = adamw_beta1;
      row.push_back(st.run(spec));
    }
    sweep.push_back(std::move(row));
  }

  // 3. Tables.
  std::vector<Outcome> all;
  for (const auto& s : searches) all.insert(all.end(), s.outcomes.begin(), s.outcomes.end());
  for (const auto& row : sweep) all.insert(all.end(), row.begin(), row.end());
  {
    std::vector<std::vector<std::string>> rows;
    for (const Outcome& o : all) rows.push_back(outcome_row(o));
    train::write_csv(st.results() / "summary.csv", outcome_header, rows);
  }
  {
    std::vector<std::vector<std::string>> rows;
    for (const auto& row : sweep)
      for (const Outcome& o : row)
        rows.push_back({message(o.spec.batch_size), o.spec.optimizer, number(o.spec.lr), message(o.steps.accumulation), o.status,
                        number(o.validation_accuracy), number(o.test_accuracy), format_number(o.seconds, 6)});
    train::write_csv(st.results() / "sweep.csv",
                     {"batch_size", "optimizer", "lr", "accumulation_steps", "status", "validation_accuracy", "test_accuracy", "seconds"},
                     rows);
  }

  std::ostringstream md;
  md << "## Stage 4: Large-batch training (LARS and LAMB against SGDM and AdamW)\n\n";
  md << "Data: " << st.config().data_label() << ", mode " << st.config().mode() << "\n\n";
  md << "Schedule of every run: linear warmup over " << study::percent(warmup_fraction) << "%" " of the steps from "
     << format_number(warmup_start_factor) << " x the peak lr, then polynomial decay (power " << format_number(decay_power)
     << ") to 0. Gradient accumulation above " << scale.micro_batch_cap << " images per micro-batch. " << st.n_train()
     << " training images" << (max_train > 0 ? message(" (limited by --max-train ", max_train, ")") : std::string()) << ".\n\n";

  md << "### Learning-rate search at batch " << search_batch << " (" << scale.epochs_search << " epochs per trial)\n\n";
  for (const SearchResult& s : searches) {
    const Outcome& first = s.outcomes.front();
    md << display_name(s.optimizer) << " (weight decay " << format_number(first.spec.weight_decay)
       << (s.optimizer == "lars" ? ", momentum " : ", beta1 ") << format_number(first.spec.momentum) << "):\n\n";
    std::vector<std::vector<std::string>> rows;
    for (const Outcome& o : s.outcomes)
      rows.push_back({format_number(o.spec.lr), o.ok() ? o.status : message("**", o.status, "**"),
                      study::percent(o.validation_accuracy), study::percent(o.test_accuracy), format_number(o.seconds, 3),
                      o.spec.lr == s.best_lr ? "best" : ""});
    md << study::markdown_table({"lr", "status", "validation accuracy %", "test accuracy %", "seconds", ""}, rows);
    if (!s.note.empty()) md << "\n" << s.note << "\n";
    md << "\n";
  }

  std::vector<std::string> header = {"batch size", "accumulation steps", "steps per epoch"};
  for (const std::string& opt : sweep_optimizers) header.push_back(display_name(opt) + " test %");
  std::vector<std::vector<std::string>> table_rows, lr_rows;
  for (const auto& row : sweep) {
    std::vector<std::string> cells = {message(row.front().spec.batch_size), message(row.front().steps.accumulation),
                                      message(row.front().steps.per_epoch)};
    std::vector<std::string> lrs = {message(row.front().spec.batch_size)};
    for (const Outcome& o : row) {
      cells.push_back(accuracy_cell(o));
      lrs.push_back(format_number(o.spec.lr, 4));
    }
    table_rows.push_back(std::move(cells));
    lr_rows.push_back(std::move(lrs));
  }
  const std::string sweep_table = study::markdown_table(header, table_rows);
  std::vector<std::string> lr_header = {"batch size"};
  for (const std::string& opt : sweep_optimizers) lr_header.push_back(display_name(opt) + " lr");

  md << "### Batch-size sweep (" << scale.epochs_final << " epochs per run; test accuracy of the best-validation weights)\n\n";
  md << sweep_table << "\n";
  md << "Learning rates: LARS and LAMB their searched lr at every batch size; SGDM " << format_number(sgdm_base_lr) << " x batch / "
     << base_batch << " (linear scaling, momentum " << format_number(sgdm_momentum) << ", weight decay "
     << format_number(sgdm_weight_decay) << "); AdamW " << format_number(adamw_base_lr) << " x sqrt(batch / " << base_batch
     << ") (square-root scaling, weight decay " << format_number(adamw_weight_decay) << ").\n\n";
  md << study::markdown_table(lr_header, lr_rows) << "\n";

  // Observations, from the numbers.
  std::ostringstream notes;
  {
    const auto& small = sweep.front();
    const auto& large = sweep.back();
    std::vector<std::string> changes;
    for (std::size_t k = 0; k < sweep_optimizers.size(); ++k)
      if (small[k].ok() && large[k].ok())
        changes.push_back(message(display_name(sweep_optimizers[k]), " ", study::signed_points(large[k].test_accuracy - small[k].test_accuracy)));
    if (sweep.size() > 1 && !changes.empty()) {
      notes << "From batch " << small.front().spec.batch_size << " to " << large.front().spec.batch_size
            << ", test accuracy changes by (points): ";
      for (std::size_t i = 0; i < changes.size(); ++i) notes << (i ? ", " : "") << changes[i];
      notes << ". ";
    }
    std::optional<std::size_t> best_k;
    for (std::size_t k = 0; k < large.size(); ++k)
      if (large[k].ok() && (!best_k || large[k].test_accuracy > large[*best_k].test_accuracy)) best_k = k;
    if (best_k)
      notes << "At the largest batch (" << large.front().spec.batch_size << ") the best is "
            << display_name(sweep_optimizers[*best_k]) << " with " << study::percent(large[*best_k].test_accuracy) << "%. ";
    std::vector<std::string> failed;
    std::size_t n_sweep = 0;
    for (const auto& row : sweep)
      for (const Outcome& o : row) {
        ++n_sweep;
        if (!o.ok()) failed.push_back(message(display_name(o.spec.optimizer), " at ", o.spec.batch_size));
      }
    if (failed.empty()) {
      notes << "None of the " << n_sweep << " sweep runs diverged.";
    } else {
      notes << failed.size() << " of the " << n_sweep << " sweep runs did not complete (";
      for (std::size_t i = 0; i < failed.size(); ++i) notes << (i ? ", " : "") << failed[i];
      notes << "); they are missing points in the plot.";
    }
    std::size_t search_failed = 0;
    for (const auto& s : searches)
      for (const Outcome& o : s.outcomes) search_failed += o.ok() ? 0 : 1;
    notes << " In the lr searches LARS preferred " << format_number(searches[0].best_lr) << " and LAMB "
          << format_number(searches[1].best_lr) << (search_failed ? message(" (", search_failed, " trial(s) diverged)") : std::string())
          << ".";
  }
  md << "Observations: " << notes.str() << "\n";

  const double seconds = std::chrono::duration<double>(clock::now() - start).count();
  std::size_t reused = 0;
  for (const Outcome& o : all) reused += o.reused ? 1 : 0;
  md << "\nWall time of the stage: " << format_number(seconds, 4) << " s (" << all.size() << " runs, " << reused
     << " of them stored results of an earlier attempt).\n";

  // 4. The plot.
  const fs::path png = st.results() / "accuracy_vs_batch.png";
  if (plot) {
    study::PlotScripts{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON}.require_ok(
        "plot_batch_sweep.py", {(st.results() / "sweep.csv").string(), "-o", png.string(), "--title",
                                message("Stage 4: test accuracy vs batch size, ", scale.epochs_final, " epochs (",
                                        st.config().data_label(), ", ", st.config().mode(), " mode)")});
    md << "\n![test accuracy against batch size](accuracy_vs_batch.png)\n";
  }
  study::write_text(st.results() / "table.md", md.str());

  std::printf("\n%s\n%s\nObservations: %s\n", sweep_table.c_str(), study::markdown_table(lr_header, lr_rows).c_str(),
              notes.str().c_str());
  std::printf("results: %s (table.md, summary.csv, sweep.csv, search_lars/, search_lamb/, metrics.jsonl%s)\n",
              st.results().c_str(), plot ? ", accuracy_vs_batch.png" : "");
  std::printf("%s: wall time %.1f s\n", stage, seconds);
}

}  // namespace

int main(int argc, char** argv) {
  study_cli::Flags flags;
  std::size_t search_batch = 0;
  std::size_t max_train = 0;
  bool keep_checkpoints = false;
  bool no_plot = false;
  CLI::App app{"Stage 4 of the study: LARS and LAMB lr search, then a batch-size sweep of LARS, LAMB, SGDM and AdamW "
               "under one warmup + polynomial-decay schedule, with gradient accumulation above the micro-batch cap"};
  app.footer(
      "Outputs under <results>/stage4_large_batch/: table.md, summary.csv (every run), sweep.csv, search_lars/ and\n"
      "search_lamb/ (results.csv, results.md), metrics.jsonl (records labelled by run), accuracy_vs_batch.png.\n"
      "Checkpoints under <work>/stage4_large_batch/. A re-run reuses stored runs and resumes a cut one; --force\n"
      "does every run again.");
  flags.add(app);
  app.add_option("--search-batch", search_batch,
                 "batch size of the LARS/LAMB lr search (0: the largest of the scale's batch sizes that is <= 4096)")
      ->capture_default_str()->check(CLI::Range(std::size_t{0}, std::size_t{1} << 20));
  app.add_option("--max-train", max_train, "train on only the first N images of the training split (0: all); for smoke tests, with their own --results")
      ->capture_default_str();
  app.add_flag("--keep-checkpoints", keep_checkpoints, "keep each finished run's checkpoints (default: deleted once its result is stored)");
  app.add_flag("--no-plot", no_plot, "do not draw accuracy_vs_batch.png (tools/plot_batch_sweep.py)");
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  return study_cli::run_stage(flags, stage, [&] { body(flags, search_batch, max_train, keep_checkpoints, !no_plot); });
}
