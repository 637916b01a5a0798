// Optimizer state apart from hyperparameters: a step count and named flat buffers.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/block.hpp"
#include "distopt/core/error.hpp"

namespace distopt::optim {

/// What a non-finite gradient does to a step: `raise` throws std::domain_error naming the block and
/// the step; `skip` leaves weights and state untouched and counts the step in `skipped_steps()`.
/// Either way it is never applied.
enum class NonFinite : std::uint8_t { raise, skip };

/// An optimizer's per-run state: the number of steps taken and flat buffers laid out exactly like
/// the parameter buffers (momentum, Adam moments, ...), so element i of a buffer belongs to element
/// i of the weights. Kept apart from the Options, sized from the parameter layout, never keyed by
/// address: copying an optimizer copies its state, as replicas need.
///
/// Buffers are exposed as flat arrays for SlowMo's strategies (reset, maintain, average), saved
/// per block under PyTorch-like names (`exp_avg.fc1.weight`) so NumPy users can read them.
template <std::floating_point T>
class OptimizerState {
 public:
  OptimizerState() = default;
  OptimizerState(std::string kind, std::span<const Block> blocks, std::ptrdiff_t size,
                 std::vector<std::string> buffer_names)
      : kind_(std::move(kind)), blocks_(blocks.begin(), blocks.end()), size_(size),
        names_(std::move(buffer_names)), buffers_(names_.size(), AlignedBuffer<T>(size)) {}

  /// Steps applied so far (skipped steps not included). Adam's bias correction uses step + 1.
  [[nodiscard]] std::int64_t step() const noexcept { return step_; }
  void set_step(std::int64_t step) {
    require(step >= 0, kind_, " state: step must be >= 0, got ", step);
    step_ = step;
  }
  void advance() noexcept { ++step_; }

  [[nodiscard]] const std::string& kind() const noexcept { return kind_; }
  [[nodiscard]] std::span<const std::string> buffer_names() const noexcept { return names_; }
  [[nodiscard]] std::ptrdiff_t size() const noexcept { return size_; }

  /// The flat buffer called `name`; std::out_of_range naming it and the known buffers.
  [[nodiscard]] std::span<T> buffer(std::string_view name) { return buffers_[index_of(name)].span(); }
  [[nodiscard]] std::span<const T> buffer(std::string_view name) const {
    return buffers_[index_of(name)].span();
  }
  [[nodiscard]] T* data(std::size_t i) noexcept { return buffers_[i].data(); }
  [[nodiscard]] const T* data(std::size_t i) const noexcept { return buffers_[i].data(); }

  /// Back to a fresh optimizer: step 0 and zero buffers (SlowMo's "reset" strategy).
  void reset() noexcept {
    step_ = 0;
    for (auto& b : buffers_) b.fill_zero();
  }

  /// Sets every replica's buffers to their mean, added in replica order (SlowMo's "average"
  /// strategy). All replicas must share kind, layout and step count.
  static void average(std::span<OptimizerState* const> replicas) {
    if (replicas.empty()) return;
    const OptimizerState& first = *replicas.front();
    for (const OptimizerState* r : replicas) {
      require(r->kind_ == first.kind_ && r->size_ == first.size_ && r->names_ == first.names_,
              "OptimizerState::average: replicas of different optimizers or layouts ('", first.kind_,
              "' and '", r->kind_, "')");
      require(r->step_ == first.step_, "OptimizerState::average: step counts differ (", first.step_,
              " and ", r->step_, ")");
    }
    const T inverse = T(1) / static_cast<T>(replicas.size());
    for (std::size_t b = 0; b < first.buffers_.size(); ++b) {
      T* target = replicas.front()->buffers_[b].data();
      for (std::size_t r = 1; r < replicas.size(); ++r) {
        const T* source = replicas[r]->buffers_[b].data();
        for (std::ptrdiff_t i = 0; i < first.size_; ++i) target[i] += source[i];
      }
      for (std::ptrdiff_t i = 0; i < first.size_; ++i) target[i] *= inverse;
      for (std::size_t r = 1; r < replicas.size(); ++r) replicas[r]->buffers_[b] = replicas.front()->buffers_[b];
    }
  }

  /// Writes `<prefix>kind`, `<prefix>step` and `<prefix><buffer>.<block>` for every buffer and block.
  template <ArrayStore Store>
  void save(Store& archive, std::string_view prefix = "optimizer.") const {
    const std::string p(prefix);
    archive.put_string(p + "kind", kind_);
    archive.template put_scalar<std::int64_t>(p + "step", step_);
    for (std::size_t b = 0; b < names_.size(); ++b)
      for (const Block& block : blocks_)
        archive.template put<T>(p + names_[b] + "." + block.name,
                       std::span<const T>(buffers_[b].data() + block.offset, static_cast<std::size_t>(block.size)),
                       block.shape);
  }

  /// Reads what `save` wrote; std::invalid_argument naming the field and the value when the
  /// archive holds another optimizer's state or another layout. Nothing changes on failure.
  template <ArrayStore Store>
  void load(const Store& archive, std::string_view prefix = "optimizer.") {
    const std::string p(prefix);
    const std::string saved_kind = archive.get_string(p + "kind");
    require(saved_kind == kind_, "optimizer state: field '", p, "kind' is '", saved_kind,
            "', this optimizer is '", kind_, "'");
    const auto saved_step = archive.template get_scalar<std::int64_t>(p + "step");
    require(saved_step >= 0, "optimizer state: field '", p, "step' is ", saved_step, ", must be >= 0");
    for (const std::string& name : names_)
      for (const Block& block : blocks_) {
        const std::string field = p + name + "." + block.name;
        require(archive.contains(field), "optimizer state: field '", field,
                "' is missing (state of another layout?)");
        const auto shape = archive.shape(field);
        require(shape == block.shape, "optimizer state: field '", field, "' has shape ", shape,
                ", this layout needs ", block.shape);
      }
    for (std::size_t b = 0; b < names_.size(); ++b)
      for (const Block& block : blocks_)
        archive.template get_into<T>(p + names_[b] + "." + block.name,
                            std::span<T>(buffers_[b].data() + block.offset, static_cast<std::size_t>(block.size)));
    step_ = saved_step;
  }

 private:
  [[nodiscard]] std::size_t index_of(std::string_view name) const {
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (names_[i] == name) return i;
    fail<std::out_of_range>(kind_, " state has no buffer '", name, "' (buffers: ", names_, ")");
  }

  std::string kind_;
  std::vector<Block> blocks_;
  std::ptrdiff_t size_ = 0;
  std::vector<std::string> names_;
  std::vector<AlignedBuffer<T>> buffers_;
  std::int64_t step_ = 0;
};

}  // namespace distopt::optim
