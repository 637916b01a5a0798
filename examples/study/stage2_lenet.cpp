// Stage 2 of the study: the model. Trains the LeNet-5 that fits the data (classic on Fashion-MNIST,
// hsu on CIFAR-100) once per seed with SGD with momentum in Hsu et al.'s setting — lr 0.01,
// momentum 0.9, weight decay 4e-4, batch 64, constant lr — the baseline every later stage is
// compared with. Each seed's initial weights are saved (PyTorch state_dict names), so that
// tools/bench/torch_train.py can train the same model from the same start in PyTorch.
//
//   stage2_lenet [--quick|--standard|--full] [--lr 0.01] [--batch-size 64] [--epochs N] [--seeds N]
//
// Outputs under <results>/stage2_lenet/: table.md, summary.csv (one row per seed), epochs.csv (the
// first seed's epochs), metrics.jsonl, curves.png, init_seed<S>.npz. Runs under
// <work>/stage2_lenet/<run>/, resumable.
#include "stages.hpp"
#include "study_cli.hpp"

#include "common/central_runs.hpp"
#include "common/findings.hpp"
#include "common/plots.hpp"
#include "common/runs.hpp"
#include "common/study.hpp"

#include <distopt/core/archive.hpp>
#include <distopt/core/parallel.hpp>
#include <distopt/nn/lenet5.hpp>
#include <distopt/train/metrics.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace study = distopt::study;
namespace train = distopt::train;
using distopt::message;
using distopt::io::format_number;

const study::PlotScripts plots{DISTOPT_TOOLS_DIR, DISTOPT_PYTHON};

struct Options {
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 4e-4;
  std::size_t batch_size = 64;
  std::size_t epochs = 0;  ///< 0: the scale's epochs_lenet
  std::string schedule = "constant";
  std::size_t seeds = 1;
};

/// The model's initial weights for `seed`, as a state_dict-named .npz that numpy and PyTorch read.
void save_initial_weights(const distopt::data::DatasetInfo& info, std::uint64_t seed, const fs::path& file) {
  const distopt::nn::LeNet5<float> model(study::model_options(info, seed));
  distopt::Archive archive;
  const auto& params = model.parameters();
  for (const auto& block : params.blocks())
    archive.put<float>(block.name, std::span<const float>(params.values().data() + block.offset, static_cast<std::size_t>(block.size)),
                       block.shape);
  archive.save(file);
}

void run(const study::Config& config, const Options& o, study::Work& work) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path results = config.results / "stage2_lenet";
  const std::size_t epochs = o.epochs > 0 ? o.epochs : config.scale.scaled(config.scale.epochs_lenet);
  const distopt::data::PreparedData prepared = study::prepare_data(config, work.world());
  const study::ScheduleKind schedule = o.schedule == "cosine" ? study::ScheduleKind::cosine : study::ScheduleKind::constant;
  const study::CentralRuns runs{config, prepared, config.work / "stage2_lenet", results / "metrics.jsonl"};
  if (work.root())
    std::printf("%s, %zu parameters, %zu train / %zu validation / %zu test images, %d threads\n",
                study::model_label(prepared.info).c_str(),
                static_cast<std::size_t>(distopt::nn::LeNet5<float>(study::model_options(prepared.info, 0)).parameters().num_parameters()),
                prepared.train.size(), prepared.validation.size(), prepared.test.size(), distopt::parallel::max_threads());

  std::vector<study::CentralSpec> specs;
  for (std::size_t i = 0; i < o.seeds; ++i) {
    const std::uint64_t seed = config.seed_of(i);
    if (work.root()) save_initial_weights(prepared.info, seed, results / message("init_seed", seed, ".npz"));
    specs.push_back({.id = message("sgdm-bs", o.batch_size, "-lr", format_number(o.lr), "-seed", seed),
                     .optimizer = "sgdm",
                     .lr = o.lr,
                     .weight_decay = o.weight_decay,
                     .momentum = o.momentum,
                     .batch_size = o.batch_size,
                     .epochs = epochs,
                     .patience = 0,
                     .schedule = schedule,
                     .seed = seed});
  }
  const std::vector<study::Row> rows = runs.run_all(work, specs);
  if (!work.root()) return;  // the rest is rank 0's: tables and plots

  std::vector<std::vector<std::string>> table_rows;
  std::vector<std::string> run_ids;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const study::Row& row = rows[i];
    const std::uint64_t seed = specs[i].seed;
    run_ids.push_back(specs[i].id);
    table_rows.push_back({message(seed), row.cell("status"), row.cell("epochs"), row.cell("steps"),
                          study::percent(row.number("final_train_accuracy")),
                          message(study::percent(row.number("best_validation_accuracy")), " (epoch ", row.cell("best_epoch"), ")"),
                          study::percent(row.number("test_accuracy")), study::percent(row.number("test_top5")),
                          study::fixed(row.number("train_seconds"), 1), study::fixed(row.number("images_per_second"), 0)});
  }
  study::write_rows(results / "summary.csv", rows.front().columns(), rows);
  plots.curves(results / "metrics.jsonl", run_ids, results / "curves.png",
               message("Stage 2: ", prepared.info.name, ", SGDM lr ", format_number(o.lr), " wd ", format_number(o.weight_decay), " bs ",
                       o.batch_size, " (", config.mode(), ")"));

  study::Evidence test{"stage 2", {}};
  for (const auto& r : rows) test.values.push_back(study::test_accuracy(r));
  std::ostringstream md;
  md << "## Stage 2: LeNet-5 baseline (SGDM, Hsu et al. 2020 setting)\n\n"
     << "Data: " << config.data_label() << ", mode " << config.mode() << ". Model: " << study::model_label(prepared.info)
     << ". SGDM lr " << format_number(o.lr) << ", momentum " << format_number(o.momentum) << ", weight decay "
     << format_number(o.weight_decay) << ", batch " << o.batch_size << ", " << o.schedule << " lr, " << epochs
     << " epochs; augmentation: " << study::augmentation_label(study::augmentation_for(prepared.info))
     << ". Test accuracy of the best-validation weights.\n\n"
     << study::markdown_table({"seed", "status", "epochs", "steps", "train acc % (last epoch)", "best validation acc %", "test acc %",
                               "test top-5 %", "train seconds", "images/s"},
                              table_rows)
     << "\nTest accuracy %: " << test.summary() << ". Chance is " << study::fixed(100.0 / static_cast<double>(prepared.info.classes), 1)
     << "%.\n\nPer-epoch curves: curves.png. Initial weights: init_seed<S>.npz (state_dict names).\n";
  distopt::io::write_text(results / "table.md", md.str());
  std::cout << '\n' << md.str();
  std::printf("stage2_lenet: wall time %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

}  // namespace

int study_stages::stage2_lenet(int argc, char** argv) {
  study_cli::Flags flags;
  Options o;
  CLI::App app{"Study stage 2: train the LeNet-5 of the data once per seed with SGDM in Hsu et al.'s setting (lr 0.01, momentum "
               "0.9, weight decay 4e-4, batch 64); resumable; writes <results>/stage2_lenet/"};
  flags.add(app);
  app.add_option("--lr", o.lr, "learning rate")->capture_default_str()->check(distopt::cli::number_in(1e-12, 1e3));
  app.add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str()->check(distopt::cli::number_in(0, 1, true));
  app.add_option("--weight-decay", o.weight_decay, "L2 weight decay")->capture_default_str()->check(distopt::cli::number_in(0, 10));
  app.add_option("--batch-size", o.batch_size, "images per step")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--epochs", o.epochs, "epochs (0: the scale's epochs_lenet)")->capture_default_str()->check(CLI::Range(0, 100'000));
  app.add_option("--schedule", o.schedule, "learning-rate schedule: constant (Hsu et al.) or cosine annealing to 0 over the run")
      ->capture_default_str()
      ->check(CLI::IsMember({"constant", "cosine"}));
  app.add_option("--seeds", o.seeds, "runs with seeds seed, seed + 1, ... (PyTorch parity uses 3)")->capture_default_str()->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);
  flags.finish();
  return study_cli::run_stage(flags, "stage2_lenet", [&](study::Work& work) { run(flags.config, o, work); });
}
