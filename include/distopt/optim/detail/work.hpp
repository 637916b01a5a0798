// The fixed work list every optimizer loops over: blocks cut into chunks that never cross a block.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <omp.h>

#include "distopt/core/block.hpp"
#include "distopt/core/concepts.hpp"

namespace distopt::optim::detail {

/// Elements per work item: 32 KiB of floats per stream, so an item's few streams stay in L2
/// while Eigen makes several passes over them, and 1e7 parameters still give ~1200 items to share.
inline constexpr std::ptrdiff_t work_chunk = 8192;

/// A contiguous piece of one block.
struct WorkItem {
  std::ptrdiff_t begin;
  std::ptrdiff_t end;
  std::size_t block;
};

/// Every block cut into `work_chunk` pieces, in buffer order. Padding between blocks is in no item:
/// it is zero and stays zero without being touched.
[[nodiscard]] inline std::vector<WorkItem> make_work(std::span<const Block> blocks) {
  std::vector<WorkItem> items;
  for (std::size_t b = 0; b < blocks.size(); ++b)
    for (std::ptrdiff_t begin = blocks[b].offset; begin < blocks[b].end(); begin += work_chunk)
      items.push_back({begin, std::min(begin + work_chunk, blocks[b].end()), b});
  return items;
}

/// Runs `body(item)` for every item, items shared statically over the OpenMP team (each thread a
/// contiguous run of memory). Elementwise updates give the same bits for any thread count.
template <class Body>
void for_each_item(std::span<const WorkItem> items, Body&& body) {
  const auto n = static_cast<std::ptrdiff_t>(items.size());
#pragma omp parallel for schedule(static) if (n > 1 && !omp_in_parallel())
  for (std::ptrdiff_t i = 0; i < n; ++i) body(items[static_cast<std::size_t>(i)]);
}

/// Per-block sums of `partial(item)` (a fixed-size array of sums per item): each item's partial
/// lands in its own slot, then one thread adds the slots of each block in item order, so a block's
/// sum has the same bits for any thread count. `slots` holds one row per item, `sums` one per block.
template <int Width, class Partial>
void block_sums(std::span<const WorkItem> items, Partial&& partial,
                std::vector<Eigen::Array<double, Width, 1>>& slots,
                std::vector<Eigen::Array<double, Width, 1>>& sums) {
  slots.resize(items.size());
  const auto n = static_cast<std::ptrdiff_t>(items.size());
#pragma omp parallel for schedule(static) if (n > 1 && !omp_in_parallel())
  for (std::ptrdiff_t i = 0; i < n; ++i)
    slots[static_cast<std::size_t>(i)] = partial(items[static_cast<std::size_t>(i)]);
  for (auto& s : sums) s.setZero();
  for (std::size_t i = 0; i < items.size(); ++i) sums[items[i].block] += slots[i];
}

/// Eigen array view of one item of a flat buffer (read-only when `T` is const).
template <class T>
[[nodiscard]] auto segment(T* data, const WorkItem& item) {
  using Array = Eigen::Array<std::remove_const_t<T>, Eigen::Dynamic, 1>;
  using View = Eigen::Map<std::conditional_t<std::is_const_v<T>, const Array, Array>>;
  return View(data + item.begin, item.end - item.begin);
}

/// True when every element of the item is finite. 0 * x is NaN exactly when x is NaN or infinite,
/// so one vectorised sum answers for the whole item (assumes IEEE semantics: no -ffast-math).
template <class T>
[[nodiscard]] bool all_finite(const T* data, const WorkItem& item) {
  const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> x(data + item.begin, item.end - item.begin);
  return !std::isnan((x * T(0)).sum());
}

}  // namespace distopt::optim::detail
