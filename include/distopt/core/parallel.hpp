// OpenMP with fixed chunking: the same bits for 1, 2 or 16 threads.
//
// Floating-point addition is not associative, so a reduction whose grouping follows the thread
// count gives different bits on different machines. Here work is cut into chunks whose size is a
// constant of the algorithm, never of the thread count; each chunk's partial result lands in its
// own slot, and the slots are combined in chunk order by one thread. Threads only decide who
// computes a chunk, never how results are grouped.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include <omp.h>

#include "distopt/core/error.hpp"

namespace distopt::parallel {

/// Threads the next parallel region will use (omp_get_max_threads).
[[nodiscard]] inline int max_threads() noexcept { return omp_get_max_threads(); }

/// True inside an active parallel region, where the library's loops run on the calling thread
/// alone (a LocalTrainer worker thread must not start a nested team).
[[nodiscard]] inline bool in_parallel() noexcept { return omp_in_parallel() != 0; }

/// Sets the thread count for the lifetime of the object, then restores the previous one.
class ThreadCount {
 public:
  explicit ThreadCount(int threads) : previous_(omp_get_max_threads()) {
    require(threads >= 1, "ThreadCount: threads must be >= 1, got ", threads);
    omp_set_num_threads(threads);
  }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
  ~ThreadCount() { omp_set_num_threads(previous_); }

 private:
  int previous_;
};

/// [0, size) cut into chunks of `chunk` elements (the last one shorter).
struct Chunks {
  std::ptrdiff_t size;
  std::ptrdiff_t chunk;

  [[nodiscard]] std::ptrdiff_t count() const noexcept { return size <= 0 ? 0 : (size + chunk - 1) / chunk; }
  [[nodiscard]] std::ptrdiff_t begin(std::ptrdiff_t i) const noexcept { return i * chunk; }
  [[nodiscard]] std::ptrdiff_t end(std::ptrdiff_t i) const noexcept { return std::min(size, (i + 1) * chunk); }
};

/// Calls `body(begin, end)` for every chunk of [0, size), chunks spread over the OpenMP team.
/// `body` must only write to data its own chunk owns.
template <class Body>
void for_each_chunk(std::ptrdiff_t size, std::ptrdiff_t chunk, Body&& body) {
  const Chunks chunks{size, chunk};
  const std::ptrdiff_t n = chunks.count();
#pragma omp parallel for schedule(static) if (n > 1 && !omp_in_parallel())
  for (std::ptrdiff_t i = 0; i < n; ++i) body(chunks.begin(i), chunks.end(i));
}

/// Sum of `partial(begin, end)` over the chunks of [0, size), added in chunk order, so the result
/// does not depend on the thread count. `scratch` holds one slot per chunk (at least
/// Chunks{size, chunk}.count()); pass it to keep a hot loop free of allocation.
template <class T, class Partial>
[[nodiscard]] T ordered_sum(std::ptrdiff_t size, std::ptrdiff_t chunk, Partial&& partial,
                            std::span<T> scratch) {
  const Chunks chunks{size, chunk};
  const std::ptrdiff_t n = chunks.count();
  require(static_cast<std::ptrdiff_t>(scratch.size()) >= n, "ordered_sum: scratch holds ",
          scratch.size(), " slots, ", n, " chunks need one each");
#pragma omp parallel for schedule(static) if (n > 1 && !omp_in_parallel())
  for (std::ptrdiff_t i = 0; i < n; ++i) scratch[static_cast<std::size_t>(i)] = partial(chunks.begin(i), chunks.end(i));
  T total{};
  for (std::ptrdiff_t i = 0; i < n; ++i) total += scratch[static_cast<std::size_t>(i)];
  return total;
}

/// As above, with scratch allocated for the call.
template <class T, class Partial>
[[nodiscard]] T ordered_sum(std::ptrdiff_t size, std::ptrdiff_t chunk, Partial&& partial) {
  std::vector<T> scratch(static_cast<std::size_t>(Chunks{size, chunk}.count()));
  return ordered_sum<T>(size, chunk, std::forward<Partial>(partial), std::span<T>(scratch));
}

}  // namespace distopt::parallel
