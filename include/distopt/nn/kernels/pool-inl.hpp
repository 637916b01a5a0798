// MaxPool2d's kernels on one path (included once per path by nn/kernels/conv.hpp, inside its
// namespace): the windows of a row pair in vectors where the path has them
// (nn/kernels/pool_windows.hpp), the rest element by element.

namespace pooling {

// One output row: windows q < ow over the row pair (top, bottom). The better of each pair, then
// the better pair; a strict > at every comparison keeps the first position on ties, as
// PyTorch's scan does. argmax = 2 [lower pair wins] + [the winning pair's right one wins].
template <class T>
void pool_row(const T* top, const T* bottom, Index ow, bool relu, T* pooled, std::uint8_t* where) {
  Index q = 0;
  if constexpr (std::is_same_v<T, float>) q = pool_windows(top, bottom, ow, relu, pooled, where);
  for (; q < ow; ++q) {
    const T a = top[2 * q], b = top[2 * q + 1], c = bottom[2 * q], d = bottom[2 * q + 1];
    const bool upper_right = b > a, lower_right = d > c;
    const T upper = upper_right ? b : a, lower = lower_right ? d : c;
    const bool lower_wins = lower > upper;
    const T best = lower_wins ? lower : upper;
    pooled[q] = relu && !(best > T(0)) ? T(0) : best;
    where[q] = static_cast<std::uint8_t>(lower_wins ? 2 + lower_right : upper_right);
  }
}

// The gradient of one output row, routed to its windows' maxima; every element of the row pair
// is written (zero where no maximum was).
template <class T>
void unpool_row(const T* g, const T* kept, const std::uint8_t* where, Index ow, T* top, T* bottom) {
  Index q = 0;
  if constexpr (std::is_same_v<T, float>) q = unpool_windows(g, kept, where, ow, top, bottom);
  for (; q < ow; ++q) {
    const T v = kept == nullptr || kept[q] > T(0) ? g[q] : T(0);
    const std::uint8_t w = where[q];
    top[2 * q] = w == 0 ? v : T(0);
    top[2 * q + 1] = w == 1 ? v : T(0);
    bottom[2 * q] = w == 2 ? v : T(0);
    bottom[2 * q + 1] = w == 3 ? v : T(0);
  }
}

}  // namespace pooling

// --- entry points (the Tag picks this path's overloads: nn/isa.hpp) ---------------------------

/// MaxPool2d::forward: y (laid out as `out`) and the argmax from x (laid out as `in`).
template <class T>
void pool_forward(Tag, const T* x, const PlaneLayout& in, T* y, const PlaneLayout& out, std::uint8_t* argmax,
                  bool relu) {
  const Index oh = in.height / 2, ow = in.width / 2;
  for (Index c = 0; c < in.channels; ++c)
    for (Index i = 0; i < in.images; ++i)
      for (Index r = 0; r < oh; ++r) {
        const T* top = x + in.at(c, i, 2 * r, 0);
        pooling::pool_row(top, top + in.width, ow, relu, y + out.at(c, i, r, 0),
                          argmax + ((c * in.images + i) * oh + r) * ow);
      }
}

/// MaxPool2d::backward: dx (all of it, laid out as `in`) from dy (laid out as `out`) and the
/// argmax, through the ReLU's mask y > 0 when y is given.
template <class T>
void pool_backward(Tag, const T* dy, const PlaneLayout& out, const std::uint8_t* argmax, const T* y,
                   const PlaneLayout& in, T* dx) {
  const Index oh = in.height / 2, ow = in.width / 2;
  for (Index c = 0; c < in.channels; ++c)
    for (Index i = 0; i < in.images; ++i) {
      for (Index r = 0; r < oh; ++r) {
        T* top = dx + in.at(c, i, 2 * r, 0);
        T* bottom = top + in.width;
        pooling::unpool_row(dy + out.at(c, i, r, 0), y != nullptr ? y + out.at(c, i, r, 0) : nullptr,
                            argmax + ((c * in.images + i) * oh + r) * ow, ow, top, bottom);
        if (in.width % 2 != 0) top[in.width - 1] = bottom[in.width - 1] = T(0);
      }
      if (in.height % 2 != 0) {
        T* last = dx + in.at(c, i, in.height - 1, 0);
        for (Index x = 0; x < in.width; ++x) last[x] = T(0);
      }
    }
}
