// A contiguous, 64-byte-aligned, zero-initialised array: the storage under every flat buffer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

namespace distopt {

/// Alignment of every flat buffer and of every block inside one: one cache line, and the widest
/// vector register (AVX-512) there is, so Eigen may take its aligned code paths.
inline constexpr std::size_t buffer_alignment = 64;

/// Owning array of trivially copyable `T`, aligned to `buffer_alignment`, zero-filled on
/// creation and on growth. Copying copies the contents (a replica never aliases its source).
template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds plain numbers only");

 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::ptrdiff_t size) : data_(allocate(size)), size_(size) {}

  AlignedBuffer(const AlignedBuffer& other) : AlignedBuffer(other.size_) {
    if (size_ > 0) std::memcpy(data_, other.data_, bytes(size_));
  }
  AlignedBuffer(AlignedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer other) noexcept {
    swap(other);
    return *this;
  }
  ~AlignedBuffer() { release(data_); }

  void swap(AlignedBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }

  /// Grows or shrinks to `size`, keeping the common prefix; new elements are zero.
  void resize(std::ptrdiff_t size) {
    AlignedBuffer grown(size);
    if (std::min(size, size_) > 0) std::memcpy(grown.data_, data_, bytes(std::min(size, size_)));
    swap(grown);
  }

  void fill_zero() noexcept {
    if (size_ > 0) std::memset(static_cast<void*>(data_), 0, bytes(size_));
  }

  [[nodiscard]] T* data() noexcept { return data_; }
  [[nodiscard]] const T* data() const noexcept { return data_; }
  [[nodiscard]] std::ptrdiff_t size() const noexcept { return size_; }
  [[nodiscard]] std::span<T> span() noexcept { return {data_, static_cast<std::size_t>(size_)}; }
  [[nodiscard]] std::span<const T> span() const noexcept {
    return {data_, static_cast<std::size_t>(size_)};
  }
  T& operator[](std::ptrdiff_t i) noexcept { return data_[i]; }
  const T& operator[](std::ptrdiff_t i) const noexcept { return data_[i]; }

 private:
  static std::size_t bytes(std::ptrdiff_t n) { return static_cast<std::size_t>(n) * sizeof(T); }

  static T* allocate(std::ptrdiff_t n) {
    if (n <= 0) return nullptr;
    // Round up so the allocation is a whole number of cache lines (aligned new requires nothing
    // of the size, but vector loops may then read the last line whole).
    const std::size_t rounded = (bytes(n) + buffer_alignment - 1) / buffer_alignment * buffer_alignment;
    void* raw = ::operator new(rounded, std::align_val_t{buffer_alignment});
    std::memset(raw, 0, rounded);
    return static_cast<T*>(raw);
  }
  static void release(T* p) noexcept {
    if (p) ::operator delete(static_cast<void*>(p), std::align_val_t{buffer_alignment});
  }

  T* data_ = nullptr;
  std::ptrdiff_t size_ = 0;
};

}  // namespace distopt
