// The instruction set the layers' kernels run with, chosen once per process from the CPU.
//
// Every kernel (the product's micro-kernel, packers and epilogues, the direct convolutions, the
// pooling windows) is compiled for each path below into the consumer's own program, whatever
// flags it is built with (nn/kernels/targets.hpp), and the widest path the CPU runs is taken. So a
// program built with CMake's default flags, or for distribution to unknown CPUs, runs the same
// kernels as one built with -march=native.
//
//   avx512    AVX-512 F, BW, VL and DQ with AVX2 and FMA (x86-64-v4): 16 floats a register
//   avx2      AVX2 and FMA (x86-64-v3): 8 floats a register
//   portable  Eigen's packets as the build targets them (SSE2 under x86-64's default flags,
//             NEON on ARM, AVX2 under -march=native on such a CPU)
//
// The environment variable DISTOPT_ISA (avx512, avx2 or portable) forces a path; one the CPU
// lacks is refused with a message naming what it has. Each path gives the same bits for any
// number of threads; the paths differ from one another in the order of some sums (their register
// widths differ), as two CPUs would.
#pragma once

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

// The paths this translation unit compiles: on x86-64 (GCC or clang) avx512 and avx2, and
// portable unless the build's own flags already require AVX2 and FMA (-march=native on such a CPU,
// x86-64-v3 or later: portable would then be avx2 again); elsewhere portable alone. A program
// built for CPUs it knows may leave avx512 out by defining DISTOPT_NO_AVX512_KERNELS (the project's
// own programs do on CPUs without it, to build faster).
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define DISTOPT_KERNELS_X86 1
#else
#define DISTOPT_KERNELS_X86 0
#endif
#if DISTOPT_KERNELS_X86 && !defined(DISTOPT_NO_AVX512_KERNELS)
#define DISTOPT_KERNELS_AVX512 1
#else
#define DISTOPT_KERNELS_AVX512 0
#endif
#define DISTOPT_KERNELS_AVX2 DISTOPT_KERNELS_X86
#if DISTOPT_KERNELS_X86 && defined(__AVX2__) && defined(__FMA__)
#define DISTOPT_KERNELS_PORTABLE 0
#else
#define DISTOPT_KERNELS_PORTABLE 1
#endif

namespace distopt::nn {

/// A path of the kernels, widest first.
enum class Isa { avx512, avx2, portable };

/// The name DISTOPT_ISA takes and the benchmarks print.
[[nodiscard]] constexpr std::string_view isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::portable: break;
  }
  return "portable";
}

/// Whether this program has a path's kernels (the list above).
[[nodiscard]] constexpr bool compiled(Isa isa) noexcept {
  switch (isa) {
    case Isa::avx512: return DISTOPT_KERNELS_AVX512 != 0;
    case Isa::avx2: return DISTOPT_KERNELS_AVX2 != 0;
    case Isa::portable: break;
  }
  return DISTOPT_KERNELS_PORTABLE != 0;
}

/// Whether this program has a path and this CPU runs it.
[[nodiscard]] inline bool cpu_runs(Isa isa) noexcept {
  if (!compiled(isa)) return false;
#if DISTOPT_KERNELS_X86
  switch (isa) {
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma");
    case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::portable: return true;
  }
  return false;
#else
  return true;
#endif
}

/// The paths this program has and this CPU runs, widest first.
[[nodiscard]] inline std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::avx512, Isa::avx2, Isa::portable})
    if (cpu_runs(isa)) out.push_back(isa);
  return out;
}

/// The path named `name` (avx512, avx2, portable), refused with the names if unknown or with what
/// the CPU runs if it lacks it. `source` names where the name came from, for the message.
[[nodiscard]] inline Isa parse_isa(std::string_view name, std::string_view source = "ISA") {
  std::string runs;
  for (Isa isa : supported_isas()) runs += (runs.empty() ? "" : ", ") + std::string(isa_name(isa));
  for (Isa isa : {Isa::avx512, Isa::avx2, Isa::portable}) {
    if (name != isa_name(isa)) continue;
    if (!compiled(isa))
      throw std::invalid_argument(std::string(source) + "=" + std::string(name) + ": this program was built without the " +
                                  std::string(name) + " path (it has " + runs + " for this CPU)");
    if (!cpu_runs(isa))
      throw std::invalid_argument(std::string(source) + "=" + std::string(name) + ": this CPU does not run " +
                                  std::string(name) + " (it runs " + runs + ")");
    return isa;
  }
  throw std::invalid_argument(std::string(source) + "=" + std::string(name) +
                              ": expected avx512, avx2 or portable (this CPU runs " + runs + ")");
}

namespace detail {

// The path in use: the widest the CPU runs, or DISTOPT_ISA's, read at the first call. An invalid
// DISTOPT_ISA throws at every call until mended, so the models' constructors report it (they ask
// before any parallel region, where an exception could not leave).
inline std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{-1};
  return slot;
}

inline Isa initial_isa() {
  if (const char* forced = std::getenv("DISTOPT_ISA"); forced != nullptr && *forced != '\0')
    return parse_isa(forced, "DISTOPT_ISA");
  return supported_isas().front();
}

}  // namespace detail

/// The path the kernels take in this process.
[[nodiscard]] inline Isa active_isa() {
  auto& slot = detail::isa_slot();
  int value = slot.load(std::memory_order_relaxed);
  if (value < 0) {
    value = static_cast<int>(detail::initial_isa());
    int expected = -1;
    if (!slot.compare_exchange_strong(expected, value)) value = expected;
  }
  return static_cast<Isa>(value);
}

/// Makes the kernels take `isa` from now on (for tests and benchmarks that run every path; never
/// while kernels run on other threads). Throws if the CPU lacks it.
inline void set_isa(Isa isa) {
  if (!cpu_runs(isa)) (void)parse_isa(isa_name(isa));
  detail::isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

/// Sets a path for a scope and puts the one before back after it.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : before_(active_isa()) { set_isa(isa); }
  ~ScopedIsa() { detail::isa_slot().store(static_cast<int>(before_), std::memory_order_relaxed); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  Isa before_;
};

namespace kernels {
// Each path's kernels live in a namespace of their own (nn/kernels/targets.hpp); a Tag of that
// namespace, passed to a kernel's entry point, picks its overloads by argument-dependent lookup.
#if DISTOPT_KERNELS_AVX512
namespace avx512 {
struct Tag {};
}  // namespace avx512
#endif
#if DISTOPT_KERNELS_AVX2
namespace avx2 {
struct Tag {};
}  // namespace avx2
#endif
#if DISTOPT_KERNELS_PORTABLE
namespace portable {
struct Tag {};
}  // namespace portable
#endif
}  // namespace kernels

/// f(tag) with the Tag of the path in use: `f` calls an entry point of the kernels unqualified,
/// with the tag as its first argument.
template <class F>
decltype(auto) with_kernels(F&& f) {
  [[maybe_unused]] const Isa isa = active_isa();
#if DISTOPT_KERNELS_AVX512
  if (isa == Isa::avx512) return f(kernels::avx512::Tag{});
#endif
#if DISTOPT_KERNELS_PORTABLE
  if (isa == Isa::portable) return f(kernels::portable::Tag{});
#endif
#if DISTOPT_KERNELS_AVX2
  return f(kernels::avx2::Tag{});
#else
  return f(kernels::portable::Tag{});
#endif
}

}  // namespace distopt::nn
