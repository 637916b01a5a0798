// Compressed synchronisation: what each LocalTrainer worker sends instead of its float32 model.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "distopt/core/error.hpp"
#include "distopt/local/communicator.hpp"

namespace distopt::local {

/// How a worker's message is encoded.
///   none   the float32 model through the all-reduce (LocalTrainer's default path)
///   fp32   the float32 model through the gather path: the uncompressed baseline of the others,
///          the same bits as `none` in one process, and across MPI ranks always
///   fp16, bf16   the pseudo-gradient x_k - x rounded to IEEE half or bfloat16 (to nearest even)
///   int8   the pseudo-gradient in blocks of `block` values, each with a float32 scale
///          s = max|v| / 127 and q = round(v / s) in [-127, 127]
///   topk   the ceil(fraction n) pseudo-gradient values of largest magnitude (ties: lower index
///          first), as (uint32 index, float32 value) pairs; the rest are taken as zero
enum class Codec { none, fp32, fp16, bf16, int8, topk };

inline constexpr std::array<std::string_view, 6> codec_names = {"none", "fp32", "fp16", "bf16", "int8", "topk"};

[[nodiscard]] inline std::string to_string(Codec codec) { return std::string(codec_names[static_cast<std::size_t>(codec)]); }

/// The codec named `name`; throws std::invalid_argument listing the names otherwise.
[[nodiscard]] inline Codec parse_codec(std::string_view name) {
  for (std::size_t i = 0; i < codec_names.size(); ++i)
    if (codec_names[i] == name) return static_cast<Codec>(i);
  fail("unknown codec '", name, "' (none, fp32, fp16, bf16, int8, topk)");
}

/// What each worker sends at a synchronisation, and whether it keeps what compression lost.
///
/// With `error_feedback` (Seide et al. 2014, "1-bit stochastic gradient descent"; Karimireddy et
/// al. 2019, "Error feedback fixes SignSGD"), worker k keeps a residual e_k: it sends
///   m_k = C(delta_k + e_k),   e_k <- delta_k + e_k - D(m_k),
/// delta_k = x_k - x its pseudo-gradient, so nothing is lost for good: what was sent plus the
/// residual is what would have been sent uncompressed. The receiver rebuilds x_k as x + D(m_k)
/// and averages those exactly, in double, in worker order.
struct Compression {
  Codec codec = Codec::none;
  std::size_t block = 256;    ///< int8: values per scale
  double fraction = 0.01;     ///< topk: share of the values sent
  bool error_feedback = false;

  /// Whether the gather path runs (every codec but `none`).
  [[nodiscard]] bool gathers() const noexcept { return codec != Codec::none; }
  /// Whether the message is the pseudo-gradient (fp16 .. topk) rather than the model (none, fp32).
  [[nodiscard]] bool lossy() const noexcept { return codec != Codec::none && codec != Codec::fp32; }
  /// Whether the message is summed by an all-reduce in its own format (the casts) rather than
  /// gathered whole (int8 and topk, whose payloads do not add up as they are).
  [[nodiscard]] bool reducible() const noexcept {
    return codec == Codec::none || codec == Codec::fp32 || codec == Codec::fp16 || codec == Codec::bf16;
  }
  /// Bytes a value takes on the wire for the casts.
  [[nodiscard]] std::size_t cast_bytes() const noexcept { return codec == Codec::fp16 || codec == Codec::bf16 ? 2 : 4; }

  /// "fp16", "int8/256", "top1%", with "+ef" for error feedback: the label of reports.
  [[nodiscard]] std::string label() const {
    std::string s = to_string(codec);
    if (codec == Codec::int8) s += "/" + std::to_string(block);
    if (codec == Codec::topk) {
      const double percent = fraction * 100.0;
      char text[32];
      std::snprintf(text, sizeof text, "top%g%%", percent);
      s = text;
    }
    if (error_feedback && lossy()) s += "+ef";
    return s;
  }

  void validate() const {
    require(block > 0, "Compression.block must be positive");
    require(std::isfinite(fraction) && fraction > 0.0 && fraction <= 1.0, "Compression.fraction must be in (0, 1], got ", fraction);
  }

  /// Values topk sends out of n.
  [[nodiscard]] std::size_t topk_count(std::size_t n) const {
    return std::min(n, static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(n))));
  }

  /// Bytes of one message of n values.
  [[nodiscard]] std::size_t payload_bytes(std::size_t n) const {
    switch (codec) {
      case Codec::none:
      case Codec::fp32: return 4 * n;
      case Codec::fp16:
      case Codec::bf16: return 2 * n;
      case Codec::int8: return n + 4 * ((n + block - 1) / block);
      case Codec::topk: return 8 * topk_count(n);
    }
    return 0;
  }
};

namespace detail::codec {

template <class T>
void put(std::vector<std::uint8_t>& out, std::size_t at, T value) {
  std::memcpy(out.data() + at, &value, sizeof(T));
}
template <class T>
T get(std::span<const std::uint8_t> in, std::size_t at) {
  T value;
  std::memcpy(&value, in.data() + at, sizeof(T));
  return value;
}

}  // namespace detail::codec

/// Encodes the n values `v` into `out` (resized to compression.payload_bytes(n)).
inline void encode(const Compression& c, std::span<const double> v, std::vector<std::uint8_t>& out) {
  using detail::codec::put;
  const std::size_t n = v.size();
  out.assign(c.payload_bytes(n), 0);
  switch (c.codec) {
    case Codec::none:
    case Codec::fp32:
      for (std::size_t i = 0; i < n; ++i) put(out, 4 * i, static_cast<float>(v[i]));
      return;
    case Codec::fp16:
      for (std::size_t i = 0; i < n; ++i) put(out, 2 * i, Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(static_cast<float>(v[i]))));
      return;
    case Codec::bf16:
      for (std::size_t i = 0; i < n; ++i)
        put(out, 2 * i, Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(static_cast<float>(v[i]))));
      return;
    case Codec::int8: {
      const std::size_t blocks = (n + c.block - 1) / c.block;
      for (std::size_t b = 0; b < blocks; ++b) {
        const std::size_t begin = b * c.block, end = std::min(n, begin + c.block);
        double most = 0;
        for (std::size_t i = begin; i < end; ++i) most = std::max(most, std::abs(v[i]));
        const auto scale = static_cast<float>(most / 127.0);
        put(out, 4 * b, scale);
        for (std::size_t i = begin; i < end; ++i) {
          const double q = scale > 0 ? std::nearbyint(v[i] / static_cast<double>(scale)) : 0.0;
          put(out, 4 * blocks + i, static_cast<std::int8_t>(std::clamp(q, -127.0, 127.0)));
        }
      }
      return;
    }
    case Codec::topk: {
      const std::size_t k = c.topk_count(n);
      std::vector<std::uint32_t> order(n);
      std::iota(order.begin(), order.end(), 0U);
      // A total order (magnitude, then index), so the chosen set does not depend on the sort.
      const auto before = [&](std::uint32_t a, std::uint32_t b) {
        const double ma = std::abs(v[a]), mb = std::abs(v[b]);
        return ma > mb || (ma == mb && a < b);
      };
      if (k < n) std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(), before);
      order.resize(k);
      std::sort(order.begin(), order.end());
      for (std::size_t j = 0; j < k; ++j) {
        put(out, 8 * j, order[j]);
        put(out, 8 * j + 4, static_cast<float>(v[order[j]]));
      }
      return;
    }
  }
}

/// Decodes a message of `out.size()` values into `out`. A payload of the wrong size, or top-k
/// indices out of range or not increasing, throws std::invalid_argument naming the offset.
inline void decode(const Compression& c, std::span<const std::uint8_t> in, std::span<double> out) {
  using detail::codec::get;
  const std::size_t n = out.size();
  require(in.size() == c.payload_bytes(n), "decode(", to_string(c.codec), "): payload of ", in.size(), " bytes, ",
          c.payload_bytes(n), " expected for ", n, " values");
  switch (c.codec) {
    case Codec::none:
    case Codec::fp32:
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<double>(get<float>(in, 4 * i));
      return;
    case Codec::fp16:
      for (std::size_t i = 0; i < n; ++i)
        out[i] = static_cast<double>(static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(get<std::uint16_t>(in, 2 * i))));
      return;
    case Codec::bf16:
      for (std::size_t i = 0; i < n; ++i)
        out[i] = static_cast<double>(static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(get<std::uint16_t>(in, 2 * i))));
      return;
    case Codec::int8: {
      const std::size_t blocks = (n + c.block - 1) / c.block;
      for (std::size_t b = 0; b < blocks; ++b) {
        const auto scale = static_cast<double>(get<float>(in, 4 * b));
        require(std::isfinite(scale) && scale >= 0, "decode(int8): scale of block ", b, " at offset ", 4 * b, " is ", scale);
        const std::size_t begin = b * c.block, end = std::min(n, begin + c.block);
        for (std::size_t i = begin; i < end; ++i) out[i] = scale * static_cast<double>(get<std::int8_t>(in, 4 * blocks + i));
      }
      return;
    }
    case Codec::topk: {
      std::fill(out.begin(), out.end(), 0.0);
      const std::size_t k = in.size() / 8;
      std::int64_t last = -1;
      for (std::size_t j = 0; j < k; ++j) {
        const auto index = get<std::uint32_t>(in, 8 * j);
        require(index < n && static_cast<std::int64_t>(index) > last, "decode(topk): index ", index, " at offset ", 8 * j,
                " is out of range or out of order (", n, " values, previous ", last, ")");
        out[index] = static_cast<double>(get<float>(in, 8 * j + 4));
        last = index;
      }
      return;
    }
  }
}

/// The cost of one synchronisation of `values` model values of `value_bytes` each among `k`
/// workers: the casts (and the uncompressed model) as a ring all-reduce in their format, int8 and
/// topk as a ring all-gather of every worker's payload (they cannot be summed on the way).
/// bytes_per_worker is what each worker sends.
[[nodiscard]] inline CommunicationCost sync_cost(const Compression& c, std::int64_t values, std::size_t value_bytes, std::size_t k,
                                                 const NetworkModel& network) {
  if (c.codec == Codec::none) return allreduce_cost(values, value_bytes, k, network);
  if (c.reducible()) return allreduce_cost(values, c.cast_bytes(), k, network);
  const auto payload = static_cast<double>(c.payload_bytes(static_cast<std::size_t>(values)));
  CommunicationCost cost;
  cost.rounds = 1;
  cost.allreduce_values = values;
  cost.bytes_per_worker = k <= 1 ? 0.0 : static_cast<double>(k - 1) * payload;
  cost.modelled_seconds = network.ring_allgather_seconds(payload, k);
  return cost;
}

}  // namespace distopt::local
