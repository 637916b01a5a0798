// LocalTrainer across processes: a communicator over MPI (target distopt::mpi).
//
//   MPI_Init(&argc, &argv);
//   {
//     distopt::local::MpiCommunicator comm;   // MPI_COMM_WORLD
//     distopt::local::LocalTrainer trainer(model, inner, outer, train, normalizer, options, std::nullopt, comm);
//     trainer.run(...);                       // rank 0 evaluates, writes metrics and checkpoints
//   }
//   MPI_Finalize();
//
// Each rank hosts a contiguous block of the K logical workers (rank r: workers
// [r K / R, (r + 1) K / R)), running them on its OpenMP threads. A synchronisation adds the
// rank's workers in index order in double and sums the ranks' partial sums with one
// MPI_Allreduce over the flat buffer. The in-process communicator adds all K in index order, so
// the two differ only in how the double sum is associated: the averages agree to the last bit
// whenever those double sums are exact (the workers' float weights are close to each other, so
// they almost always are) and to 1e-16 relative otherwise, far below float precision; the tests
// check the float weights of both against each other.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <stop_token>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "distopt/core/archive.hpp"
#include "distopt/core/error.hpp"
#include "distopt/local/communicator.hpp"

namespace distopt::local {

/// Waits for a non-blocking MPI operation, sleeping `poll` between tests instead of spinning as a
/// blocking call does, so that a waiting rank leaves the cores to the ranks at work.
inline void wait_sleeping(MPI_Request& request, std::chrono::microseconds poll = std::chrono::microseconds(500)) {
  for (int done = 0;;) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done != 0) return;
    std::this_thread::sleep_for(poll);
  }
}

/// The MPI communicator: one rank per process of `comm` (MPI_COMM_WORLD by default). MPI must be
/// initialised before and finalised after its lifetime. Errors of MPI calls abort the job
/// (MPI's default handler), so a rank that dies never leaves the others waiting.
class MpiCommunicator {
 public:
  /// How the non-blocking collectives move on. Open MPI advances them only inside MPI calls:
  /// by default the trainer tests them between inner steps, so the link idles once it has
  /// drained what a test handed it until the next test; `progress_thread` adds a thread that
  /// calls into MPI every `poll` (MPI_Iprobe, which runs Open MPI's progress engine), which keeps
  /// the link busy through long steps. It needs MPI_Init_thread with MPI_THREAD_MULTIPLE (refused
  /// otherwise, naming it): a library cannot choose how its caller initialises MPI.
  struct Options {
    bool progress_thread = false;
    std::chrono::microseconds poll{500};
  };

  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD) : MpiCommunicator(comm, Options{}) {}
  MpiCommunicator(MPI_Comm comm, Options options) : comm_(comm) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    require<std::logic_error>(initialised != 0, "MpiCommunicator: MPI_Init has not been called");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &ranks_);
    if (options.progress_thread) {
      int provided = MPI_THREAD_SINGLE;
      MPI_Query_thread(&provided);
      require(provided == MPI_THREAD_MULTIPLE,
              "MpiCommunicator::Options.progress_thread needs MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...); MPI provides level ",
              provided);
      // Shared by the copies of this communicator (the trainer keeps one): the thread never
      // refers to a communicator object that may move.
      progress_ = std::make_shared<std::jthread>([comm = comm_, poll = options.poll](std::stop_token stop) {
        while (!stop.stop_requested()) {
          int flag = 0;
          MPI_Iprobe(MPI_ANY_SOURCE, progress_tag, comm, &flag, MPI_STATUS_IGNORE);
          std::this_thread::sleep_for(poll);
        }
      });
    }
  }

  /// Whether a progress thread moves the non-blocking collectives on.
  [[nodiscard]] bool progress_thread() const noexcept { return progress_ != nullptr; }

  [[nodiscard]] int rank() const noexcept { return rank_; }
  [[nodiscard]] int ranks() const noexcept { return ranks_; }
  [[nodiscard]] std::size_t first_worker(std::size_t workers) const noexcept {
    return workers * static_cast<std::size_t>(rank_) / static_cast<std::size_t>(ranks_);
  }
  [[nodiscard]] std::size_t local_workers(std::size_t workers) const noexcept {
    return workers * static_cast<std::size_t>(rank_ + 1) / static_cast<std::size_t>(ranks_) - first_worker(workers);
  }

  /// Sums `buffer` element-wise over all ranks, in place (MPI_Allreduce, in chunks below 2^31).
  void allreduce_sum(std::span<double> buffer) {
    constexpr std::size_t chunk = std::size_t{1} << 30;
    for (std::size_t begin = 0; begin < buffer.size(); begin += chunk) {
      const int count = static_cast<int>(std::min(chunk, buffer.size() - begin));
      MPI_Allreduce(MPI_IN_PLACE, buffer.data() + begin, count, MPI_DOUBLE, MPI_SUM, comm_);
    }
  }

  /// Rank 0's `bytes` on every rank (a checkpoint read by rank 0 alone, a decision of rank 0).
  void broadcast_bytes(std::vector<std::uint8_t>& bytes) {
    std::uint64_t size = bytes.size();
    MPI_Bcast(&size, 1, MPI_UINT64_T, 0, comm_);
    require(size < static_cast<std::uint64_t>(INT_MAX), "MpiCommunicator::broadcast_bytes: ", size,
            " bytes is more than one MPI message holds");
    bytes.resize(static_cast<std::size_t>(size));
    MPI_Bcast(bytes.data(), static_cast<int>(size), MPI_BYTE, 0, comm_);
  }

  /// Returns when every rank has called it. Waiting ranks sleep between polls instead of
  /// spinning, so a rank kept waiting while rank 0 works alone leaves it the cores.
  void barrier(std::chrono::microseconds poll = std::chrono::microseconds(500)) {
    MPI_Request request{};
    MPI_Ibarrier(comm_, &request);
    wait_sleeping(request, poll);
  }

  /// Every rank's `bytes`, gathered on rank 0 in rank order (empty elsewhere).
  [[nodiscard]] std::vector<std::vector<std::uint8_t>> gather_bytes(const std::vector<std::uint8_t>& bytes) {
    require(bytes.size() < static_cast<std::size_t>(INT_MAX), "MpiCommunicator::gather_bytes: ", bytes.size(),
            " bytes is more than one MPI message holds");
    const int size = static_cast<int>(bytes.size());
    std::vector<int> sizes(static_cast<std::size_t>(ranks_));
    MPI_Gather(&size, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, comm_);
    std::vector<int> offsets(static_cast<std::size_t>(ranks_), 0);
    std::vector<std::uint8_t> all;
    if (rank_ == 0) {
      std::size_t total = 0;
      for (std::size_t r = 0; r < sizes.size(); ++r) {
        offsets[r] = static_cast<int>(total);
        total += static_cast<std::size_t>(sizes[r]);
      }
      require(total < static_cast<std::size_t>(INT_MAX), "MpiCommunicator::gather_bytes: ", total, " bytes in all is too many");
      all.resize(total);
    }
    MPI_Gatherv(bytes.data(), size, MPI_BYTE, all.data(), sizes.data(), offsets.data(), MPI_BYTE, 0, comm_);
    std::vector<std::vector<std::uint8_t>> out;
    if (rank_ == 0)
      for (std::size_t r = 0; r < sizes.size(); ++r)
        out.emplace_back(all.begin() + offsets[r], all.begin() + offsets[r] + sizes[r]);
    return out;
  }

  /// A collective in flight: its request and the buffers MPI reads and writes until it completes
  /// (moving a Pending keeps them where they are: vectors move their storage).
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<int> counts, offsets;
    std::vector<std::uint8_t> sent, received;
    bool gather = false;
  };

  /// MPI_Iallreduce of `buffer` (summed over all ranks into it once waited for). The values go
  /// from a copy, not MPI_IN_PLACE: Open MPI's non-blocking all-reduce (libnbc) takes the binomial
  /// tree for an in-place one, whose root receives and sends the whole buffer twice each (2.5
  /// times the ring's time for 6.4 MB among 4 ranks at 100 Mbit/s, measured), and the ring only
  /// for separate buffers.
  [[nodiscard]] Pending start_allreduce_sum(std::span<double> buffer) {
    require(buffer.size() < static_cast<std::size_t>(INT_MAX), "MpiCommunicator::start_allreduce_sum: ", buffer.size(),
            " values is more than one MPI message holds");
    Pending p;
    p.sent.resize(buffer.size_bytes());
    std::memcpy(p.sent.data(), buffer.data(), buffer.size_bytes());
    MPI_Iallreduce(p.sent.data(), buffer.data(), static_cast<int>(buffer.size()), MPI_DOUBLE, MPI_SUM, comm_, &p.request);
    return p;
  }

  /// Every rank's `bytes` on every rank: the sizes first (a small blocking all-gather), then
  /// MPI_Iallgatherv of the bytes.
  [[nodiscard]] Pending start_allgather_bytes(const std::vector<std::uint8_t>& bytes) {
    require(bytes.size() < static_cast<std::size_t>(INT_MAX), "MpiCommunicator::start_allgather_bytes: ", bytes.size(),
            " bytes is more than one MPI message holds");
    Pending p;
    p.gather = true;
    p.sent = bytes;
    const int size = static_cast<int>(bytes.size());
    p.counts.resize(static_cast<std::size_t>(ranks_));
    p.offsets.resize(static_cast<std::size_t>(ranks_));
    MPI_Allgather(&size, 1, MPI_INT, p.counts.data(), 1, MPI_INT, comm_);
    std::size_t total = 0;
    for (std::size_t r = 0; r < p.counts.size(); ++r) {
      p.offsets[r] = static_cast<int>(total);
      total += static_cast<std::size_t>(p.counts[r]);
      require(total < static_cast<std::size_t>(INT_MAX), "MpiCommunicator::start_allgather_bytes: ", total, " bytes in all is too many");
    }
    p.received.resize(total);
    MPI_Iallgatherv(p.sent.data(), size, MPI_BYTE, p.received.data(), p.counts.data(), p.offsets.data(), MPI_BYTE, comm_,
                    &p.request);
    return p;
  }

  /// MPI_Test: moves the collective on (Open MPI progresses non-blocking collectives only inside
  /// MPI calls) and says whether it is complete.
  [[nodiscard]] bool test(Pending& p) {
    int done = 0;
    MPI_Test(&p.request, &done, MPI_STATUS_IGNORE);
    return done != 0;
  }

  /// Waits (sleeping between tests) until `p` completes; an all-gather's bytes per rank.
  [[nodiscard]] std::vector<std::vector<std::uint8_t>> wait(Pending& p) {
    wait_sleeping(p.request, std::chrono::microseconds(50));
    std::vector<std::vector<std::uint8_t>> parts;
    if (p.gather)
      for (std::size_t r = 0; r < p.counts.size(); ++r)
        parts.emplace_back(p.received.begin() + p.offsets[r], p.received.begin() + p.offsets[r] + p.counts[r]);
    return parts;
  }

  /// Throws std::invalid_argument on every rank, with rank 0's view in the message, unless all
  /// ranks pass the same `value` (K, H, the parameter count: a job launched with mismatched
  /// settings stops before its first round instead of hanging or averaging garbage).
  void require_same(std::uint64_t value, std::string_view what) {
    std::uint64_t low = value, high = value;
    MPI_Allreduce(MPI_IN_PLACE, &low, 1, MPI_UINT64_T, MPI_MIN, comm_);
    MPI_Allreduce(MPI_IN_PLACE, &high, 1, MPI_UINT64_T, MPI_MAX, comm_);
    require(low == high, "MpiCommunicator: ranks disagree on ", what, " (from ", low, " to ", high, " across ", ranks_,
            " ranks; rank ", rank_, " has ", value, ")");
  }

 private:
  static constexpr int progress_tag = 0x7d15;  // never sent: the probe only drives the progress engine

  MPI_Comm comm_;
  int rank_ = 0;
  int ranks_ = 1;
  std::shared_ptr<std::jthread> progress_;  // joined when the last copy goes
};
static_assert(Communicator<MpiCommunicator>);

}  // namespace distopt::local
