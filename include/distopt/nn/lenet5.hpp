// LeNet-5 on the CPU: the model the whole study trains.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <omp.h>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/parameter_set.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/nn/conv2d.hpp"
#include "distopt/nn/detail/gemm.hpp"
#include "distopt/nn/flatten.hpp"
#include "distopt/nn/init.hpp"
#include "distopt/nn/linear.hpp"
#include "distopt/nn/loss.hpp"
#include "distopt/nn/maxpool2d.hpp"
#include "distopt/nn/model.hpp"
#include "distopt/nn/relu.hpp"

namespace distopt::nn {

/// The two LeNet-5 shapes: `hsu`, the study's (Hsu, Qi, Brown 2020, "Federated Visual
/// Classification with Real-World Data Distribution": conv 5x5 3->64, pool, conv 5x5 64->64, pool,
/// fc 1600->384->192->classes), and `classic` (LeCun et al. 1998 as PyTorch's tutorial writes it:
/// conv 6 and 16 channels, fc 400->120->84->classes).
enum class Preset : std::uint8_t { hsu, classic };

/// Shape and numerics of a LeNet5.
struct LeNet5Options {
  Preset preset = Preset::hsu;
  std::ptrdiff_t classes = 100;
  std::ptrdiff_t channels = 3;
  std::ptrdiff_t image_size = 32;  ///< square inputs, image_size x image_size
  /// Zero padding of conv1: 2 on 28 x 28 images (MNIST, Fashion-MNIST) gives LeCun et al. 1998's
  /// 32 x 32 input field, as PyTorch's Conv2d(1, 6, 5, padding=2) writes it.
  std::ptrdiff_t padding = 0;
  std::uint64_t seed = 0;          ///< initial weights
  double label_smoothing = 0.0;
  /// Images per chunk of work. Part of the numerics (the order in which per-image gradients are
  /// added), never of the thread count: the same chunk gives the same bits for any threads.
  std::ptrdiff_t chunk = 4;
};

/// LeNet-5: conv1 - max-pool - ReLU - conv2 - max-pool - ReLU - fc1 - ReLU - fc2 - ReLU - fc3, with
/// cross-entropy on the logits. Blocks are named as PyTorch's state_dict (`conv1.weight`, ...,
/// `fc3.bias`) and initialised with PyTorch's default distributions from `seed`.
///
/// Pooling comes before the ReLU: max and ReLU commute, so the function is PyTorch's
/// (conv - ReLU - pool) exactly, with a quarter of the ReLU work and nothing to keep for it.
///
/// A batch is cut into chunks of `chunk` images. The convolutions run per chunk, chunks spread over
/// OpenMP threads with per-thread scratch; each chunk adds its convolution gradients into its own
/// slot, and the slots are added in chunk order. The fully connected layers run over the whole
/// batch, cut into fixed tiles. So the same inputs give the same bits with 1, 2 or 3 threads, and
/// inside another parallel region the model runs on the calling thread. After the first batch of
/// the largest size, a step allocates nothing.
template <std::floating_point T = float>
class LeNet5 {
 public:
  using scalar_type = T;
  using params_type = BasicParameterSet<T>;

  explicit LeNet5(LeNet5Options options = {}) : options_(options) {
    require(options.classes >= 1, "LeNet5: classes must be >= 1, got ", options.classes);
    require(options.channels >= 1, "LeNet5: channels must be >= 1, got ", options.channels);
    require(options.chunk >= 1, "LeNet5: chunk must be >= 1, got ", options.chunk);
    require(options.label_smoothing >= 0 && options.label_smoothing <= 1,
            "LeNet5: label_smoothing must be in [0, 1], got ", options.label_smoothing);
    const bool hsu = options.preset == Preset::hsu;
    const std::ptrdiff_t c1 = hsu ? 64 : 6, c2 = hsu ? 64 : 16, f1 = hsu ? 384 : 120, f2 = hsu ? 192 : 84;
    require(options.padding >= 0 && options.padding <= 4, "LeNet5: padding must be in [0, 4], got ", options.padding);
    conv1_ = {"conv1", options.channels, c1, 5, options.padding};
    conv2_ = {"conv2", c1, c2, 5, 0};
    size1_ = conv1_.out_size(options.image_size);
    pooled1_ = MaxPool2d::out_size(size1_);
    size2_ = conv2_.out_size(pooled1_);
    pooled2_ = MaxPool2d::out_size(size2_);
    require(size1_ >= 1 && pooled1_ >= 1 && size2_ >= 1 && pooled2_ >= 1, "LeNet5: image_size ",
            options.image_size, " is too small for two 5 x 5 convolutions and two 2 x 2 poolings (needs >= 16)");
    fc1_ = {"fc1", c2 * pooled2_ * pooled2_, f1};
    fc2_ = {"fc2", f1, f2};
    fc3_ = {"fc3", f2, options.classes};

    const Rng rng(options.seed);
    auto add = [&](const std::string& name, std::vector<std::ptrdiff_t> shape, std::ptrdiff_t fan_in) {
      const std::size_t index = params_.add(name, std::move(shape));
      uniform_fan_in(params_.value(index), fan_in, rng.split(index));
      return index;
    };
    conv1_w_ = add("conv1.weight", {c1, options.channels, 5, 5}, conv1_.fan_in());
    conv1_b_ = add("conv1.bias", {c1}, conv1_.fan_in());
    conv2_w_ = add("conv2.weight", {c2, c1, 5, 5}, conv2_.fan_in());
    conv2_b_ = add("conv2.bias", {c2}, conv2_.fan_in());
    fc1_w_ = add("fc1.weight", {f1, fc1_.in_features}, fc1_.fan_in());
    fc1_b_ = add("fc1.bias", {f1}, fc1_.fan_in());
    fc2_w_ = add("fc2.weight", {f2, f1}, fc2_.fan_in());
    fc2_b_ = add("fc2.bias", {f2}, fc2_.fan_in());
    fc3_w_ = add("fc3.weight", {options.classes, f2}, fc3_.fan_in());
    fc3_b_ = add("fc3.bias", {options.classes}, fc3_.fan_in());
  }

  [[nodiscard]] params_type& parameters() noexcept { return params_; }
  [[nodiscard]] const params_type& parameters() const noexcept { return params_; }
  [[nodiscard]] const LeNet5Options& options() const noexcept { return options_; }
  [[nodiscard]] std::ptrdiff_t num_classes() const noexcept { return options_.classes; }

  /// Copies weights from a set of the same layout (std::invalid_argument naming the first
  /// difference otherwise), e.g. weights trained elsewhere or a LocalTrainer's global model.
  void load_parameters(const params_type& other) { params_.assign_values(other); }

  /// Logits [x.count, classes], row-major.
  void forward(const Images<T>& x, T* logits) {
    check_input(x);
    run_forward(x);
    std::copy_n(ws_.logits.data(), x.count * options_.classes, logits);
  }

  /// Mean loss and accuracy of a batch; gradients untouched.
  LossStats evaluate(const Images<T>& x, std::span<const std::int32_t> labels) {
    check_input(x, labels);
    run_forward(x);
    return loss(x.count, labels, 0.0, false);
  }

  /// Adds weight * (gradient of the batch's mean loss) into parameters().grads(). With weight =
  /// n_k / N for micro-batches of a large batch, the sum equals the large batch's gradient.
  LossStats loss_and_gradient(const Images<T>& x, std::span<const std::int32_t> labels, double weight = 1.0) {
    check_input(x, labels);
    run_forward(x);
    const LossStats stats = loss(x.count, labels, weight, true);
    run_backward(x);
    return stats;
  }

 private:
  // Scratch one thread needs for one chunk.
  struct ThreadScratch {
    AlignedBuffer<T> col1, y1, col2, y2, dcol2, dp1, dy1, dp2, dy2;
    detail::Gemm<T> gemm;
  };
  // Everything a batch needs beyond the parameters; grown, never shrunk. A copied model starts
  // with an empty one: scratch is not state, and replicas should not pay for copying it.
  struct Workspace {
    Workspace() = default;
    Workspace(const Workspace&) {}
    Workspace& operator=(const Workspace&) { return *this; }
    Workspace(Workspace&&) noexcept = default;
    Workspace& operator=(Workspace&&) noexcept = default;

    std::ptrdiff_t capacity = 0;
    AlignedBuffer<T> pooled1, pooled2, a0, a1, a2, logits, d_logits, d_a2, d_a1, d_a0, slots;
    AlignedBuffer<std::uint8_t> argmax1, argmax2;
    AlignedBuffer<double> row_loss;
    AlignedBuffer<std::uint8_t> row_top1, row_top5;
    std::vector<ThreadScratch> threads;
  };

  static constexpr std::ptrdiff_t row_tile = 16;  // rows of a fully connected tile
  static constexpr std::ptrdiff_t out_tile = 32;  // outputs of a weight-gradient tile

  void check_input(const Images<T>& x) const {
    require(x.count >= 1, "LeNet5: empty batch");
    require(x.data != nullptr, "LeNet5: batch of ", x.count, " images has no data");
    require(x.channels == options_.channels && x.height == options_.image_size && x.width == options_.image_size,
            "conv1: expected images of ", options_.channels, " x ", options_.image_size, " x ", options_.image_size,
            ", got ", x.channels, " x ", x.height, " x ", x.width);
  }
  void check_input(const Images<T>& x, std::span<const std::int32_t> labels) const {
    check_input(x);
    require(static_cast<std::ptrdiff_t>(labels.size()) == x.count, "cross_entropy: ", labels.size(),
            " labels for a batch of ", x.count, " images");
    CrossEntropy::check_labels(labels, options_.classes);
  }

  // Per-image sizes of what the backward pass keeps.
  std::ptrdiff_t pooled1_size() const { return conv1_.out_channels * pooled1_ * pooled1_; }
  std::ptrdiff_t pooled2_size() const { return conv2_.out_channels * pooled2_ * pooled2_; }
  std::ptrdiff_t conv_region() const { return params_.block(fc1_w_).offset; }
  std::ptrdiff_t chunks(std::ptrdiff_t count) const { return parallel::Chunks{count, options_.chunk}.count(); }

  void reserve(std::ptrdiff_t count) {
    if (count <= ws_.capacity) return;
    const std::ptrdiff_t n = count, classes = options_.classes;
    ws_.pooled1 = AlignedBuffer<T>(n * pooled1_size());
    ws_.argmax1 = AlignedBuffer<std::uint8_t>(n * pooled1_size());
    ws_.pooled2 = AlignedBuffer<T>(n * pooled2_size());
    ws_.argmax2 = AlignedBuffer<std::uint8_t>(n * pooled2_size());
    ws_.a0 = AlignedBuffer<T>(n * fc1_.in_features);
    ws_.a1 = AlignedBuffer<T>(n * fc1_.out_features);
    ws_.a2 = AlignedBuffer<T>(n * fc2_.out_features);
    ws_.logits = AlignedBuffer<T>(n * classes);
    ws_.d_logits = AlignedBuffer<T>(n * classes);
    ws_.d_a2 = AlignedBuffer<T>(n * fc2_.out_features);
    ws_.d_a1 = AlignedBuffer<T>(n * fc1_.out_features);
    ws_.d_a0 = AlignedBuffer<T>(n * fc1_.in_features);
    ws_.slots = AlignedBuffer<T>(chunks(n) * conv_region());
    ws_.row_loss = AlignedBuffer<double>(n);
    ws_.row_top1 = AlignedBuffer<std::uint8_t>(n);
    ws_.row_top5 = AlignedBuffer<std::uint8_t>(n);
    ws_.capacity = n;
  }

  // Runs body(begin, end, scratch) over fixed pieces of [0, n), pieces spread over the team.
  template <class Body>
  void for_each_piece(std::ptrdiff_t n, std::ptrdiff_t piece, Body&& body) {
    const parallel::Chunks pieces{n, piece};
    const std::ptrdiff_t count = pieces.count();
    const bool team = count > 1 && !omp_in_parallel() && omp_get_max_threads() > 1;
    const auto slots = static_cast<std::size_t>(team ? omp_get_max_threads() : 1);
    if (ws_.threads.size() < slots) ws_.threads.resize(slots);
#pragma omp parallel for schedule(static) if (team)
    for (std::ptrdiff_t k = 0; k < count; ++k)
      body(pieces.begin(k), pieces.end(k), ws_.threads[static_cast<std::size_t>(omp_get_thread_num())]);
  }

  static void ensure(AlignedBuffer<T>& buffer, std::ptrdiff_t size) {
    if (buffer.size() < size) buffer = AlignedBuffer<T>(size);
  }
  void ensure_scratch(ThreadScratch& s, std::ptrdiff_t n) const {
    const std::ptrdiff_t columns1 = n * size1_ * size1_, columns2 = n * size2_ * size2_;
    ensure(s.col1, conv1_.patch() * columns1);
    ensure(s.y1, conv1_.out_channels * columns1);
    ensure(s.col2, conv2_.patch() * columns2);
    ensure(s.y2, conv2_.out_channels * columns2);
    ensure(s.dcol2, conv2_.patch() * columns2);
    ensure(s.dp1, n * pooled1_size());
    ensure(s.dy1, conv1_.out_channels * columns1);
    ensure(s.dp2, n * pooled2_size());
    ensure(s.dy2, conv2_.out_channels * columns2);
  }

  // Layouts of the pieces of chunk [begin, end).
  PlaneLayout input_layout(const Images<T>& x, std::ptrdiff_t n) const {
    return PlaneLayout::nchw(n, x.channels, x.height, x.width);
  }
  PlaneLayout conv1_out(std::ptrdiff_t n) const { return PlaneLayout::cnhw(conv1_.out_channels, n, size1_, size1_); }
  PlaneLayout pool1_out(std::ptrdiff_t n) const { return PlaneLayout::cnhw(conv1_.out_channels, n, pooled1_, pooled1_); }
  PlaneLayout conv2_out(std::ptrdiff_t n) const { return PlaneLayout::cnhw(conv2_.out_channels, n, size2_, size2_); }
  PlaneLayout pool2_out(std::ptrdiff_t n) const { return PlaneLayout::cnhw(conv2_.out_channels, n, pooled2_, pooled2_); }

  void run_forward(const Images<T>& x) {
    reserve(x.count);
    const T* w = params_.values().data();
    const auto offset = [&](std::size_t block) { return params_.block(block).offset; };

    // Phase A: the convolutions, chunk by chunk.
    for_each_piece(x.count, options_.chunk, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
      const std::ptrdiff_t n = end - begin;
      ensure_scratch(s, n);
      T* pooled1 = ws_.pooled1.data() + begin * pooled1_size();
      T* pooled2 = ws_.pooled2.data() + begin * pooled2_size();
      conv1_.forward(w + offset(conv1_w_), w + offset(conv1_b_), x.data + begin * x.image_size(), input_layout(x, n),
                     s.col1.data(), s.y1.data(), s.gemm);
      MaxPool2d::forward(s.y1.data(), conv1_out(n), pooled1, ws_.argmax1.data() + begin * pooled1_size());
      Relu::forward(pooled1, n * pooled1_size());
      conv2_.forward(w + offset(conv2_w_), w + offset(conv2_b_), pooled1, pool1_out(n), s.col2.data(), s.y2.data(),
                     s.gemm);
      MaxPool2d::forward(s.y2.data(), conv2_out(n), pooled2, ws_.argmax2.data() + begin * pooled2_size());
      Relu::forward(pooled2, n * pooled2_size());
      Flatten::forward(pooled2, pool2_out(n), ws_.a0.data(), begin);
    });

    // Phase B: the fully connected layers over the whole batch, in fixed row tiles.
    for_each_piece(x.count, row_tile, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
      fc1_.forward(w + offset(fc1_w_), w + offset(fc1_b_), ws_.a0.data(), ws_.a1.data(), begin, end, s.gemm);
      Relu::forward(ws_.a1.data() + begin * fc1_.out_features, (end - begin) * fc1_.out_features);
      fc2_.forward(w + offset(fc2_w_), w + offset(fc2_b_), ws_.a1.data(), ws_.a2.data(), begin, end, s.gemm);
      Relu::forward(ws_.a2.data() + begin * fc2_.out_features, (end - begin) * fc2_.out_features);
      fc3_.forward(w + offset(fc3_w_), w + offset(fc3_b_), ws_.a2.data(), ws_.logits.data(), begin, end, s.gemm);
    });
  }

  // Loss and accuracy over the logits; with `gradient`, d_logits = weight / count * dloss/dz.
  LossStats loss(std::ptrdiff_t count, std::span<const std::int32_t> labels, double weight, bool gradient) {
    const CrossEntropy criterion{options_.label_smoothing};
    const std::ptrdiff_t classes = options_.classes;
    const double scale = weight / static_cast<double>(count);
    for_each_piece(count, row_tile, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch&) {
      for (std::ptrdiff_t r = begin; r < end; ++r) {
        const T* z = ws_.logits.data() + r * classes;
        const std::int32_t label = labels[static_cast<std::size_t>(r)];
        ws_.row_loss[r] = criterion.row(z, classes, label, gradient ? ws_.d_logits.data() + r * classes : nullptr, scale);
        ws_.row_top1[r] = in_top_k(z, classes, label, 1) ? 1 : 0;
        ws_.row_top5[r] = in_top_k(z, classes, label, 5) ? 1 : 0;
      }
    });
    LossStats stats;
    for (std::ptrdiff_t r = 0; r < count; ++r) {  // in row order: the same sum for any threads
      stats.loss += ws_.row_loss[r];
      stats.correct1 += ws_.row_top1[r];
      stats.correct5 += ws_.row_top5[r];
    }
    stats.loss /= static_cast<double>(count);
    stats.count = count;
    return stats;
  }

  void run_backward(const Images<T>& x) {
    const T* w = params_.values().data();
    T* g = params_.grads().data();
    const auto offset = [&](std::size_t block) { return params_.block(block).offset; };
    const std::ptrdiff_t count = x.count;

    // Phase B backward: weight gradients over the whole batch in fixed output tiles, then input
    // gradients in fixed row tiles, layer by layer.
    auto weights = [&](const Linear& layer, const T* input, const T* d_out, std::size_t wb, std::size_t bb) {
      for_each_piece(layer.out_features, out_tile, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
        layer.backward_weights(input, d_out, count, g + offset(wb), g + offset(bb), begin, end, s.gemm);
      });
    };
    auto inputs = [&](const Linear& layer, const T* d_out, T* d_in, std::size_t wb, const T* activation) {
      for_each_piece(count, row_tile, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
        layer.backward_input(w + offset(wb), d_out, d_in, begin, end, s.gemm);
        const std::ptrdiff_t width = layer.in_features;
        Relu::backward(activation + begin * width, d_in + begin * width, (end - begin) * width);
      });
    };
    weights(fc3_, ws_.a2.data(), ws_.d_logits.data(), fc3_w_, fc3_b_);
    inputs(fc3_, ws_.d_logits.data(), ws_.d_a2.data(), fc3_w_, ws_.a2.data());
    weights(fc2_, ws_.a1.data(), ws_.d_a2.data(), fc2_w_, fc2_b_);
    inputs(fc2_, ws_.d_a2.data(), ws_.d_a1.data(), fc2_w_, ws_.a1.data());
    weights(fc1_, ws_.a0.data(), ws_.d_a1.data(), fc1_w_, fc1_b_);
    // fc1's input is pooled2 after its ReLU: the mask is applied per chunk below.
    for_each_piece(count, row_tile, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
      fc1_.backward_input(w + offset(fc1_w_), ws_.d_a1.data(), ws_.d_a0.data(), begin, end, s.gemm);
    });

    // Phase C: the convolutions backward, chunk by chunk, each into its own gradient slot.
    const std::ptrdiff_t region = conv_region();
    for_each_piece(count, options_.chunk, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
      const std::ptrdiff_t n = end - begin;
      ensure_scratch(s, n);
      T* slot = ws_.slots.data() + (begin / options_.chunk) * region;
      std::fill_n(slot, region, T(0));
      const T* pooled1 = ws_.pooled1.data() + begin * pooled1_size();
      const T* pooled2 = ws_.pooled2.data() + begin * pooled2_size();
      // Back to the chunk's channel-major layout, through pool2's ReLU.
      Flatten::backward(ws_.d_a0.data(), begin, pool2_out(n), s.dp2.data());
      Relu::backward(pooled2, s.dp2.data(), n * pooled2_size());
      MaxPool2d::backward(s.dp2.data(), ws_.argmax2.data() + begin * pooled2_size(), conv2_out(n), s.dy2.data());
      conv2_.im2col(pooled1, pool1_out(n), s.col2.data());
      conv2_.backward(w + offset(conv2_w_), s.dy2.data(), pool1_out(n), s.col2.data(), s.dcol2.data(),
                      slot + offset(conv2_w_), slot + offset(conv2_b_), s.dp1.data(), s.gemm);
      Relu::backward(pooled1, s.dp1.data(), n * pooled1_size());
      MaxPool2d::backward(s.dp1.data(), ws_.argmax1.data() + begin * pooled1_size(), conv1_out(n), s.dy1.data());
      const T* images = x.data + begin * x.image_size();
      conv1_.im2col(images, input_layout(x, n), s.col1.data());
      conv1_.backward(w + offset(conv1_w_), s.dy1.data(), input_layout(x, n), s.col1.data(), static_cast<T*>(nullptr),
                      slot + offset(conv1_w_), slot + offset(conv1_b_), static_cast<T*>(nullptr), s.gemm);
    });

    // The slots, added in chunk order (each element's sum is the same for any thread count).
    const std::ptrdiff_t slots = chunks(count);
    parallel::for_each_chunk(region, 4096, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t j = begin; j < end; ++j) {
        T sum = ws_.slots[j];
        for (std::ptrdiff_t k = 1; k < slots; ++k) sum += ws_.slots[k * region + j];
        g[j] += sum;
      }
    });
  }

  LeNet5Options options_;
  params_type params_;
  Conv2d conv1_, conv2_;
  Linear fc1_, fc2_, fc3_;
  std::ptrdiff_t size1_ = 0, pooled1_ = 0, size2_ = 0, pooled2_ = 0;
  std::size_t conv1_w_ = 0, conv1_b_ = 0, conv2_w_ = 0, conv2_b_ = 0;
  std::size_t fc1_w_ = 0, fc1_b_ = 0, fc2_w_ = 0, fc2_b_ = 0, fc3_w_ = 0, fc3_b_ = 0;
  Workspace ws_;
};

static_assert(Model<LeNet5<float>>, "LeNet5 must model nn::Model");

}  // namespace distopt::nn
