// No heap allocation in the steady-state training step. A program of its own: it replaces the
// global operator new to count calls while a flag is up.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "distopt/core/parallel.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/optim/sgdm.hpp"

#include "../support/isa.hpp"

// This file replaces operator new and operator delete together (malloc/aligned_alloc and free);
// GCC's -Wmismatched-new-delete does not model a replaced pair and reports every delete.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};

void* allocate(std::size_t size, std::size_t alignment) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
  if (size == 0) size = 1;
  void* p = alignment > alignof(std::max_align_t) ? std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment)
                                                  : std::malloc(size);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t size) { return allocate(size, alignof(std::max_align_t)); }
void* operator new[](std::size_t size) { return allocate(size, alignof(std::max_align_t)); }
void* operator new(std::size_t size, std::align_val_t a) { return allocate(size, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t size, std::align_val_t a) { return allocate(size, static_cast<std::size_t>(a)); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
// The nothrow forms too: every allocation of the program must come from, and return to, one pair.
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return allocate(size, alignof(std::max_align_t));
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
void* operator new(std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return allocate(size, static_cast<std::size_t>(a));
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, std::align_val_t a, const std::nothrow_t& tag) noexcept {
  return operator new(size, a, tag);
}
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

TEST_CASE("A LeNet5 training step allocates nothing once the workspace is sized", "[nn][lenet5][allocation]") {
  DISTOPT_EACH_ISA();
  const distopt::nn::Preset preset = GENERATE(distopt::nn::Preset::hsu, distopt::nn::Preset::classic);
  const int threads = GENERATE(1, 2);
  distopt::parallel::ThreadCount scope(threads);
  distopt::nn::LeNet5<float> net({.preset = preset});
  distopt::optim::Sgdm sgdm(net.parameters(), {.lr = 0.01, .momentum = 0.9, .weight_decay = 4e-4});
  const std::ptrdiff_t batch = 24;
  std::vector<float> images(static_cast<std::size_t>(batch * 3 * 32 * 32));
  distopt::Rng rng(2);
  for (float& v : images) v = static_cast<float>(rng.normal());
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch), 7);
  std::vector<float> logits(static_cast<std::size_t>(batch * 100));
  auto step = [&] {
    net.parameters().zero_grad();
    (void)net.loss_and_gradient({images.data(), batch, 3, 32, 32}, labels);
    sgdm.step(net.parameters());
    net.forward({images.data(), batch, 3, 32, 32}, logits.data());
  };
  step();  // the first step sizes the workspace and the optimizer's buffers
  allocations = 0;
  counting = true;
  for (int i = 0; i < 3; ++i) step();
  // A smaller batch fits the workspace too.
  (void)net.evaluate({images.data(), batch / 2, 3, 32, 32}, std::span(labels).first(static_cast<std::size_t>(batch / 2)));
  counting = false;
  CHECK(allocations.load() == 0);

  // And the counter does count: a larger batch must grow the workspace.
  std::vector<float> more(images.size() * 2);
  std::vector<std::int32_t> more_labels(labels.size() * 2, 1);
  allocations = 0;
  counting = true;
  (void)net.evaluate({more.data(), batch * 2, 3, 32, 32}, more_labels);
  counting = false;
  CHECK(allocations.load() > 0);
}
