// Communicators: how LocalTrainer's workers agree on an average, and what that would cost on a network.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "distopt/core/error.hpp"

namespace distopt::local {

/// What LocalTrainer needs of the processes it runs across.
///
/// Contract: `ranks()` processes take part, this one is `rank()`; LocalTrainer hosts on each rank
/// the workers of `first_worker(K)` .. `first_worker(K) + local_workers(K)`, adds their buffers in
/// worker order into one double buffer, and calls `allreduce_sum(buffer)`, after which every rank
/// holds the sum over all ranks. `broadcast_bytes(bytes)` leaves rank 0's bytes on every rank (the
/// initial model, a checkpoint rank 0 read, a decision rank 0 took), `gather_bytes(bytes)` returns
/// every rank's bytes on rank 0 in rank order (nothing elsewhere: the workers of a checkpoint),
/// `barrier()` returns when every rank has called it, and `require_same(value, what)` throws on
/// every rank, naming `what`, unless all ranks pass the same value. Every one of them is called
/// by every rank. The in-process communicator has one rank and does nothing (gather_bytes returns
/// its own bytes); MpiCommunicator (local/mpi.hpp) runs MPI's collectives.
///
/// Non-blocking forms, for exchanges that overlap the inner steps (Streaming DiLoCo):
/// `start_allreduce_sum(buffer)` and `start_allgather_bytes(bytes)` start the collective and
/// return a `Pending`; `buffer` must stay where it is until `wait(pending)` returns, which it
/// does once the collective is complete, with every rank's bytes in rank order for an all-gather
/// (nothing for an all-reduce). `test(pending)` moves the collective on and says whether it is
/// complete. Collectives start in the same order on every rank.
template <class C>
concept Communicator = requires(C& c, const C& cc, std::span<double> buffer, std::size_t workers, std::vector<std::uint8_t>& bytes,
                                const std::vector<std::uint8_t>& mine, std::uint64_t value, std::string_view what,
                                typename C::Pending& pending) {
  requires std::movable<typename C::Pending>;
  { c.start_allreduce_sum(buffer) } -> std::same_as<typename C::Pending>;
  { c.start_allgather_bytes(mine) } -> std::same_as<typename C::Pending>;
  { c.test(pending) } -> std::convertible_to<bool>;
  { c.wait(pending) } -> std::same_as<std::vector<std::vector<std::uint8_t>>>;
  { cc.rank() } -> std::convertible_to<int>;
  { cc.ranks() } -> std::convertible_to<int>;
  { cc.first_worker(workers) } -> std::convertible_to<std::size_t>;
  { cc.local_workers(workers) } -> std::convertible_to<std::size_t>;
  c.allreduce_sum(buffer);
  c.broadcast_bytes(bytes);
  { c.gather_bytes(mine) } -> std::same_as<std::vector<std::vector<std::uint8_t>>>;
  c.barrier();
  c.require_same(value, what);
};

/// All K workers in this process: the average is a sum in worker order, nothing to send.
struct InProcess {
  [[nodiscard]] int rank() const noexcept { return 0; }
  [[nodiscard]] int ranks() const noexcept { return 1; }
  [[nodiscard]] std::size_t first_worker(std::size_t) const noexcept { return 0; }
  [[nodiscard]] std::size_t local_workers(std::size_t workers) const noexcept { return workers; }
  void allreduce_sum(std::span<double>) noexcept {}
  void broadcast_bytes(std::vector<std::uint8_t>&) noexcept {}
  [[nodiscard]] std::vector<std::vector<std::uint8_t>> gather_bytes(const std::vector<std::uint8_t>& bytes) const { return {bytes}; }
  void barrier() noexcept {}
  void require_same(std::uint64_t, std::string_view) noexcept {}

  /// A collective of one rank is complete when it starts.
  struct Pending {
    std::vector<std::vector<std::uint8_t>> parts;
  };
  [[nodiscard]] Pending start_allreduce_sum(std::span<double>) const { return {}; }
  [[nodiscard]] Pending start_allgather_bytes(const std::vector<std::uint8_t>& bytes) const { return {{bytes}}; }
  [[nodiscard]] bool test(Pending&) const noexcept { return true; }
  [[nodiscard]] std::vector<std::vector<std::uint8_t>> wait(Pending& pending) const { return std::move(pending.parts); }
};
static_assert(Communicator<InProcess>);

/// Rank 0's `value` on every rank of `comm`: for what rank 0 decides alone (a finished run, a
/// setting read from its files), so that all ranks take the same branch to the next collective.
template <class Comm, class T>
  requires std::is_trivially_copyable_v<T>
void broadcast_value(Comm& comm, T& value) {
  if (comm.ranks() <= 1) return;
  std::vector<std::uint8_t> bytes(sizeof(T));
  std::memcpy(bytes.data(), &value, sizeof(T));
  comm.broadcast_bytes(bytes);
  std::memcpy(&value, bytes.data(), sizeof(T));
}

/// Rank 0's `values` on every rank of `comm` (the initial model, an average rank 0 computed).
template <class Comm, class T>
  requires std::is_trivially_copyable_v<T>
void broadcast_values(Comm& comm, std::span<T> values) {
  if (comm.ranks() <= 1) return;
  const auto* raw = reinterpret_cast<const std::uint8_t*>(values.data());
  std::vector<std::uint8_t> bytes(raw, raw + values.size_bytes());
  comm.broadcast_bytes(bytes);
  std::memcpy(values.data(), bytes.data(), bytes.size());
}

/// Rank 0's `text` on every rank of `comm`.
template <class Comm>
void broadcast_value(Comm& comm, std::string& text) {
  if (comm.ranks() <= 1) return;
  std::vector<std::uint8_t> bytes(text.begin(), text.end());
  comm.broadcast_bytes(bytes);
  text.assign(bytes.begin(), bytes.end());
}

/// A simple model of a network for the communication accounting: every message pays `latency`
/// seconds, and a link carries `bandwidth` bytes per second. Defaults: 10 Gbit/s Ethernet with
/// 20 microseconds per message, a common cluster interconnect.
struct NetworkModel {
  double latency = 20e-6;
  double bandwidth = 1.25e9;

  /// Time of a ring all-reduce of `bytes` among `k` processes (Patarasuk and Yuan 2009):
  /// 2 (k - 1) messages of bytes / k each, so 2 (k - 1) latency + 2 (k - 1) / k * bytes / bandwidth.
  [[nodiscard]] double ring_allreduce_seconds(double bytes, std::size_t k) const {
    require(std::isfinite(latency) && latency >= 0, "NetworkModel.latency must be >= 0, got ", latency);
    require(std::isfinite(bandwidth) && bandwidth > 0, "NetworkModel.bandwidth must be positive, got ", bandwidth);
    if (k <= 1) return 0.0;
    const double steps = 2.0 * static_cast<double>(k - 1);
    return steps * latency + steps / static_cast<double>(k) * bytes / bandwidth;
  }

  /// Time of a ring all-gather of one `payload`-byte message from each of `k` processes: k - 1
  /// steps, each forwarding one message, so (k - 1) (latency + payload / bandwidth).
  [[nodiscard]] double ring_allgather_seconds(double payload, std::size_t k) const {
    require(std::isfinite(latency) && latency >= 0, "NetworkModel.latency must be >= 0, got ", latency);
    require(std::isfinite(bandwidth) && bandwidth > 0, "NetworkModel.bandwidth must be positive, got ", bandwidth);
    if (k <= 1) return 0.0;
    const auto steps = static_cast<double>(k - 1);
    return steps * (latency + payload / bandwidth);
  }
};

/// Communication of a run so far: all-reduce rounds, the values and bytes each worker would send
/// and receive (ring all-reduce: 2 (K - 1) / K of the buffer each way), and the modelled time.
struct CommunicationCost {
  std::int64_t rounds = 0;
  std::int64_t allreduce_values = 0;   ///< values reduced (parameters, plus averaged buffers)
  double bytes_per_worker = 0;         ///< sent by each worker (and as much received)
  double modelled_seconds = 0;
  double measured_seconds = 0;         ///< time spent synchronising in this process (sum, all-reduce, outer step)
  double allreduce_seconds = 0;        ///< of which inside the communicator's all-reduce (0 in process)

  CommunicationCost& operator+=(const CommunicationCost& o) {
    rounds += o.rounds;
    allreduce_values += o.allreduce_values;
    bytes_per_worker += o.bytes_per_worker;
    modelled_seconds += o.modelled_seconds;
    measured_seconds += o.measured_seconds;
    allreduce_seconds += o.allreduce_seconds;
    return *this;
  }
};

/// The cost of one all-reduce of `values` elements of `value_bytes` each among `k` workers.
[[nodiscard]] inline CommunicationCost allreduce_cost(std::int64_t values, std::size_t value_bytes, std::size_t k,
                                                      const NetworkModel& network) {
  const double bytes = static_cast<double>(values) * static_cast<double>(value_bytes);
  CommunicationCost c;
  c.rounds = 1;
  c.allreduce_values = values;
  c.bytes_per_worker = k <= 1 ? 0.0 : 2.0 * static_cast<double>(k - 1) / static_cast<double>(k) * bytes;
  c.modelled_seconds = network.ring_allreduce_seconds(bytes, k);
  return c;
}

}  // namespace distopt::local
