// The flat buffer at the core: every weight and gradient of a model in two aligned arrays.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/core/block.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/error.hpp"

namespace distopt {

/// Every parameter of a model in one contiguous buffer of values and one of gradients, with a
/// table of named blocks (`conv1.weight`, shape, offset, options).
///
/// Why one buffer: an optimizer step is one fused loop over it, averaging K replicas is one pass
/// (or one MPI_Allreduce) over it, and a replica is two memcpy's. Each block starts on a
/// 64-byte boundary so its Eigen views are aligned; the gaps between blocks are zero and stay
/// zero. Views are invalidated by `add` (the buffers grow), never by anything else.
///
/// Copying gives an independent replica with the same layout. `T` is float for training and
/// double for finite-difference gradient checks.
template <std::floating_point T>
class BasicParameterSet {
 public:
  using scalar_type = T;
  using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using VectorView = Eigen::Map<Vector, Eigen::Aligned64>;
  using ConstVectorView = Eigen::Map<const Vector, Eigen::Aligned64>;
  using MatrixView = Eigen::Map<RowMatrix, Eigen::Aligned64>;
  using ConstMatrixView = Eigen::Map<const RowMatrix, Eigen::Aligned64>;

  /// Blocks start at multiples of this many elements.
  static constexpr std::ptrdiff_t block_alignment =
      static_cast<std::ptrdiff_t>(buffer_alignment / sizeof(T));

  BasicParameterSet() = default;

  /// Appends a zero-initialised block and returns its index. Throws std::invalid_argument for an
  /// empty or duplicate name, a dimension <= 0 or a bad lr_scale.
  std::size_t add(std::string name, std::vector<std::ptrdiff_t> shape, BlockOptions options = {}) {
    require(!name.empty(), "ParameterSet::add: a block needs a name");
    require(!index_.contains(name), "ParameterSet::add: duplicate block name '", name, "'");
    std::ptrdiff_t size = 1;
    for (std::size_t axis = 0; axis < shape.size(); ++axis) {
      require(shape[axis] > 0, "ParameterSet::add: block '", name, "' has dimension ", shape[axis],
              " at axis ", axis, " of shape ", shape, "; every dimension must be positive");
      size *= shape[axis];
    }
    check_options(name, options);
    const std::ptrdiff_t offset = aligned(size_);
    const std::size_t index = blocks_.size();
    blocks_.push_back(Block{.name = std::move(name), .shape = std::move(shape), .offset = offset,
                            .size = size, .options = options});
    index_.emplace(blocks_.back().name, index);
    size_ = aligned(offset + size);
    values_.resize(size_);
    grads_.resize(size_);
    return index;
  }

  // --- layout ------------------------------------------------------------------------------

  /// Length of each flat buffer, padding included.
  [[nodiscard]] std::ptrdiff_t size() const noexcept { return size_; }
  /// Number of trainable scalars: the sum of block sizes.
  [[nodiscard]] std::ptrdiff_t num_parameters() const noexcept {
    std::ptrdiff_t total = 0;
    for (const Block& b : blocks_) total += b.size;
    return total;
  }
  [[nodiscard]] std::size_t num_blocks() const noexcept { return blocks_.size(); }
  [[nodiscard]] std::span<const Block> blocks() const noexcept { return blocks_; }
  [[nodiscard]] const Block& block(std::size_t index) const {
    require<std::out_of_range>(index < blocks_.size(), "ParameterSet: block index ", index,
                               " out of range (", blocks_.size(), " blocks)");
    return blocks_[index];
  }
  [[nodiscard]] const Block& block(std::string_view name) const { return blocks_[index_of(name)]; }

  /// Index of the block called `name`, or nothing.
  [[nodiscard]] std::optional<std::size_t> find(std::string_view name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) return std::nullopt;
    return it->second;
  }
  /// Index of the block called `name`; std::out_of_range naming it and the known blocks.
  [[nodiscard]] std::size_t index_of(std::string_view name) const {
    if (const auto found = find(name)) return *found;
    std::string known;
    for (const Block& b : blocks_) known += (known.empty() ? "" : ", ") + b.name;
    fail<std::out_of_range>("ParameterSet: no block named '", name, "' (blocks: ",
                            known.empty() ? std::string("none") : known, ")");
  }

  /// Replaces the options of one block (PyTorch's parameter-group overrides).
  void set_options(std::string_view name, BlockOptions options) {
    Block& b = blocks_[index_of(name)];
    check_options(b.name, options);
    b.options = options;
  }

  /// The first difference between two layouts (block count, name or shape), or nothing when
  /// values can move between the two sets.
  [[nodiscard]] std::optional<std::string> layout_difference(const BasicParameterSet& other) const {
    const std::size_t common = std::min(blocks_.size(), other.blocks_.size());
    for (std::size_t i = 0; i < common; ++i) {
      const Block& a = blocks_[i];
      const Block& b = other.blocks_[i];
      if (a.name != b.name || a.shape != b.shape)
        return message("block ", i, " is '", a.name, "' of shape ", a.shape, " here and '", b.name,
                       "' of shape ", b.shape, " in the other set");
    }
    if (blocks_.size() != other.blocks_.size())
      return message("this set has ", blocks_.size(), " blocks and the other ", other.blocks_.size());
    return std::nullopt;
  }
  [[nodiscard]] bool same_layout(const BasicParameterSet& other) const {
    return !layout_difference(other).has_value();
  }

  // --- flat buffers ------------------------------------------------------------------------

  [[nodiscard]] VectorView values() noexcept { return {values_.data(), size_}; }
  [[nodiscard]] ConstVectorView values() const noexcept { return {values_.data(), size_}; }
  [[nodiscard]] VectorView grads() noexcept { return {grads_.data(), size_}; }
  [[nodiscard]] ConstVectorView grads() const noexcept { return {grads_.data(), size_}; }

  // --- one block, by index or by name ------------------------------------------------------

  [[nodiscard]] VectorView value(std::size_t i) { return vector_view(values_, block(i)); }
  [[nodiscard]] ConstVectorView value(std::size_t i) const { return vector_view(values_, block(i)); }
  [[nodiscard]] VectorView grad(std::size_t i) { return vector_view(grads_, block(i)); }
  [[nodiscard]] ConstVectorView grad(std::size_t i) const { return vector_view(grads_, block(i)); }
  [[nodiscard]] VectorView value(std::string_view name) { return value(index_of(name)); }
  [[nodiscard]] ConstVectorView value(std::string_view name) const { return value(index_of(name)); }
  [[nodiscard]] VectorView grad(std::string_view name) { return grad(index_of(name)); }
  [[nodiscard]] ConstVectorView grad(std::string_view name) const { return grad(index_of(name)); }

  /// Row-major [rows, cols] view: a linear weight as [out, in], a convolution weight as
  /// [out, in * kh * kw], exactly PyTorch's memory order.
  [[nodiscard]] MatrixView value_matrix(std::size_t i) { return matrix_view(values_, block(i)); }
  [[nodiscard]] ConstMatrixView value_matrix(std::size_t i) const { return matrix_view(values_, block(i)); }
  [[nodiscard]] MatrixView grad_matrix(std::size_t i) { return matrix_view(grads_, block(i)); }
  [[nodiscard]] ConstMatrixView grad_matrix(std::size_t i) const { return matrix_view(grads_, block(i)); }

  // --- whole-set operations ----------------------------------------------------------------

  void zero_grad() noexcept { grads_.fill_zero(); }

  /// Copies the values of `other` into this set; std::invalid_argument naming the first layout
  /// difference when the two do not match. Gradients are left alone.
  void assign_values(const BasicParameterSet& other) {
    if (const auto difference = layout_difference(other))
      fail("ParameterSet::assign_values: layouts differ: ", *difference);
    values_ = other.values_;
  }

 private:
  static std::ptrdiff_t aligned(std::ptrdiff_t n) noexcept {
    return (n + block_alignment - 1) / block_alignment * block_alignment;
  }
  static void check_options(const std::string& name, const BlockOptions& options) {
    require(std::isfinite(options.lr_scale) && options.lr_scale >= 0.0f, "ParameterSet: block '", name,
            "' has lr_scale ", options.lr_scale, "; it must be finite and >= 0");
  }
  template <class Buffer>
  static auto vector_view(Buffer& buffer, const Block& b) {
    using View = std::conditional_t<std::is_const_v<Buffer>, ConstVectorView, VectorView>;
    return View(buffer.data() + b.offset, b.size);
  }
  template <class Buffer>
  static auto matrix_view(Buffer& buffer, const Block& b) {
    using View = std::conditional_t<std::is_const_v<Buffer>, ConstMatrixView, MatrixView>;
    return View(buffer.data() + b.offset, b.rows(), b.cols());
  }

  std::vector<Block> blocks_;
  // Transparent hashing: lookups by string_view without building a std::string.
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view name) const noexcept { return std::hash<std::string_view>{}(name); }
  };
  std::unordered_map<std::string, std::size_t, NameHash, std::equal_to<>> index_;
  std::ptrdiff_t size_ = 0;
  AlignedBuffer<T> values_;
  AlignedBuffer<T> grads_;
};

/// The float parameter set every model of the library trains.
using ParameterSet = BasicParameterSet<float>;
/// The double parameter set used by finite-difference gradient checks.
using ParameterSetD = BasicParameterSet<double>;

static_assert(ParameterContainer<ParameterSet>, "ParameterSet must model ParameterContainer");
static_assert(ParameterContainer<ParameterSetD>, "ParameterSetD must model ParameterContainer");

}  // namespace distopt
