// What a model reads and learns from: a batch of samples of any shape (tables, images, sequences)
// and its targets (class ids, or real values for regression). Image code reads the same batch as
// core/images.hpp's NCHW view.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/core/images.hpp"

namespace distopt {

/// The shape of one sample, row-major, of rank 1 to 4: [d] for a table's row, [C, H, W] for an
/// image, [T, d] for a sequence.
struct Shape {
  static constexpr std::size_t max_rank = 4;
  std::array<std::ptrdiff_t, max_rank> dims{};
  std::size_t rank = 0;

  Shape() = default;
  Shape(std::initializer_list<std::ptrdiff_t> extents) : Shape(std::vector<std::ptrdiff_t>(extents)) {}
  /// Throws std::invalid_argument for a rank outside [1, 4] or an extent below 1.
  explicit Shape(const std::vector<std::ptrdiff_t>& extents) : rank(extents.size()) {
    require(rank >= 1 && rank <= max_rank, "Shape: a sample has 1 to ", max_rank, " dimensions, got ", extents);
    for (std::size_t i = 0; i < rank; ++i) {
      require(extents[i] >= 1, "Shape: extent ", extents[i], " at axis ", i, " of ", extents, " must be positive");
      dims[i] = extents[i];
    }
  }

  [[nodiscard]] std::ptrdiff_t operator[](std::size_t axis) const { return dims.at(axis); }
  /// Elements per sample.
  [[nodiscard]] std::ptrdiff_t size() const noexcept {
    std::ptrdiff_t n = rank > 0 ? 1 : 0;
    for (std::size_t i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  [[nodiscard]] std::vector<std::ptrdiff_t> extents() const { return {dims.begin(), dims.begin() + static_cast<std::ptrdiff_t>(rank)}; }
  /// "[3, 32, 32]", as PyTorch prints a shape.
  [[nodiscard]] std::string str() const { return message(extents()); }
  friend bool operator==(const Shape& a, const Shape& b) noexcept {
    if (a.rank != b.rank) return false;
    for (std::size_t i = 0; i < a.rank; ++i)
      if (a.dims[i] != b.dims[i]) return false;
    return true;
  }
};

/// A read-only batch: `count` samples of `shape`, sample i at data[i * shape.size()], row-major
/// inside. What every model of the library reads (nn::Model).
template <class T>
struct Samples {
  const T* data = nullptr;
  std::ptrdiff_t count = 0;
  Shape shape{};

  Samples() = default;
  Samples(const T* values, std::ptrdiff_t samples, Shape sample_shape) : data(values), count(samples), shape(sample_shape) {}
  /// The same batch seen as samples of shape [C, H, W].
  Samples(const Images<T>& images)  // NOLINT(google-explicit-constructor): an image batch is a batch
      : data(images.data), count(images.count), shape{images.channels, images.height, images.width} {}

  [[nodiscard]] std::ptrdiff_t sample_size() const noexcept { return shape.size(); }
  /// Samples [begin, end) of this batch.
  [[nodiscard]] Samples slice(std::ptrdiff_t begin, std::ptrdiff_t end) const {
    require(begin >= 0 && begin <= end && end <= count, "Samples::slice: [", begin, ", ", end, ") outside [0, ", count, ")");
    return {data + begin * sample_size(), end - begin, shape};
  }
  /// The batch as NCHW images; throws std::invalid_argument naming `who` and the shape unless the
  /// samples have rank 3.
  [[nodiscard]] Images<T> images(const char* who = "Samples::images") const {
    require(shape.rank == 3, who, ": expected samples of shape [channels, height, width], got ", shape.str());
    return {data, count, shape[0], shape[1], shape[2]};
  }
};

/// A batch's targets: one class id per sample (classification), or `width` real values per
/// sample, row-major [count, width] (regression). A span of class ids converts to Targets, so a
/// model that takes Targets is called with labels as before.
struct Targets {
  std::span<const std::int32_t> classes{};
  std::span<const float> values{};
  std::ptrdiff_t width = 0;  ///< values per sample; 0 for class ids

  Targets() = default;
  Targets(std::span<const std::int32_t> class_ids) : classes(class_ids) {}  // NOLINT(google-explicit-constructor)
  Targets(const std::vector<std::int32_t>& class_ids) : classes(class_ids) {}  // NOLINT(google-explicit-constructor)
  /// `values` [count, width] of a regression.
  [[nodiscard]] static Targets real(std::span<const float> values, std::ptrdiff_t width) {
    require(width >= 1 && values.size() % static_cast<std::size_t>(width) == 0, "Targets::real: ", values.size(),
            " values do not make rows of width ", width);
    Targets t;
    t.values = values;
    t.width = width;
    return t;
  }

  [[nodiscard]] bool are_classes() const noexcept { return width == 0; }
  [[nodiscard]] std::ptrdiff_t count() const noexcept {
    return are_classes() ? static_cast<std::ptrdiff_t>(classes.size()) : static_cast<std::ptrdiff_t>(values.size()) / width;
  }
  /// Targets of samples [begin, end).
  [[nodiscard]] Targets slice(std::ptrdiff_t begin, std::ptrdiff_t end) const {
    require(begin >= 0 && begin <= end && end <= count(), "Targets::slice: [", begin, ", ", end, ") outside [0, ", count(), ")");
    Targets t = *this;
    if (are_classes())
      t.classes = classes.subspan(static_cast<std::size_t>(begin), static_cast<std::size_t>(end - begin));
    else
      t.values = values.subspan(static_cast<std::size_t>(begin * width), static_cast<std::size_t>((end - begin) * width));
    return t;
  }
};

}  // namespace distopt
