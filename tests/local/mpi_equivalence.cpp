// Run under mpirun: LocalTrainer over MpiCommunicator must give the in-process trainer's model
// (computed on every rank as the reference) for LocalSGD and SlowMo, and a checkpoint written by
// rank 0 must hold every rank's workers. Exit status 0 on every rank when all checks pass.
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "distopt/local/checkpoint.hpp"
#include "distopt/local/local_trainer.hpp"
#include "distopt/local/mpi.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/train/local_run.hpp"
#include "../support/tiny_task.hpp"

using namespace distopt;
using Model = nn::LeNet5<float>;
using Sgd = optim::Sgdm<ParameterSet>;

namespace {

int failures = 0;
int rank = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
  }
}

template <class Outer, class Comm>
std::vector<float> train_run(Outer outer, local::InnerBuffers buffers, Comm comm, const data::LabelledImages& set,
                         const data::Normalizer& normalizer, const std::filesystem::path& checkpoint = {},
                         local::Compression compression = {}, local::Streaming streaming = {}) {
  Model start = test_support::tiny_lenet();
  local::LocalTrainer trainer(start, Sgd(start.parameters(), {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4}), outer, set,
                              normalizer, {.workers = 4, .local_steps = 3, .batch_size = 8, .inner_buffers = buffers, .seed = 5,
                                           .compression = compression, .streaming = streaming},
                              std::nullopt, comm);
  trainer.run_steps(optim::Cosine{.lr = 0.05, .t_max = 30}, 12);
  if (!checkpoint.empty()) local::LocalCheckpoint::save(trainer, checkpoint);
  const auto v = trainer.global_model().parameters().values();
  return {v.data(), v.data() + v.size()};
}

double max_relative(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]) / (1e-3 + std::abs(static_cast<double>(b[i]))));
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  // MPI_THREAD_MULTIPLE: one case below moves its exchanges on with a progress thread.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  {
    local::MpiCommunicator comm;
    rank = comm.rank();
    if (argc > 1 && std::string(argv[1]) == "--rank-1-dies") {
      // Fault injection: rank 1 dies after its first round; the job must end, not hang in the
      // next all-reduce (ctest checks mpirun's report and a timeout).
      const auto set = test_support::template_images(96, 1);
      const data::Normalizer normalizer(data::channel_statistics(set));
      Model start = test_support::tiny_lenet();
      local::LocalTrainer trainer(start, Sgd(start.parameters(), {.lr = 0.05}), local::LocalSgd{}, set, normalizer,
                                  {.workers = 4, .local_steps = 2, .batch_size = 8}, std::nullopt, comm);
      (void)trainer.round(optim::Constant{0.05});
      if (rank == 1) std::abort();
      for (int r = 0; r < 100; ++r) (void)trainer.round(optim::Constant{0.05});
      return 0;
    }
    check(comm.ranks() == 2, "the test runs on 2 ranks");
    const auto set = test_support::template_images(96, 1);
    const data::Normalizer normalizer(data::channel_statistics(set));
    int identical = 0;
    for (const auto buffers : {local::InnerBuffers::maintain, local::InnerBuffers::average}) {
      const auto ref_local = train_run(local::LocalSgd{}, buffers, local::InProcess{}, set, normalizer);
      const auto mpi_local = train_run(local::LocalSgd{}, buffers, comm, set, normalizer);
      check(max_relative(mpi_local, ref_local) <= 1e-5, "LocalSGD: MPI within 1e-5 of in-process");
      identical += mpi_local == ref_local ? 1 : 0;
      const auto ref_slowmo = train_run(local::SlowMo({.alpha = 1.0, .beta = 0.6}), buffers, local::InProcess{}, set, normalizer);
      const auto mpi_slowmo = train_run(local::SlowMo({.alpha = 1.0, .beta = 0.6}), buffers, comm, set, normalizer);
      check(max_relative(mpi_slowmo, ref_slowmo) <= 1e-5, "SlowMo: MPI within 1e-5 of in-process");
      identical += mpi_slowmo == ref_slowmo ? 1 : 0;
      check(mpi_slowmo != mpi_local, "SlowMo differs from LocalSGD");
    }
    if (rank == 0) std::printf("%d of 4 MPI trajectories are bit-identical to the in-process ones\n", identical);

    // Compressed messages are gathered and summed on rank 0 in worker order: the same bits as in
    // process, always (DiLoCo's outer step included).
    for (const auto& compression : {local::Compression{.codec = local::Codec::fp32}, local::Compression{.codec = local::Codec::bf16},
                                    local::Compression{.codec = local::Codec::int8, .block = 64, .error_feedback = true},
                                    local::Compression{.codec = local::Codec::topk, .fraction = 0.05, .error_feedback = true}}) {
      const Model layout = test_support::tiny_lenet();
      const auto reference = train_run(local::diloco_outer(layout.parameters()), local::InnerBuffers::maintain, local::InProcess{}, set,
                                       normalizer, {}, compression);
      const auto over_mpi = train_run(local::diloco_outer(layout.parameters()), local::InnerBuffers::maintain, comm, set, normalizer, {},
                                      compression);
      check(over_mpi == reference, "DiLoCo with " + compression.label() + ": MPI bit-identical to in-process");
    }

    // Streaming DiLoCo: its exchanges start as non-blocking collectives and complete tau steps
    // later. The all-reduce gives the in-process model up to the association of the double sum,
    // compressed messages the same bits; 12 steps leave fragment 0's exchange in flight.
    {
      const Model layout = test_support::tiny_lenet();
      const local::Streaming streaming{.fragments = 2, .delay = 1, .alpha = 0.5};
      const auto reference = train_run(local::diloco_outer(layout.parameters()), local::InnerBuffers::maintain, local::InProcess{}, set,
                                       normalizer, {}, {}, streaming);
      const auto over_mpi = train_run(local::diloco_outer(layout.parameters()), local::InnerBuffers::maintain, comm, set, normalizer, {},
                                      {}, streaming);
      check(max_relative(over_mpi, reference) <= 1e-5, "Streaming DiLoCo: MPI within 1e-5 of in-process");
      const local::Compression int8{.codec = local::Codec::int8, .block = 64, .error_feedback = true};
      const auto reference8 = train_run(local::diloco_outer(layout.parameters()), local::InnerBuffers::maintain, local::InProcess{},
                                        set, normalizer, {}, int8, streaming);
      const auto over_mpi8 = train_run(local::diloco_outer(layout.parameters()), local::InnerBuffers::maintain, comm, set, normalizer,
                                       {}, int8, streaming);
      check(over_mpi8 == reference8, "Streaming DiLoCo with int8+ef: MPI bit-identical to in-process");
      check(provided == MPI_THREAD_MULTIPLE, "MPI provides MPI_THREAD_MULTIPLE");
      if (provided == MPI_THREAD_MULTIPLE) {
        const local::MpiCommunicator threaded(MPI_COMM_WORLD, {.progress_thread = true});
        check(threaded.progress_thread(), "the communicator runs a progress thread");
        const auto with_thread = train_run(local::diloco_outer(layout.parameters()), local::InnerBuffers::maintain, threaded, set,
                                           normalizer, {}, int8, streaming);
        check(with_thread == reference8, "Streaming DiLoCo with a progress thread: the same bits");
      }
      check(over_mpi8 != over_mpi, "int8 messages change the trajectory");

      // Saved over MPI with an exchange in flight, resumed in process: the uninterrupted bits.
      const auto make = [&](auto communicator) {
        Model start = test_support::tiny_lenet();
        return local::LocalTrainer(start, Sgd(start.parameters(), {.lr = 0.05, .momentum = 0.9}), local::diloco_outer(start.parameters()),
                                   set, normalizer,
                                   {.workers = 4, .local_steps = 3, .batch_size = 8, .seed = 5, .compression = int8, .streaming = streaming},
                                   std::nullopt, communicator);
      };
      const optim::Schedule schedule = optim::Constant{0.05};
      auto whole = make(local::InProcess{});
      whole.run_steps(schedule, 16);
      auto cut = make(comm);
      cut.run_steps(schedule, 10);
      check(cut.exchanges_in_flight() == 1, "an exchange is in flight after step 10");
      const std::filesystem::path file =
          std::filesystem::temp_directory_path() / ("distopt-mpi-streaming-" + std::to_string(::getpid()) + ".npz");
      std::string shared = file.string();
      int length = static_cast<int>(shared.size());
      MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD);
      shared.resize(static_cast<std::size_t>(length));
      MPI_Bcast(shared.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD);
      local::LocalCheckpoint::save(cut, shared);
      MPI_Barrier(MPI_COMM_WORLD);
      auto resumed = make(local::InProcess{});
      local::LocalCheckpoint::load(resumed, shared);
      resumed.run_steps(schedule, 16);
      const auto a = resumed.global_model().parameters().values(), b = whole.global_model().parameters().values();
      check(std::vector<float>(a.data(), a.data() + a.size()) == std::vector<float>(b.data(), b.data() + b.size()),
            "Streaming DiLoCo saved over MPI in flight resumes to the uninterrupted bits");
      MPI_Barrier(MPI_COMM_WORLD);
      if (rank == 0) std::filesystem::remove(shared);
    }

    // A checkpoint written by rank 0 holds all 4 workers, and both ranks resume from it.
    const std::filesystem::path file = std::filesystem::temp_directory_path() / ("distopt-mpi-" + std::to_string(::getpid()) + ".npz");
    std::string shared = file.string();
    int length = static_cast<int>(shared.size());
    MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD);
    shared.resize(static_cast<std::size_t>(length));
    MPI_Bcast(shared.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD);
    (void)train_run(local::SlowMo({.alpha = 1.0, .beta = 0.6}), local::InnerBuffers::maintain, comm, set, normalizer, shared);
    MPI_Barrier(MPI_COMM_WORLD);
    const Archive archive = Archive::load(shared);
    for (int k = 0; k < 4; ++k)
      check(archive.contains("worker." + std::to_string(k) + ".optimizer.kind"), "worker " + std::to_string(k) + " in the checkpoint");
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) std::filesystem::remove(shared);

    // A run cut after its first epoch resumes over MPI to the uninterrupted in-process model. Each
    // rank gets its own folder, as on machines that share no file system: only rank 0's holds
    // checkpoints, so the other rank can resume only from the bytes rank 0 broadcasts.
    {
      const std::filesystem::path folder =
          std::filesystem::temp_directory_path() / ("distopt-mpi-resume-" + std::to_string(::getpid()));
      const auto make = [&](auto communicator) {
        Model start = test_support::tiny_lenet();
        return local::LocalTrainer(start, Sgd(start.parameters(), {.lr = 0.05, .momentum = 0.9}), local::SlowMo({.beta = 0.6}), set,
                                   normalizer, {.workers = 4, .local_steps = 3, .batch_size = 8, .seed = 9}, std::nullopt, communicator);
      };
      const optim::Schedule schedule = optim::Cosine{.lr = 0.05, .t_max = 9};
      const train::RunData sets{nullptr, nullptr, nullptr, normalizer};
      auto reference = make(local::InProcess{});
      (void)train::run_local(reference, schedule, sets, {.epochs = 3});
      auto cut = make(comm);
      const auto first = train::run_local(cut, schedule, sets, {.epochs = 3, .out = folder, .resume = true, .stop_after = std::size_t{1}});
      check(first.status == train::Status::interrupted && first.epochs_done == 1, "the first MPI run stops after epoch 1");
      check(cut.communication().allreduce_seconds > 0, "the all-reduce time is measured over MPI");
      auto resumed = make(comm);
      const auto second = train::run_local(resumed, schedule, sets, {.epochs = 3, .out = folder, .resume = true});
      check(second.status == train::Status::completed && second.epochs_done == 3, "the resumed MPI run completes epoch 3");
      const auto a = resumed.global_model().parameters().values(), b = reference.global_model().parameters().values();
      check(max_relative({a.data(), a.data() + a.size()}, {b.data(), b.data() + b.size()}) <= 1e-5,
            "MPI resume from rank 0's checkpoint reaches the in-process model within 1e-5");
      check(resumed.communication().rounds == reference.communication().rounds, "the resumed run counts every round");
      MPI_Barrier(MPI_COMM_WORLD);
      std::filesystem::remove_all(folder);

      // A checkpoint rank 0 finds damaged is set aside, and every rank resumes from the one before
      // (here none: a fresh start) to the uninterrupted model; none waits for ever.
      std::filesystem::create_directories(folder);
      if (rank == 0) std::ofstream(folder / "1.npz") << "not an npz archive";
      MPI_Barrier(MPI_COMM_WORLD);
      auto restarted = make(comm);
      const auto again = train::run_local(restarted, schedule, sets, {.epochs = 3, .out = folder, .resume = true});
      check(again.status == train::Status::completed && again.epochs_done == 3, "a run over a damaged checkpoint completes on every rank");
      const auto c = restarted.global_model().parameters().values();
      check(max_relative({c.data(), c.data() + c.size()}, {b.data(), b.data() + b.size()}) <= 1e-5,
            "after a damaged checkpoint every rank starts afresh and reaches the in-process model within 1e-5");
      if (rank == 0) check(std::filesystem::exists(folder / "1.npz.damaged"), "the damaged checkpoint is kept aside as 1.npz.damaged");
      MPI_Barrier(MPI_COMM_WORLD);
      std::filesystem::remove_all(folder);
    }

    // Mismatched settings between ranks stop with a clear error on every rank.
    bool refused = false;
    try {
      Model start = test_support::tiny_lenet();
      local::LocalTrainer trainer(start, Sgd(start.parameters(), {.lr = 0.05}), local::LocalSgd{}, set, normalizer,
                                  {.workers = 4, .local_steps = static_cast<std::size_t>(3 + rank), .batch_size = 8}, std::nullopt, comm);
    } catch (const std::invalid_argument& e) {
      refused = std::string(e.what()).find("local_steps") != std::string::npos;
    }
    check(refused, "ranks with different H are refused naming the field");
  }
  int total = 0;
  MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) std::printf("%s\n", total == 0 ? "mpi equivalence: all checks passed" : "mpi equivalence: FAILED");
  MPI_Finalize();
  return total == 0 ? 0 : 1;
}
