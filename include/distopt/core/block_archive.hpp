// Named blocks of a parameter container to and from an Archive: the one way weights (and any
// buffer laid out like them: best weights, a worker's model) enter and leave checkpoints, under
// PyTorch's state_dict names with a prefix ("model.conv1.weight").
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "distopt/core/archive.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/error.hpp"

namespace distopt {

/// The `format` field of the library's checkpoints (train/checkpoint.hpp, local/checkpoint.hpp).
inline constexpr std::string_view checkpoint_format = "distopt-checkpoint 2";

/// An optimizer (or anything with state) that saves it into an Archive and loads it back, changing
/// nothing when loading throws: what checkpoints need of an optimizer beyond optim::Optimizer.
template <class O>
concept SavesState = requires(const O& saver, O& loader, Archive& archive, const Archive& const_archive, std::string_view prefix) {
  saver.save_state(archive, prefix);
  loader.load_state(const_archive, prefix);
};

/// std::invalid_argument naming the archive's source and the field unless `archive` holds
/// `<prefix><block>` for every block of `params`, each of its block's shape.
template <ParameterContainer Params>
void check_blocks(const Archive& archive, const Params& params, std::string_view prefix) {
  for (const auto& block : params.blocks()) {
    const std::string field = std::string(prefix) + block.name;
    require(archive.contains(field), "checkpoint '", archive.source(), "': field '", field,
            "' is missing (a checkpoint of another model?)");
    require(archive.shape(field) == block.shape, "checkpoint '", archive.source(), "': field '", field, "' has shape ",
            archive.shape(field), ", this model needs ", block.shape);
  }
}

/// Puts `values` (laid out as `params`) block by block as `<prefix><block>`.
template <ParameterContainer Params>
void save_blocks(Archive& archive, const Params& params, const typename Params::scalar_type* values, std::string_view prefix) {
  using T = typename Params::scalar_type;
  for (const auto& block : params.blocks())
    archive.put<T>(std::string(prefix) + block.name,
                   std::span<const T>(values + block.offset, static_cast<std::size_t>(block.size)), block.shape);
}

/// Reads what save_blocks put into `values` (laid out as `params`); check_blocks first.
template <ParameterContainer Params>
void load_blocks(const Archive& archive, const Params& params, typename Params::scalar_type* values, std::string_view prefix) {
  using T = typename Params::scalar_type;
  for (const auto& block : params.blocks())
    archive.get_into<T>(std::string(prefix) + block.name, std::span<T>(values + block.offset, static_cast<std::size_t>(block.size)));
}

}  // namespace distopt
