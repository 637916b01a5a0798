// What the optimizers need of a parameter container, so users can plug in their own.
#pragma once

#include <concepts>
#include <cstddef>
#include <span>

#include "distopt/core/block.hpp"

namespace distopt {

/// A parameter container an optimizer can update.
///
/// Contract (what the types below cannot say):
/// - `values().data()` and `grads().data()` point to `size()` contiguous scalars each, aligned to
///   `buffer_alignment` bytes, that live as long as the container and do not move while an
///   optimizer is attached to it;
/// - `blocks()` lists named tensors in increasing `offset`, each inside [0, size()), none
///   overlapping; every element outside a block is zero in both buffers (optimizers may update
///   the whole buffer in one pass and rely on padding staying zero).
///
/// `distopt::ParameterSet` is the library's model of it; a user type that stores its weights in
/// one array can model it with a few one-line members.
template <class P>
concept ParameterContainer = requires(P& params, const P& const_params) {
  typename P::scalar_type;
  requires std::floating_point<typename P::scalar_type>;
  { params.values().data() } -> std::same_as<typename P::scalar_type*>;
  { params.grads().data() } -> std::same_as<typename P::scalar_type*>;
  { const_params.size() } -> std::convertible_to<std::ptrdiff_t>;
  { const_params.blocks() } -> std::convertible_to<std::span<const Block>>;
};

}  // namespace distopt
