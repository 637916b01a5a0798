// One named tensor inside a flat parameter buffer, and its per-block options.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace distopt {

/// A per-block switch that can be left to the optimizer's own default. LARS and LAMB, for
/// instance, leave 1-D blocks (biases) out of weight decay and adaptation unless told otherwise,
/// while SGDM and AdamW decay every block as torch.optim does.
enum class Toggle : std::uint8_t { automatic, on, off };

/// `toggle` decided: `automatic` takes the optimizer's default.
[[nodiscard]] constexpr bool resolve(Toggle toggle, bool default_value) noexcept {
  return toggle == Toggle::automatic ? default_value : toggle == Toggle::on;
}

/// What PyTorch's parameter groups carry, attached to one block: lr_scale multiplies the
/// learning rate, `decay` switches weight decay, `adapt` switches the LARS/LAMB trust ratio.
struct BlockOptions {
  float lr_scale = 1.0f;
  Toggle decay = Toggle::automatic;
  Toggle adapt = Toggle::automatic;
  friend bool operator==(const BlockOptions&, const BlockOptions&) = default;
};

/// A named tensor in a flat buffer, named as in PyTorch's state_dict (`conv1.weight`) and laid
/// out row-major as PyTorch lays it out ([out, in, kh, kw] for a convolution weight).
struct Block {
  std::string name;
  std::vector<std::ptrdiff_t> shape;  ///< empty for a scalar
  std::ptrdiff_t offset = 0;          ///< first element in the flat buffers (aligned)
  std::ptrdiff_t size = 0;            ///< number of elements, the product of `shape`
  BlockOptions options;

  [[nodiscard]] std::ptrdiff_t rank() const noexcept { return static_cast<std::ptrdiff_t>(shape.size()); }
  /// Leading dimension: the rows of the row-major matrix view (output channels or features).
  [[nodiscard]] std::ptrdiff_t rows() const noexcept { return shape.empty() ? 1 : shape.front(); }
  /// Elements per row: the product of every dimension but the first.
  [[nodiscard]] std::ptrdiff_t cols() const noexcept { return size / rows(); }
  [[nodiscard]] std::ptrdiff_t end() const noexcept { return offset + size; }
};

}  // namespace distopt
