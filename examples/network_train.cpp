// Time to accuracy over a real network: one LocalTrainer worker per MPI rank, LeNet-5 on
// Fashion-MNIST, one method, trained for a wall-clock budget. tools/netlab/netlab.py runs it
// across network namespaces whose links tbf holds to a rate; here it is only an MPI program.
// Rank 0 evaluates the global model on the test set every --eval-every seconds and writes one CSV
// row per evaluation: the measured seconds (evaluations excluded: the clock stops while rank 0
// evaluates), the trainer's simulated clock of the same run on a network of --rate Mbit/s (the
// compute measured here, the transfers modelled, overlapped as the method overlaps them), steps,
// exchanges and test accuracy.
//
//   mpirun -n 4 network_train --method streaming --model hsu --rate 100 --seconds 120 --out run.csv
//
// Methods (K = ranks workers, batch --batch per worker, constant learning rates):
//   sync       H = 1: the workers average every step (SGDM inner, LocalSGD outer)
//   localsgd   H = --h, SGDM inner, LocalSGD outer (Lin et al. 2020)
//   diloco     H = --h, AdamW inner, outer SGD with Nesterov momentum 0.7 / 0.9 (Douillard et al. 2023)
//   streaming  diloco with --fragments P, --delay tau and --alpha (Douillard et al. 2025)
// Exit status 0 when the budget is spent, 1 on an error (one line on stderr).
#include <mpi.h>

#include <distopt/core/error.hpp>
#include <distopt/core/io.hpp>
#include <distopt/data/idx.hpp>
#include <distopt/data/split.hpp>
#include <distopt/data/statistics.hpp>
#include <distopt/local/local_trainer.hpp>
#include <distopt/local/mpi.hpp>
#include <distopt/local/outer.hpp>
#include <distopt/nn/lenet5.hpp>
#include <distopt/optim/adamw.hpp>
#include <distopt/optim/sgdm.hpp>
#include <distopt/train/run.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace distopt;
using Model = nn::LeNet5<float>;

struct Settings {
  std::string method = "streaming";
  std::string model = "classic";
  std::string data = std::string(data::fashion_mnist_folder);
  double rate_mbit = 100;
  double latency = 1e-4;
  double seconds = 60;
  double eval_every = 10;
  std::size_t h = 16;
  std::size_t batch = 32;
  std::size_t fragments = 2;
  std::size_t delay = 8;
  double alpha = 0.5;
  double sgd_lr = 0.05;
  double adamw_lr = 1e-3;
  std::uint64_t seed = 1;
  std::size_t test_images = 10000;
  std::string out;
  bool progress_thread = true;
};

Model make_model(const Settings& s) {
  if (s.model == "classic") return Model(nn::LeNet5Options::for_images(1, 28, 28, 10, s.seed));
  require(s.model == "hsu", "--model must be classic or hsu, got '", s.model, "'");
  return Model({.preset = nn::Preset::hsu, .classes = 10, .channels = 1, .image_size = 28, .padding = 2, .seed = s.seed});
}

template <class Inner, class Outer>
void train(const Settings& s, const data::ImageDataset& set, const Model& start, Inner inner, Outer outer, std::size_t h,
           local::Streaming streaming) {
  local::MpiCommunicator comm(MPI_COMM_WORLD, {.progress_thread = s.progress_thread});
  const data::Normalizer normalizer(data::channel_statistics(set.train));
  const local::LocalOptions options{.workers = static_cast<std::size_t>(comm.ranks()), .local_steps = h, .batch_size = s.batch,
                                    .seed = s.seed, .threads = 1,
                                    .network = {.latency = s.latency, .bandwidth = s.rate_mbit * 1e6 / 8.0},
                                    .streaming = streaming};
  local::LocalTrainer trainer(start, inner, std::move(outer), set.train, normalizer, options, std::nullopt, comm);
  data::LabelledImages test = set.test;
  if (s.test_images < test.size()) {
    std::vector<std::size_t> first(s.test_images);
    for (std::size_t i = 0; i < first.size(); ++i) first[i] = i;
    test = data::subset(test, first);
  }
  const optim::Schedule schedule = s.method == "sync" || s.method == "localsgd" ? optim::Schedule(optim::Constant{s.sgd_lr})
                                                                                 : optim::Schedule(optim::Constant{s.adamw_lr});
  std::ofstream csv;
  std::filesystem::path partial;
  if (comm.rank() == 0) {
    partial = s.out + ".partial";
    csv.open(partial);
    require(csv.good(), "network_train: cannot write '", partial.string(), "'");
    csv << "method,model,rate_mbit,ranks,measured_seconds,simulated_seconds,compute_seconds,sync_seconds,wait_seconds,steps,exchanges,"
           "bytes_per_worker,train_loss,test_accuracy\n";
  }
  comm.barrier();
  using clock = std::chrono::steady_clock;
  const auto start_time = clock::now();
  double evaluating = 0, next_eval = s.eval_every, loss = 0;
  for (bool done = false; !done;) {
    loss = trainer.round(schedule).loss;
    const double measured = std::chrono::duration<double>(clock::now() - start_time).count() - evaluating;
    // Rank 0's clock decides for all, so every rank takes the same branch to the next collective.
    int decision[2] = {measured >= next_eval ? 1 : 0, measured >= s.seconds ? 1 : 0};
    local::broadcast_value(comm, decision);
    done = decision[1] != 0;
    if (decision[0] == 0 && !done) continue;
    const auto eval_start = clock::now();
    if (comm.rank() == 0) {
      const train::Evaluation e = train::evaluate(trainer.global_model(), test, normalizer);
      csv << s.method << ',' << s.model << ',' << s.rate_mbit << ',' << comm.ranks() << ',' << measured << ','
          << trainer.simulated_seconds() << ',' << trainer.compute_seconds() << ',' << trainer.sync_seconds() << ','
          << trainer.communication().allreduce_seconds << ',' << trainer.step() << ','
          << trainer.communication().rounds << ',' << trainer.communication().bytes_per_worker << ',' << loss << ',' << e.accuracy
          << '\n';
      csv.flush();
      std::printf("%-9s %-7s %6g Mbit/s  %7.1f s measured  %7.1f s simulated  step %6lld  test accuracy %.4f\n", s.method.c_str(),
                  s.model.c_str(), s.rate_mbit, measured, trainer.simulated_seconds(), static_cast<long long>(trainer.step()),
                  e.accuracy);
      std::fflush(stdout);
    }
    comm.barrier();
    evaluating += std::chrono::duration<double>(clock::now() - eval_start).count();
    while (next_eval <= measured) next_eval += s.eval_every;
  }
  if (comm.rank() == 0) {
    csv.close();
    std::filesystem::rename(partial, s.out);
  }
}

void run(const Settings& s) {
  const data::ImageDataset set = data::load_fashion_mnist(s.data);
  const Model start = make_model(s);
  const optim::Sgdm<ParameterSet> sgdm(start.parameters(), {.lr = s.sgd_lr, .momentum = 0.9, .weight_decay = 1e-4});
  const optim::AdamW<ParameterSet> adamw(start.parameters(), {.lr = s.adamw_lr, .weight_decay = 1e-4});
  if (s.method == "sync") return train(s, set, start, sgdm, local::LocalSgd{}, 1, {});
  if (s.method == "localsgd") return train(s, set, start, sgdm, local::LocalSgd{}, s.h, {});
  if (s.method == "diloco") return train(s, set, start, adamw, local::diloco_outer(start.parameters()), s.h, {});
  require(s.method == "streaming", "--method must be sync, localsgd, diloco or streaming, got '", s.method, "'");
  train(s, set, start, adamw, local::diloco_outer(start.parameters()), s.h,
        {.fragments = s.fragments, .delay = s.delay, .alpha = s.alpha});
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  CLI::App app{"LeNet-5 on Fashion-MNIST, one worker per MPI rank, for a wall-clock budget"};
  app.add_option("--method", s.method, "sync, localsgd, diloco or streaming");
  app.add_option("--model", s.model, "classic or hsu");
  app.add_option("--data", s.data, "Fashion-MNIST's IDX folder");
  app.add_option("--rate", s.rate_mbit, "the link's rate for the simulated clock, Mbit/s");
  app.add_option("--latency", s.latency, "each message's latency for the simulated clock, seconds");
  app.add_option("--seconds", s.seconds, "training budget, measured seconds");
  app.add_option("--eval-every", s.eval_every, "seconds between evaluations");
  app.add_option("--h", s.h, "local steps H (not sync)");
  app.add_option("--batch", s.batch, "batch per worker");
  app.add_option("--fragments", s.fragments, "streaming: fragments P");
  app.add_option("--delay", s.delay, "streaming: steps tau between an exchange's start and its outer step");
  app.add_option("--alpha", s.alpha, "streaming: merge weight of the worker's own values");
  app.add_option("--sgd-lr", s.sgd_lr, "SGDM's lr (sync, localsgd)");
  app.add_option("--adamw-lr", s.adamw_lr, "AdamW's lr (diloco, streaming)");
  app.add_option("--seed", s.seed, "seed of the weights, shards and batches");
  app.add_option("--test-images", s.test_images, "test images evaluated (the first n)");
  app.add_option("--out", s.out, "CSV written by rank 0")->required();
  app.add_option("--progress-thread", s.progress_thread, "a thread moves the exchanges on (else tests between steps)");
  CLI11_PARSE(app, argc, argv);
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int status = 0;
  try {
    run(s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "network_train: %s\n", e.what());
    status = 1;
  }
  if (status != 0) MPI_Abort(MPI_COMM_WORLD, status);
  MPI_Finalize();
  return status;
}
