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
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    require<std::logic_error>(initialised != 0, "MpiCommunicator: MPI_Init has not been called");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &ranks_);
  }

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
  MPI_Comm comm_;
  int rank_ = 0;
  int ranks_ = 1;
};
static_assert(Communicator<MpiCommunicator>);

}  // namespace distopt::local
