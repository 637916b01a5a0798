// Stage 2 of the study: the model. Trains the hsu LeNet-5 (Hsu et al. 2020: conv 3->64, 64->64,
// fc 1600->384->192->100) once with SGD with momentum in Hsu et al.'s setting — lr 0.01, momentum
// 0.9, weight decay 4e-4, batch 64 — the baseline every later stage is compared with.
//
//   stage2_lenet [--quick|--full] [--lr 0.01] [--batch-size 64] [--epochs N] [--schedule constant|cosine]
//
// Outputs under <results>/stage2_lenet/: metrics.jsonl (the run's records, labelled run=...),
// summary.csv (one row), epochs.csv, table.md, curves.png (tools/plot.py). Checkpoints under
// <work>/stage2_lenet/train/sgdm/<batch>/<lr>/<wd>/, with the run's stamp.txt (the configuration it
// was started with), metrics.jsonl, and result.csv + epochs.csv once finished: a re-run reuses a
// finished run, resumes a cut one from its last checkpoint, and starts afresh if the stamp differs.
#include "study_cli.hpp"

#include <distopt/core/error.hpp>
#include <distopt/core/parallel.hpp>
#include <distopt/data/split.hpp>
#include <distopt/nn/lenet5.hpp>
#include <distopt/optim/schedule.hpp>
#include <distopt/optim/sgdm.hpp>
#include <distopt/study/plots.hpp>
#include <distopt/study/runs.hpp>
#include <distopt/study/sinks.hpp>
#include <distopt/study/study.hpp>
#include <distopt/train/checkpoint.hpp>
#include <distopt/train/metrics.hpp>
#include <distopt/train/run.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace data = distopt::data;
namespace study = distopt::study;
namespace train = distopt::train;
using distopt::message;
using train::format_number;

const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};
using study::fixed;
using study::Row;

// ---- the stage ----

/// The stage's own flags.
struct Options {
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 4e-4;
  std::size_t batch_size = 64;
  std::size_t epochs = 0;  ///< 0: the scale's epochs_lenet
  std::string schedule = "constant";
  std::size_t max_train = 0;  ///< 0: the whole train split
};

void run(const study::Config& config, const Options& o) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const fs::path results = config.results / "stage2_lenet";
  const std::size_t epochs = o.epochs > 0 ? o.epochs : config.scale.epochs_lenet;

  data::PreparedData prepared = study::prepare_data(config);
  if (o.max_train > 0 && o.max_train < prepared.train.size()) {
    std::vector<std::size_t> first(o.max_train);
    std::iota(first.begin(), first.end(), std::size_t{0});
    prepared.train = data::subset(prepared.train, first);
  }
  const std::size_t n_train = prepared.train.size();
  const auto steps_per_epoch = static_cast<std::int64_t>((n_train + o.batch_size - 1) / o.batch_size);
  const std::int64_t total_steps = steps_per_epoch * static_cast<std::int64_t>(epochs);
  const distopt::optim::Schedule schedule = o.schedule == "cosine" ? distopt::optim::Schedule(distopt::optim::Cosine{.lr = o.lr, .t_max = total_steps})
                                                                   : distopt::optim::Schedule(distopt::optim::Constant{.lr = o.lr});

  const std::string run_id = message("sgdm-bs", o.batch_size, "-lr", format_number(o.lr), "-wd", format_number(o.weight_decay));
  const fs::path root = config.work / "stage2_lenet";
  const study::RunFolder slot{train::CheckpointFolder(root, "sgdm", o.batch_size, o.lr, o.weight_decay).path(),
                     message("stage2_lenet\n", config.data_label(), "\nmode ", config.mode(), "\nseed ", config.seed, "\nn_train ",
                             n_train, "\nepochs ", epochs, "\nbatch ", o.batch_size, "\nlr ", format_number(o.lr, 17), "\nmomentum ",
                             format_number(o.momentum, 17), "\nweight_decay ", format_number(o.weight_decay, 17), "\nschedule ",
                             o.schedule, "\n")};

  Row row;
  std::optional<Row> done = slot.finished();
  if (done) {
    std::cout << "run " << run_id << ": finished earlier, reusing " << (slot.path() / "result.csv").string() << '\n';
    row = *done;
  } else {
    const bool resume = slot.claim() == study::RunFolder::Start::resume;
    train::Metrics metrics;
    metrics.add(std::make_shared<study::RunLabel>(run_id, std::make_shared<train::JsonLinesSink>(slot.path() / "metrics.jsonl", /*append=*/resume)));
    metrics.add(std::make_shared<train::ProgressSink>(std::cerr));
    distopt::nn::LeNet5<float> model({.seed = config.seed});
    distopt::optim::Sgdm optimizer(model.parameters(), {.lr = o.lr, .momentum = o.momentum, .weight_decay = o.weight_decay});
    const train::RunOptions options{
        .epochs = epochs,
        .batch_size = o.batch_size,
        .seed = config.seed,
        .optimizer_name = "sgdm",
        .hyperparameters = {{"base_lr", o.lr},
                            {"weight_decay", o.weight_decay},
                            {"momentum", o.momentum},
                            {"batch_size", static_cast<double>(o.batch_size)}},
        .out = root,
        .resume = resume,
        .overwrite = !resume,
    };
    std::cout << "run " << run_id << ": " << (resume ? "resuming" : "training") << " LeNet-5 (" << model.parameters().num_parameters()
              << " parameters), " << n_train << " images, " << epochs << " epochs of " << steps_per_epoch << " steps, "
              << o.schedule << " lr, " << distopt::parallel::max_threads() << " threads\n"
              << std::flush;
    const train::RunResult r = train::run_training(model, optimizer, schedule, train::RunData::from(prepared), options, metrics);
    double train_seconds = 0;
    std::vector<std::vector<std::string>> epoch_rows;
    for (std::size_t e = 0; e < r.history.size(); ++e) {
      const train::EpochMetrics& h = r.history[e];
      train_seconds += h.seconds;
      epoch_rows.push_back({message(e + 1), format_number(h.train_loss), format_number(h.train_accuracy), format_number(h.validation_loss),
                            format_number(h.validation_accuracy), format_number(h.lr), format_number(h.seconds, 4)});
    }
    train::write_csv(slot.path() / "epochs.csv",
                     {"epoch", "train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "lr", "seconds"}, epoch_rows);
    row = {{"run", run_id},
           {"optimizer", "sgdm"},
           {"lr", format_number(o.lr, 10)},
           {"momentum", format_number(o.momentum, 10)},
           {"weight_decay", format_number(o.weight_decay, 10)},
           {"batch_size", message(o.batch_size)},
           {"schedule", o.schedule},
           {"n_train", message(n_train)},
           {"status", r.status},
           {"epochs", message(r.epochs_done)},
           {"steps", message(r.steps)},
           {"best_epoch", message(r.best_epoch)},
           {"best_validation_accuracy", format_number(r.best_validation_accuracy, 10)},
           {"final_train_accuracy", r.history.empty() ? "nan" : format_number(r.history.back().train_accuracy, 10)},
           {"test_loss", format_number(r.test.loss, 10)},
           {"test_accuracy", format_number(r.test.accuracy, 10)},
           {"test_top5", format_number(r.test.top5, 10)},
           {"train_seconds", format_number(train_seconds, 6)},
           {"images_per_second", format_number(train_seconds > 0 ? static_cast<double>(n_train * r.epochs_done) / train_seconds : std::nan(""), 6)},
           {"message", r.message}};
    // result.csv last: its presence says the run is finished.
    study::write_row(slot.path() / "result.csv", row);
  }

  // The stage's outputs, rebuilt from the run folder every time (also when the run was reused).
  study::write_text(results / "metrics.jsonl", study::read_text(slot.path() / "metrics.jsonl"));
  study::write_row(results / "summary.csv", row);
  fs::copy_file(slot.path() / "epochs.csv", results / "epochs.csv", fs::copy_options::overwrite_existing);
  plots.curves({slot.path()}, results / "curves.png", message("Stage 2: LeNet-5, SGDM lr ", format_number(o.lr), " wd ", format_number(o.weight_decay),
                                                     " bs ", o.batch_size, " (", config.mode(), ")"));

  const double test_acc = row.number("test_accuracy");
  const double best_val = row.number("best_validation_accuracy");
  const double train_acc = row.number("final_train_accuracy");
  const std::vector<std::vector<std::string>> table_rows = {
      {"sgdm", format_number(o.lr), format_number(o.momentum), format_number(o.weight_decay), message(o.batch_size), o.schedule,
       row.at("status"), row.at("epochs"), study::percent(train_acc), message(study::percent(best_val), " (epoch ", row.at("best_epoch"), ")"),
       study::percent(test_acc), study::percent(row.number("test_top5")), fixed(row.number("train_seconds"), 1),
       fixed(row.number("images_per_second"), 0)}};
  const std::string table = study::markdown_table({"optimizer", "lr", "momentum", "weight decay", "batch", "schedule", "status", "epochs",
                                                   "train acc % (last epoch)", "best validation acc %", "test acc %", "test top-5 %",
                                                   "train seconds", "images/s"},
                                                  table_rows);
  std::ostringstream notes;
  if (row.at("status") == "diverged") {
    notes << "The run diverged: " << row.at("message") << ".";
  } else {
    notes << "After " << row.at("epochs") << " epoch(s) the model reaches " << study::percent(test_acc)
          << "% test accuracy (chance is 1.0%; Hsu et al. report 55.2% on real CIFAR-100 after full training); the last epoch's "
          << "training accuracy is " << study::percent(train_acc) << "%, "
          << fixed(100.0 * std::abs(train_acc - best_val), 1) << " points " << (train_acc >= best_val ? "above" : "below")
          << " the best validation accuracy.";
  }
  std::ostringstream md;
  md << "## Stage 2: LeNet-5 baseline (SGDM, Hsu et al. 2020 setting)\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << "\n\n"
     << table << '\n'
     << notes.str() << "\n\nPer-epoch curves: curves.png; per-epoch numbers: epochs.csv.\n";
  study::write_text(results / "table.md", md.str());
  std::cout << '\n' << md.str();
  std::cout << "stage2_lenet: wall time " << fixed(std::chrono::duration<double>(clock::now() - start).count(), 1) << " s\n";
}

}  // namespace

int main(int argc, char** argv) {
  study_cli::Flags flags;
  Options o;
  CLI::App app{"Study stage 2: train the hsu LeNet-5 once with SGDM in Hsu et al.'s setting (lr 0.01, momentum 0.9, "
               "weight decay 4e-4, batch 64); resumable; writes <results>/stage2_lenet/{table.md,summary.csv,epochs.csv,metrics.jsonl,curves.png}"};
  flags.add(app);
  app.add_option("--lr", o.lr, "learning rate")->capture_default_str()->check(CLI::Range(1e-12, 1e3));
  app.add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str()->check(CLI::Range(0.0, 0.999999));
  app.add_option("--weight-decay", o.weight_decay, "L2 weight decay")->capture_default_str()->check(CLI::Range(0.0, 10.0));
  app.add_option("--batch-size", o.batch_size, "images per step")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--epochs", o.epochs, "epochs (0: the scale's epochs_lenet, 3 quick / 150 full)")->capture_default_str()->check(CLI::Range(0, 100'000));
  app.add_option("--schedule", o.schedule, "learning-rate schedule: constant (Hsu et al.) or cosine annealing to 0 over the run")
      ->capture_default_str()
      ->check(CLI::IsMember({"constant", "cosine"}));
  app.add_option("--max-train", o.max_train, "train on only the first N images of the train split (0: all; for smoke tests)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  return study_cli::run_stage(flags, "stage2_lenet", [&] { run(flags.config, o); });
}
