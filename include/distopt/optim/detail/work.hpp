// The fixed work list every optimizer loops over: blocks cut into chunks that never cross a block.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <omp.h>

#include "distopt/core/block.hpp"
#include "distopt/core/compiler.hpp"
#include "distopt/core/concepts.hpp"

DISTOPT_PR105593_OFF

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

/// Elements per tile: one cache line, one AVX-512 register of floats (8 doubles).
template <class T>
inline constexpr int tile_width = static_cast<int>(64 / sizeof(T));

/// Fixed-size Eigen view of N elements at data + i (read-only when `T` is const).
template <int N, class T>
[[nodiscard]] auto tile(T* data, std::ptrdiff_t i) {
  using Array = Eigen::Array<std::remove_const_t<T>, N, 1>;
  using View = Eigen::Map<std::conditional_t<std::is_const_v<T>, const Array, Array>>;
  return View(data + i);
}

/// Calls `body(i, width)` over an item: full tiles first (width an std::integral_constant equal to
/// tile_width<T>), then the remaining elements one at a time (width 1). Writing an update once as
/// a body over `tile<width>(...)` views gives one fused pass over memory, every intermediate in
/// registers, that Eigen vectorises whatever the user's flags (square roots included).
template <class T, class Body>
void for_each_tile(const WorkItem& item, Body&& body) {
  constexpr int width = tile_width<T>;
  std::ptrdiff_t i = item.begin;
  for (; i + width <= item.end; i += width) body(i, std::integral_constant<int, width>{});
  for (; i < item.end; ++i) body(i, std::integral_constant<int, 1>{});
}

/// torch.optim.SGD's momentum, shared by Sgdm and Lars.
template <class T>
struct Momentum {
  T* buffer;  ///< the momentum buffer, or nullptr when momentum is 0
  T mu;
  T keep;     ///< 1 - dampening
  bool first;
  bool nesterov;
};

/// One tile of a momentum step from the direction d (the gradient with its decay, for LARS also
/// scaled by the trust ratio):
///   b <- d on the first step, else mu * b + keep * d;  w <- w - lr * (d + mu * b) (nesterov) or
///   w - lr * b; without a buffer, w <- w - lr * d.
template <int N, class T, class Weights>
void momentum_step(Weights& w, const Eigen::Array<T, N, 1>& d, T lr, const Momentum<T>& m, std::ptrdiff_t i) {
  using Tile = Eigen::Array<T, N, 1>;
  if (m.buffer == nullptr) {
    w -= lr * d;
    return;
  }
  auto buf = tile<N>(m.buffer, i);
  const Tile b = m.first ? d : Tile(m.mu * buf + m.keep * d);
  buf = b;
  w -= m.nesterov ? Tile(lr * (d + m.mu * b)) : Tile(lr * b);
}

/// K running sums over the tiles of one item: per lane in T while tiles stream by, then added up
/// in double. The order is fixed by the item, never by the thread that runs it.
template <class T, int K>
struct TileSums {
  std::array<Eigen::Array<T, tile_width<T>, 1>, K> lanes;
  std::array<double, K> tail{};

  TileSums() {
    for (auto& lane : lanes) lane.setZero();
  }
  template <int N>
  void add(int k, const Eigen::Array<T, N, 1>& x) {
    if constexpr (N == tile_width<T>)
      lanes[static_cast<std::size_t>(k)] += x;
    else
      tail[static_cast<std::size_t>(k)] += static_cast<double>(x.sum());
  }
  [[nodiscard]] double total(int k) const {
    return static_cast<double>(lanes[static_cast<std::size_t>(k)].sum()) + tail[static_cast<std::size_t>(k)];
  }
};

/// True when every element of the item is finite. 0 * x is NaN exactly when x is NaN or infinite,
/// so one vectorised sum answers for the whole item (assumes IEEE semantics: no -ffast-math).
template <class T>
[[nodiscard]] bool all_finite(const T* data, const WorkItem& item) {
  const Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> x(data + item.begin, item.end - item.begin);
  return !std::isnan((x * T(0)).sum());
}

}  // namespace distopt::optim::detail

DISTOPT_PR105593_ON
