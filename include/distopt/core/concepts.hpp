// What the optimizers need of a parameter container and of a place to save their state, so users
// can plug in their own.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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

/// Where named arrays are saved and read back: the optimizers' save_state/load_state write into
/// any such store, so the optimizers and the model do not depend on a file format. distopt::Archive
/// (core/archive.hpp, the NumPy .npz of checkpoints) is the library's model of it.
///
/// Contract: `put<T>(name, values, shape)` stores a copy under `name` (replacing one there);
/// `get<T>(name)` returns its values, `shape(name)` its shape, `contains(name)` whether there is
/// one; put_scalar/get_scalar and put_string/get_string are one-value and text forms. Lookups of
/// a missing name or of another element type throw std::invalid_argument naming it.
template <class S>
concept ArrayStore = requires(S& store, const S& const_store, std::string name, std::string_view view, std::span<const float> f,
                              std::span<float> out, std::vector<std::ptrdiff_t> shape, std::int64_t i) {
  store.template put<float>(name, f, shape);
  store.template put_scalar<std::int64_t>(name, i);
  store.put_string(name, view);
  { const_store.contains(view) } -> std::convertible_to<bool>;
  const_store.shape(view);
  const_store.template get_into<float>(view, out);
  { const_store.template get_scalar<std::int64_t>(view) } -> std::convertible_to<std::int64_t>;
  { const_store.get_string(view) } -> std::convertible_to<std::string>;
};

}  // namespace distopt
