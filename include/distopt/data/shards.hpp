// Partitions of a dataset among K workers: IID class-balanced, Dirichlet non-IID, label shards.
//
// Every function returns K lists of sample indices (each in increasing order) that together hold
// every sample exactly once, a pure function of the labels, K, the options and the seed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/data/cifar.hpp"
#include "distopt/data/dataset.hpp"

namespace distopt::data {

/// shards[k] = the indices of the samples worker k owns.
using Shards = std::vector<std::vector<std::size_t>>;

namespace detail::shards {

inline constexpr std::uint64_t stream = 0x5A4D;

inline std::vector<std::vector<std::size_t>> members_by_class(ClassIds labels, std::size_t classes, std::string_view who) {
  std::vector<std::vector<std::size_t>> members(classes);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    require(labels[i] >= 0 && static_cast<std::size_t>(labels[i]) < classes, who, ": label of sample ", i, " is ", labels[i],
            ", must be in [0, ", classes, ")");
    members[static_cast<std::size_t>(labels[i])].push_back(i);
  }
  return members;
}

inline void check_workers(std::size_t workers, std::size_t samples, std::string_view who) {
  require(workers > 0, who, ": workers must be positive");
  require(workers <= samples, who, ": ", workers, " workers for ", samples, " samples leaves a worker without data");
}

inline Shards sorted(Shards shards) {
  for (auto& shard : shards) std::sort(shard.begin(), shard.end());
  return shards;
}

/// Gamma(shape, 1) by Marsaglia and Tsang (2000), "A simple method for generating gamma
/// variables", with Gamma(a) = Gamma(a + 1) * U^(1/a) for a < 1.
inline double gamma(Rng& rng, double shape) {
  if (shape < 1.0) {
    const double u = 1.0 - rng.uniform_double();  // (0, 1]
    return gamma(rng, shape + 1.0) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = 0.0, v = 0.0;
    do {
      x = rng.normal();
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = rng.uniform_double();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

}  // namespace detail::shards

/// IID shards, class-balanced: each class's samples, in a seeded order, are dealt to the workers
/// in turn, the deal continuing across classes, so every worker holds n_c / K samples of every
/// class c (+-1) and N / K samples in all (+-1). Throws std::invalid_argument for workers = 0,
/// more workers than samples or a label >= classes.
[[nodiscard]] inline Shards iid_shards(ClassIds labels, std::size_t workers, std::uint64_t seed,
                                       std::size_t classes = any_label) {
  detail::shards::check_workers(workers, labels.size(), "iid_shards");
  auto members = detail::shards::members_by_class(labels, classes, "iid_shards");
  const Rng root = Rng(seed).split({detail::shards::stream, 1});
  Shards shards(workers);
  std::size_t next = 0;
  for (std::size_t c = 0; c < classes; ++c) {
    Rng rng = root.split(c);
    rng.shuffle(members[c].begin(), members[c].end());
    for (const std::size_t sample : members[c]) {
      shards[next].push_back(sample);
      next = (next + 1) % workers;
    }
  }
  return detail::shards::sorted(std::move(shards));
}

/// Options of dirichlet_shards: concentration `alpha` (small: each worker sees few classes;
/// large: close to IID), and the fewest samples a worker may get (the proportions are drawn
/// again, from the next stream, until every worker has that many; at most 1000 draws).
struct DirichletOptions {
  double alpha = 0.5;
  std::size_t min_samples = 1;
};

/// IID shards of `samples` samples without classes (a regression's): a seeded permutation dealt
/// to the workers in turn, so each holds N / K samples (+-1).
[[nodiscard]] inline Shards iid_shards(std::size_t samples, std::size_t workers, std::uint64_t seed) {
  detail::shards::check_workers(workers, samples, "iid_shards");
  std::vector<std::size_t> order(samples);
  std::iota(order.begin(), order.end(), std::size_t{0});
  Rng rng = Rng(seed).split({detail::shards::stream, 4});
  rng.shuffle(order.begin(), order.end());
  Shards shards(workers);
  for (std::size_t i = 0; i < samples; ++i) shards[i % workers].push_back(order[i]);
  return detail::shards::sorted(std::move(shards));
}

/// IID shards of any data set: class-balanced (above) where its targets are classes, a seeded
/// deal otherwise.
template <Dataset D>
[[nodiscard]] Shards iid_shards(const D& data, std::size_t workers, std::uint64_t seed) {
  const TargetInfo info = data.target_info();
  if (!info.are_classes()) return iid_shards(data.size(), workers, seed);
  return iid_shards(ClassIds(class_ids(data, "iid_shards")), workers, seed, info.classes);
}

/// Non-IID shards as in Hsu, Qi, Brown 2019 ("Measuring the effects of non-identical data
/// distribution for federated visual classification"): for every class c, proportions
/// p_c ~ Dirichlet(alpha * 1_K) over the workers, and the class's samples (in a seeded order) cut
/// at round(n_c * cumsum(p_c)). Throws std::invalid_argument naming the field for alpha not
/// positive and finite, workers = 0, more workers than samples, or a min_samples no draw meets.
[[nodiscard]] inline Shards dirichlet_shards(ClassIds labels, std::size_t workers, std::uint64_t seed,
                                             const DirichletOptions& options = {},
                                             std::size_t classes = cifar100::fine_classes) {
  require(std::isfinite(options.alpha) && options.alpha > 0.0, "DirichletOptions.alpha must be positive and finite, got ",
          options.alpha);
  detail::shards::check_workers(workers, labels.size(), "dirichlet_shards");
  require(options.min_samples * workers <= labels.size(), "DirichletOptions.min_samples: ", options.min_samples, " for each of ",
          workers, " workers is more than the ", labels.size(), " samples");
  const auto members = detail::shards::members_by_class(labels, classes, "dirichlet_shards");
  constexpr int attempts = 1000;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    const Rng root = Rng(seed).split({detail::shards::stream, 2, static_cast<std::uint64_t>(attempt)});
    Shards shards(workers);
    std::vector<double> p(workers);
    for (std::size_t c = 0; c < classes; ++c) {
      if (members[c].empty()) continue;
      Rng rng = root.split(c);
      std::vector<std::size_t> order = members[c];
      rng.shuffle(order.begin(), order.end());
      double total = 0.0;
      for (auto& x : p) total += (x = detail::shards::gamma(rng, options.alpha));
      if (!(total > 0.0)) {  // every draw underflowed (tiny alpha): the class goes to one worker
        std::fill(p.begin(), p.end(), 0.0);
        p[rng.below(static_cast<std::uint32_t>(workers))] = total = 1.0;
      }
      const double n = static_cast<double>(order.size());
      double cumulative = 0.0;
      std::size_t begin = 0;
      for (std::size_t k = 0; k < workers; ++k) {
        cumulative += p[k];
        const std::size_t end = k + 1 == workers ? order.size()
                                                 : std::min(order.size(), static_cast<std::size_t>(std::llround(n * cumulative / total)));
        for (std::size_t i = begin; i < std::max(begin, end); ++i) shards[k].push_back(order[i]);
        begin = std::max(begin, end);
      }
    }
    const bool enough = std::all_of(shards.begin(), shards.end(), [&](const auto& s) { return s.size() >= options.min_samples; });
    if (enough) return detail::shards::sorted(std::move(shards));
  }
  fail("dirichlet_shards: no Dirichlet(alpha = ", options.alpha, ") draw in ", attempts,
       " gave every one of the ", workers, " workers DirichletOptions.min_samples = ", options.min_samples,
       " samples; raise alpha or lower min_samples");
}

/// Pathological non-IID shards (McMahan et al. 2017, "Communication-efficient learning of deep
/// networks from decentralized data"): each worker holds `classes_per_worker` classes. The K*c
/// slots take the classes in a seeded cyclic order (slot s holds class order[s mod C]), worker k
/// takes slots k*c .. k*c + c - 1 (c distinct classes), and each class's samples are shared
/// evenly (+-1) among its slots. Needs K * c >= C, so no class is left out, and c <= C.
[[nodiscard]] inline Shards label_shards(ClassIds labels, std::size_t workers,
                                         std::size_t classes_per_worker, std::uint64_t seed,
                                         std::size_t classes = cifar100::fine_classes) {
  detail::shards::check_workers(workers, labels.size(), "label_shards");
  auto members = detail::shards::members_by_class(labels, classes, "label_shards");
  std::vector<std::size_t> present;
  for (std::size_t c = 0; c < classes; ++c)
    if (!members[c].empty()) present.push_back(c);
  const std::size_t n_classes = present.size();
  require(classes_per_worker > 0 && classes_per_worker <= n_classes, "label_shards: classes_per_worker must be in [1, ",
          n_classes, "] (the classes present), got ", classes_per_worker);
  require(workers * classes_per_worker >= n_classes, "label_shards: ", workers, " workers x ", classes_per_worker,
          " classes_per_worker = ", workers * classes_per_worker, " slots cannot hold all ", n_classes,
          " classes; raise classes_per_worker");
  const Rng root = Rng(seed).split({detail::shards::stream, 3});
  Rng order_rng = root.split(0);
  order_rng.shuffle(present.begin(), present.end());
  const std::size_t slots = workers * classes_per_worker;
  Shards shards(workers);
  for (std::size_t position = 0; position < n_classes; ++position) {
    const std::size_t c = present[position];
    Rng rng = root.split(1 + c);
    rng.shuffle(members[c].begin(), members[c].end());
    // The slots of this class: position, position + C, position + 2C, ...
    std::vector<std::size_t> owners;
    for (std::size_t s = position; s < slots; s += n_classes) owners.push_back(s / classes_per_worker);
    const std::size_t n = members[c].size(), parts = owners.size();
    for (std::size_t part = 0; part < parts; ++part)
      for (std::size_t i = part * n / parts; i < (part + 1) * n / parts; ++i) shards[owners[part]].push_back(members[c][i]);
  }
  return detail::shards::sorted(std::move(shards));
}

/// shard_class_counts(shards, labels)[k][c]: how many samples of class c worker k holds (the
/// class-balance table of a dataset card).
[[nodiscard]] inline std::vector<std::vector<std::size_t>> shard_class_counts(const Shards& shards,
                                                                              ClassIds labels,
                                                                              std::size_t classes = cifar100::fine_classes) {
  std::vector<std::vector<std::size_t>> counts(shards.size(), std::vector<std::size_t>(classes, 0));
  for (std::size_t k = 0; k < shards.size(); ++k)
    for (const std::size_t i : shards[k]) {
      require(i < labels.size() && labels[i] >= 0 && static_cast<std::size_t>(labels[i]) < classes, "shard_class_counts: sample ",
              i, " of shard ", k, " is outside the labels or its label is out of range");
      ++counts[k][static_cast<std::size_t>(labels[i])];
    }
  return counts;
}

}  // namespace distopt::data
