// Deterministic, splittable randomness: a counter-based generator keyed by (seed, stream, index).
#pragma once

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <numbers>

#include "distopt/core/error.hpp"

namespace distopt {

/// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3",
/// SC 2011): a bijection of a 128-bit counter under a 64-bit key, ten rounds of
///   (c0, c1, c2, c3) <- (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0)),
/// with the key bumped by the Weyl constants (W0, W1) between rounds. Being a pure function of
/// (key, counter), any worker, epoch or sample can draw its numbers without touching shared state.
struct Philox4x32 {
  using Counter = std::array<std::uint32_t, 4>;
  using Key = std::array<std::uint32_t, 2>;

  [[nodiscard]] static constexpr Counter apply(Counter c, Key k) noexcept {
    constexpr std::uint64_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
    constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
      if (round > 0) {
        k[0] += w0;
        k[1] += w1;
      }
      const std::uint64_t p0 = m0 * c[0];
      const std::uint64_t p1 = m1 * c[2];
      c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<std::uint32_t>(p1),
           static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<std::uint32_t>(p0)};
    }
    return c;
  }
};

/// SplitMix64's finaliser (Steele, Lea, Flood 2014): mixes a 64-bit value so that nearby inputs
/// give unrelated outputs. Used to turn a path of labels into a stream id.
[[nodiscard]] constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Where an `Rng` is in its sequence: enough to save in a checkpoint and resume exactly.
struct RngState {
  std::uint64_t seed = 0;
  std::uint64_t stream = 0;
  std::uint64_t block = 0;  ///< index of the next Philox block to compute
  std::uint32_t lane = 4;   ///< words of the current block already used (4: none left)
  friend bool operator==(const RngState&, const RngState&) = default;
};

/// A stream of random numbers: Philox4x32-10 with key = seed and counter = (block, stream).
///
/// `Rng(seed).split(worker).split(epoch)` names a stream by a path of labels; two different paths
/// give independent streams, and `at(i)` jumps to any position, so a sample's augmentation can
/// depend on (seed, epoch, sample) alone, whatever thread draws it. The distributions are written
/// here rather than taken from <random>, whose algorithms differ between standard libraries.
/// Satisfies UniformRandomBitGenerator, for use with std::shuffle and friends.
class Rng {
 public:
  using result_type = std::uint32_t;

  explicit Rng(std::uint64_t seed = 0, std::uint64_t stream = 0) noexcept
      : state_{.seed = seed, .stream = stream} {}
  /// Resumes a saved position; throws std::invalid_argument for a state no Rng can be in.
  explicit Rng(const RngState& state) : state_(state) {
    require(state.lane <= 4, "RngState: lane must be in [0, 4], got ", state.lane);
    require(state.lane == 4 || state.block > 0, "RngState: lane ", state.lane,
            " of a block before block 0");
    if (state_.lane < 4) words_ = compute(state_.block - 1);
  }

  /// The independent child stream labelled `label` (labels are any 64-bit values).
  [[nodiscard]] Rng split(std::uint64_t label) const noexcept {
    return Rng(state_.seed, mix64(state_.stream ^ mix64(label + 0x9E3779B97F4A7C15ull)));
  }
  [[nodiscard]] Rng split(std::initializer_list<std::uint64_t> path) const noexcept {
    Rng child = *this;
    for (std::uint64_t label : path) child = child.split(label);
    return child;
  }

  /// The same stream positioned at word `4 * block` (blocks are 128 bits).
  [[nodiscard]] Rng at(std::uint64_t block) const noexcept {
    Rng moved = *this;
    moved.state_.block = block;
    moved.state_.lane = 4;
    return moved;
  }

  [[nodiscard]] const RngState& state() const noexcept { return state_; }

  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }

  result_type operator()() noexcept { return next_u32(); }

  std::uint32_t next_u32() noexcept {
    if (state_.lane == 4) {
      words_ = compute(state_.block++);
      state_.lane = 0;
    }
    return words_[state_.lane++];
  }

  std::uint64_t next_u64() noexcept {
    const std::uint64_t hi = next_u32();
    return (hi << 32) | next_u32();
  }

  /// Uniform on [0, 1) with 24 random bits: every float of the form k / 2^24.
  float uniform() noexcept { return static_cast<float>(next_u32() >> 8) * 0x1.0p-24f; }

  /// Uniform on [0, 1) with 53 random bits.
  double uniform_double() noexcept { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

  /// Uniform on [low, high).
  double uniform(double low, double high) noexcept { return low + (high - low) * uniform_double(); }

  /// Uniform integer in [0, n) without bias (Lemire 2019, "Fast random integer generation in an
  /// interval", with rejection of the short remainder).
  std::uint32_t below(std::uint32_t n) {
    require(n > 0, "Rng::below: n must be positive, got ", n);
    std::uint64_t product = std::uint64_t{next_u32()} * n;
    auto low = static_cast<std::uint32_t>(product);
    if (low < n) {
      const std::uint32_t threshold = (0u - n) % n;
      while (low < threshold) {
        product = std::uint64_t{next_u32()} * n;
        low = static_cast<std::uint32_t>(product);
      }
    }
    return static_cast<std::uint32_t>(product >> 32);
  }

  /// True with probability p.
  bool bernoulli(double p) noexcept { return uniform_double() < p; }

  /// Standard normal by Box-Muller; each call uses two fresh uniforms, so the position in the
  /// stream after a draw never depends on a cached spare value.
  double normal() noexcept {
    const double u1 = 1.0 - uniform_double();  // (0, 1]: log is finite
    const double u2 = uniform_double();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
  double normal(double mean, double stddev) noexcept { return mean + stddev * normal(); }

  /// Fisher-Yates shuffle of [first, last) with `below`, identical on every platform.
  template <class RandomIt>
  void shuffle(RandomIt first, RandomIt last) {
    const auto n = last - first;
    for (auto i = n - 1; i > 0; --i) {
      const auto j = static_cast<decltype(i)>(below(static_cast<std::uint32_t>(i + 1)));
      using std::swap;
      swap(first[i], first[j]);
    }
  }

 private:
  [[nodiscard]] Philox4x32::Counter compute(std::uint64_t block) const noexcept {
    return Philox4x32::apply(
        {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
         static_cast<std::uint32_t>(state_.stream), static_cast<std::uint32_t>(state_.stream >> 32)},
        {static_cast<std::uint32_t>(state_.seed), static_cast<std::uint32_t>(state_.seed >> 32)});
  }

  RngState state_;
  Philox4x32::Counter words_{};
};

}  // namespace distopt
