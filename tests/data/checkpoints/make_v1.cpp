// Wrote the format-1 checkpoints committed beside this file, with the code of the commit that made
// them (see README.md here; today's code writes format 2, so this program documents how they were
// made and is not built): a centralized run (SGDM, then AdamW) stopped after epoch 1, and
// a LocalTrainer (K = 2, H = 2, SlowMo) after epoch 1. The tests load them with today's code, so
// a checkpoint written before a change of the format keeps loading.
//
//   g++ -std=c++20 -O1 -fopenmp -I include -I /usr/include/eigen3 \
//       tests/data/checkpoints/make_v1.cpp -lz -o /tmp/make_v1 && /tmp/make_v1 tests/data/checkpoints
#include <filesystem>
#include <iostream>

#include "distopt/local/local_trainer.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/run.hpp"
#include "../../support/checkpoint_task.hpp"

using namespace distopt;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  const fs::path out = argc > 1 ? argv[1] : ".";
  const fs::path work = fs::temp_directory_path() / "distopt-make-v1";
  fs::remove_all(work);
  const auto& task = test_support::checkpoint_task();
  const optim::Schedule schedule = test_support::checkpoint_schedule();

  {
    auto model = test_support::checkpoint_model();
    optim::Sgdm opt(model.parameters(), test_support::checkpoint_sgdm());
    auto options = test_support::checkpoint_run_options(work / "sgdm");
    options.stop_after = 1;
    train::run_training(model, opt, schedule, task.run(), options);
    fs::copy_file(train::CheckpointFolder(options.out, options.optimizer_name, options.batch_size, opt.options().lr,
                                          opt.options().weight_decay).file(1),
                  out / "central_sgdm_v1.npz", fs::copy_options::overwrite_existing);
  }
  {
    auto model = test_support::checkpoint_model();
    optim::AdamW opt(model.parameters(), test_support::checkpoint_adamw());
    auto options = test_support::checkpoint_run_options(work / "adamw");
    options.optimizer_name = "adamw";
    options.stop_after = 1;
    train::run_training(model, opt, schedule, task.run(), options);
    fs::copy_file(train::CheckpointFolder(options.out, options.optimizer_name, options.batch_size, opt.options().lr,
                                          opt.options().weight_decay).file(1),
                  out / "central_adamw_v1.npz", fs::copy_options::overwrite_existing);
  }
  {
    auto model = test_support::checkpoint_model();
    auto trainer = test_support::checkpoint_local_trainer(model);
    auto options = test_support::checkpoint_local_run_options(work / "local");
    options.stop_after = 1;
    trainer.run(schedule, &task.validation, &task.test, task.normalizer, options);
    fs::copy_file(options.out / "1.npz", out / "local_slowmo_v1.npz", fs::copy_options::overwrite_existing);
  }
  fs::remove_all(work);
  std::cout << "wrote central_sgdm_v1.npz, central_adamw_v1.npz and local_slowmo_v1.npz to " << out << "\n";
}
