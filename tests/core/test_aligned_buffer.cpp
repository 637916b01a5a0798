#include "distopt/core/aligned_buffer.hpp"

#include <catch2/catch.hpp>

#include <cstdint>

using distopt::AlignedBuffer;

TEST_CASE("AlignedBuffer is 64-byte aligned and zero-filled", "[core][aligned_buffer]") {
  for (std::ptrdiff_t n : {1, 3, 16, 17, 1000}) {
    AlignedBuffer<float> buffer(n);
    CHECK(reinterpret_cast<std::uintptr_t>(buffer.data()) % 64 == 0);
    CHECK(buffer.size() == n);
    for (std::ptrdiff_t i = 0; i < n; ++i) REQUIRE(buffer[i] == 0.0f);
  }
  AlignedBuffer<double> empty;
  CHECK(empty.data() == nullptr);
  CHECK(empty.span().empty());
}

TEST_CASE("AlignedBuffer resize keeps the prefix and zero-fills growth", "[core][aligned_buffer]") {
  AlignedBuffer<float> buffer(3);
  buffer[0] = 1.0f;
  buffer[2] = 3.0f;
  buffer.resize(40);
  CHECK(buffer.size() == 40);
  CHECK(buffer[0] == 1.0f);
  CHECK(buffer[2] == 3.0f);
  CHECK(buffer[39] == 0.0f);
  buffer.resize(1);
  CHECK(buffer.size() == 1);
  CHECK(buffer[0] == 1.0f);
  buffer.fill_zero();
  CHECK(buffer[0] == 0.0f);
}

TEST_CASE("AlignedBuffer copies deeply and moves by stealing", "[core][aligned_buffer]") {
  AlignedBuffer<int> a(5);
  a[4] = 9;
  AlignedBuffer<int> copy = a;
  copy[4] = 1;
  CHECK(a[4] == 9);
  const int* storage = a.data();
  AlignedBuffer<int> moved = std::move(a);
  CHECK(moved.data() == storage);
  CHECK(moved[4] == 9);
}
