// LeNet-5 on the CPU: the model the whole study trains.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <string>
#include <vector>

#include <omp.h>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/core/compiler.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/parameter_set.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/nn/conv2d.hpp"
#include "distopt/nn/gemm/kernel.hpp"
#include "distopt/nn/init.hpp"
#include "distopt/nn/isa.hpp"
#include "distopt/nn/linear.hpp"
#include "distopt/nn/loss.hpp"
#include "distopt/nn/maxpool2d.hpp"
#include "distopt/nn/model.hpp"

DISTOPT_PR105593_OFF

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

  /// The LeNet-5 for square images of `channels` x `size` x `size` and `classes` classes: the
  /// classic one, conv1 padded by 2, on 28 x 28 images (MNIST, Fashion-MNIST: LeCun et al. 1998's
  /// 32 x 32 input field), the hsu one otherwise (CIFAR's 32 x 32). Throws
  /// std::invalid_argument naming the shape for images that are not square.
  [[nodiscard]] static LeNet5Options for_images(std::ptrdiff_t channels, std::ptrdiff_t height, std::ptrdiff_t width,
                                                std::ptrdiff_t classes, std::uint64_t seed = 0) {
    require(height == width, "LeNet5Options::for_images: LeNet-5 takes square images, got ", height, " x ", width);
    const bool small = height == 28;
    return {.preset = small ? Preset::classic : Preset::hsu,
            .classes = classes,
            .channels = channels,
            .image_size = height,
            .padding = small ? 2 : 0,
            .seed = seed};
  }
};

/// The passes of a LeNet5 step, in the order they run, for its per-layer timing.
enum class Pass : std::uint8_t {
  conv1_forward, pool1_forward, conv2_forward, pool2_forward, fc1_forward, fc2_forward, fc3_forward, loss,
  fc3_backward, fc2_backward, fc1_backward, pool2_backward, conv2_weights, conv2_input, pool1_backward,
  conv1_weights, gradient_sum
};
inline constexpr std::size_t pass_count = 17;
[[nodiscard]] constexpr const char* to_string(Pass p) noexcept {
  constexpr std::array<const char*, pass_count> names = {
      "conv1 forward", "pool1+relu forward", "conv2 forward", "pool2+relu forward", "fc1+relu forward",
      "fc2+relu forward", "fc3 forward", "cross-entropy", "fc3 backward", "fc2 backward", "fc1 backward",
      "pool2+relu backward", "conv2 weight grad", "conv2 input grad", "pool1+relu backward", "conv1 weight grad",
      "chunk gradient sum"};
  return names[static_cast<std::size_t>(p)];
}

/// LeNet-5: conv1 - max-pool - ReLU - conv2 - max-pool - ReLU - fc1 - ReLU - fc2 - ReLU - fc3, with
/// cross-entropy on the logits. Blocks are named as PyTorch's state_dict (`conv1.weight`, ...,
/// `fc3.bias`) and initialised with PyTorch's default distributions from `seed`.
///
/// Pooling comes before the ReLU: max and ReLU commute, so the function is PyTorch's
/// (conv - ReLU - pool) exactly, with a quarter of the ReLU work, and the two run as one pass.
///
/// A batch is cut into chunks of `chunk` images. The convolutions run per chunk, chunks spread over
/// OpenMP threads with per-thread scratch; each chunk adds its convolution gradients into its own
/// slot, and the slots are added in chunk order. Each fully connected layer is one product over the
/// whole batch (nn/gemm), its output split over the threads; every element is the same sum
/// whatever the split. So the same inputs give the same bits with 1, 2 or 3 threads, and
/// inside another parallel region the model runs on the calling thread. After the first batch of
/// the largest size, a step allocates nothing.
template <std::floating_point T = float>
class LeNet5 {
 public:
  using scalar_type = T;
  using params_type = BasicParameterSet<T>;

  explicit LeNet5(LeNet5Options options = {}) : options_(options) {
    (void)active_isa();  // an invalid DISTOPT_ISA is reported here, not inside a parallel region
    require(options.classes >= 1, "LeNet5: classes must be >= 1, got ", options.classes);
    require(options.channels >= 1, "LeNet5: channels must be >= 1, got ", options.channels);
    require(options.chunk >= 1, "LeNet5: chunk must be >= 1, got ", options.chunk);
    require(options.label_smoothing >= 0 && options.label_smoothing <= 1,
            "LeNet5: label_smoothing must be in [0, 1], got ", options.label_smoothing);
    const bool hsu = options.preset == Preset::hsu;
    const std::ptrdiff_t c1 = hsu ? 64 : 6, c2 = hsu ? 64 : 16, f1 = hsu ? 384 : 120, f2 = hsu ? 192 : 84;
    require(options.padding >= 0 && options.padding <= 4, "LeNet5: padding must be in [0, 4], got ", options.padding);
    conv1_ = {"conv1", options.channels, c1, 5, options.padding};
    framed_conv1_ = {"conv1", options.channels, c1, 5, 0};
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
  /// Logits per sample (nn::Model).
  [[nodiscard]] std::ptrdiff_t output_size() const noexcept { return options_.classes; }
  /// Values per input sample: channels x image_size x image_size.
  [[nodiscard]] std::ptrdiff_t input_size() const noexcept {
    return options_.channels * options_.image_size * options_.image_size;
  }

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

  /// The nn::Model interface: samples of shape [channels, image_size, image_size], class ids.
  void forward(const Samples<T>& x, T* logits) { forward(x.images("conv1"), logits); }
  LossStats evaluate(const Samples<T>& x, const Targets& y) { return evaluate(x.images("conv1"), class_ids(y)); }
  LossStats loss_and_gradient(const Samples<T>& x, const Targets& y, double weight = 1.0) {
    return loss_and_gradient(x.images("conv1"), class_ids(y), weight);
  }

  /// Per-pass timing for benchmarks: while on, every pass adds its time on each thread, so with
  /// one thread the seconds add up to the step. Off by default (it costs two clock reads per
  /// pass and chunk); switching it on or off clears the totals.
  void time_passes(bool on) {
    timing_ = on;
    for (auto& t : ws_.threads) t.seconds.fill(0.0);
  }
  /// Seconds spent in each pass since time_passes(true), summed over threads.
  [[nodiscard]] std::array<double, pass_count> pass_seconds() const {
    std::array<double, pass_count> total{};
    for (const auto& t : ws_.threads)
      for (std::size_t p = 0; p < pass_count; ++p) total[p] += t.seconds[p];
    return total;
  }

 private:
  // Scratch one thread needs for one chunk.
  struct ThreadScratch {
    AlignedBuffer<T> y1, y2, dp1, dy1, dy2;
    gemm::Workspace<T> gemm;
    std::array<double, pass_count> seconds{};
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
    AlignedBuffer<T> framed, pooled1, a0, a1, a2, logits, d_logits, d_a2, d_a1, d_a0, slots;
    AlignedBuffer<std::uint8_t> argmax1, argmax2;
    AlignedBuffer<double> row_loss;
    AlignedBuffer<std::uint8_t> row_top1, row_top5;
    std::vector<ThreadScratch> threads;
  };

  static constexpr std::ptrdiff_t row_tile = 16;  // rows of a loss tile

  static std::span<const std::int32_t> class_ids(const Targets& y) {
    require(y.are_classes(), "LeNet5: cross-entropy needs class ids, the batch has real-valued targets of width ", y.width);
    return y.classes;
  }

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
    if (options_.padding > 0) ws_.framed = AlignedBuffer<T>(n * framed_conv1_.in_channels * framed_size() * framed_size());
    ws_.pooled1 = AlignedBuffer<T>(n * pooled1_size());
    ws_.argmax1 = AlignedBuffer<std::uint8_t>(n * pooled1_size());
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

  // Runs body(begin, end, scratch) over fixed pieces of [0, n), pieces spread over the team
  // (or on the calling thread inside another parallel region).
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

  // Runs body(begin, end, scratch) over one block of [0, n) per thread, blocks a multiple of
  // `align`: for the fully connected products, whose every element is the same sum whatever the
  // block, so the split may follow the team.
  template <class Body>
  void for_each_block(std::ptrdiff_t n, std::ptrdiff_t align, Body&& body) {
    const std::ptrdiff_t team = omp_in_parallel() ? 1 : omp_get_max_threads();
    const std::ptrdiff_t piece = std::max<std::ptrdiff_t>(align, (n + team * align - 1) / (team * align) * align);
    for_each_piece(n, piece, body);
  }

  // Runs f(), adding its time to pass p of this thread when timing is on.
  template <class F>
  void timed(ThreadScratch& s, Pass p, F&& f) const {
    if (!timing_) {
      f();
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    f();
    s.seconds[static_cast<std::size_t>(p)] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  static void ensure(AlignedBuffer<T>& buffer, std::ptrdiff_t size) {
    if (buffer.size() < size) buffer = AlignedBuffer<T>(size);
  }
  void ensure_scratch(ThreadScratch& s, std::ptrdiff_t n) const {
    const std::ptrdiff_t columns1 = n * size1_ * size1_, columns2 = n * size2_ * size2_;
    ensure(s.y1, conv1_.out_channels * columns1);
    ensure(s.y2, conv2_.out_channels * columns2);
    ensure(s.dp1, n * pooled1_size());
    ensure(s.dy1, conv1_.out_channels * columns1);
    ensure(s.dy2, conv2_.out_channels * columns2);
  }

  // conv1 runs unpadded: with padding, over a copy of the batch inside a zero frame (the frame is
  // zeroed when the buffer is made and never written), made once by the forward pass and read
  // again by the weight gradient, so its packers never test bounds.
  std::ptrdiff_t framed_size() const { return options_.image_size + 2 * options_.padding; }
  void frame(const Images<T>& x, std::ptrdiff_t begin, std::ptrdiff_t n) {
    const std::ptrdiff_t pad = options_.padding;
    if (pad == 0) return;
    const PlaneLayout layout = PlaneLayout::nchw(n, x.channels, framed_size(), framed_size());
    T* framed = ws_.framed.data() + begin * layout.image_stride;
    const T* images = x.data + begin * x.image_size();
    for (std::ptrdiff_t i = 0; i < n; ++i)
      for (std::ptrdiff_t c = 0; c < x.channels; ++c)
        for (std::ptrdiff_t y = 0; y < x.height; ++y)
          std::copy_n(images + ((i * x.channels + c) * x.height + y) * x.width, x.width,
                      framed + layout.at(c, i, y + pad, pad));
  }
  // conv1's input for chunk [begin, begin + n): the images, or their framed copy.
  std::pair<const T*, PlaneLayout> conv1_input(const Images<T>& x, std::ptrdiff_t begin, std::ptrdiff_t n) const {
    if (options_.padding == 0) return {x.data + begin * x.image_size(), input_layout(x, n)};
    const PlaneLayout layout = PlaneLayout::nchw(n, x.channels, framed_size(), framed_size());
    return {ws_.framed.data() + begin * layout.image_stride, layout};
  }

  // Layouts of the pieces of chunk [begin, end).
  PlaneLayout input_layout(const Images<T>& x, std::ptrdiff_t n) const {
    return PlaneLayout::nchw(n, x.channels, x.height, x.width);
  }
  PlaneLayout conv1_out(std::ptrdiff_t n) const { return PlaneLayout::cnhw(conv1_.out_channels, n, size1_, size1_); }
  PlaneLayout pool1_out(std::ptrdiff_t n) const { return PlaneLayout::cnhw(conv1_.out_channels, n, pooled1_, pooled1_); }
  PlaneLayout conv2_out(std::ptrdiff_t n) const { return PlaneLayout::cnhw(conv2_.out_channels, n, size2_, size2_); }
  // pool2 writes fc1's input rows directly: image i of the chunk is a row of a0, in PyTorch's
  // flatten order (channel, row, column).
  PlaneLayout pool2_out(std::ptrdiff_t n) const { return PlaneLayout::nchw(n, conv2_.out_channels, pooled2_, pooled2_); }

  void run_forward(const Images<T>& x) {
    reserve(x.count);
    const T* w = params_.values().data();
    const auto offset = [&](std::size_t block) { return params_.block(block).offset; };

    // Phase A: the convolutions, chunk by chunk.
    for_each_piece(x.count, options_.chunk, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
      const std::ptrdiff_t n = end - begin;
      ensure_scratch(s, n);
      T* pooled1 = ws_.pooled1.data() + begin * pooled1_size();
      timed(s, Pass::conv1_forward, [&] {
        frame(x, begin, n);
        const auto [images, layout] = conv1_input(x, begin, n);
        framed_conv1_.forward(w + offset(conv1_w_), w + offset(conv1_b_), images, layout, s.y1.data(), s.gemm);
      });
      timed(s, Pass::pool1_forward, [&] {
        MaxPool2d::forward(s.y1.data(), conv1_out(n), pooled1, pool1_out(n),
                           ws_.argmax1.data() + begin * pooled1_size(), true);
      });
      timed(s, Pass::conv2_forward, [&] {
        conv2_.forward(w + offset(conv2_w_), w + offset(conv2_b_), pooled1, pool1_out(n), s.y2.data(), s.gemm);
      });
      timed(s, Pass::pool2_forward, [&] {
        MaxPool2d::forward(s.y2.data(), conv2_out(n), ws_.a0.data() + begin * fc1_.in_features, pool2_out(n),
                           ws_.argmax2.data() + begin * pooled2_size(), true);
      });
    });

    // Phase B: the fully connected layers, each one product over the whole batch, its output
    // columns split over the team; bias and ReLU fused.
    const std::ptrdiff_t count = x.count, nr = gemm::shape<T>().nr;
    auto dense = [&](const Linear& layer, const T* in, T* out, std::size_t wb, std::size_t bb, bool relu, Pass p) {
      for_each_block(layer.out_features, nr, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
        timed(s, p, [&] { layer.forward(w + offset(wb), w + offset(bb), in, count, out, begin, end, relu, s.gemm); });
      });
    };
    dense(fc1_, ws_.a0.data(), ws_.a1.data(), fc1_w_, fc1_b_, true, Pass::fc1_forward);
    dense(fc2_, ws_.a1.data(), ws_.a2.data(), fc2_w_, fc2_b_, true, Pass::fc2_forward);
    dense(fc3_, ws_.a2.data(), ws_.logits.data(), fc3_w_, fc3_b_, false, Pass::fc3_forward);
  }

  // Loss and accuracy over the logits; with `gradient`, d_logits = weight / count * dloss/dz.
  LossStats loss(std::ptrdiff_t count, std::span<const std::int32_t> labels, double weight, bool gradient) {
    const CrossEntropy criterion{options_.label_smoothing};
    const std::ptrdiff_t classes = options_.classes;
    const double scale = weight / static_cast<double>(count);
    for_each_piece(count, row_tile, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
      timed(s, Pass::loss, [&] {
        for (std::ptrdiff_t r = begin; r < end; ++r) {
          const T* z = ws_.logits.data() + r * classes;
          const std::int32_t label = labels[static_cast<std::size_t>(r)];
          ws_.row_loss[r] =
              criterion.row(z, classes, label, gradient ? ws_.d_logits.data() + r * classes : nullptr, scale);
          ws_.row_top1[r] = in_top_k(z, classes, label, 1) ? 1 : 0;
          ws_.row_top5[r] = in_top_k(z, classes, label, 5) ? 1 : 0;
        }
      });
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

    // Phase B backward, layer by layer: the weight gradient (its output rows split over the
    // team), then the input gradient (its columns split) through the ReLU below, fused.
    const std::ptrdiff_t nr = gemm::shape<T>().nr, mr = gemm::shape<T>().mr;
    auto back = [&](const Linear& layer, const T* input, const T* d_out, T* d_in, std::size_t wb, std::size_t bb,
                    Pass p) {
      for_each_block(layer.out_features, mr, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
        timed(s, p, [&] { layer.backward_weights(input, d_out, count, g + offset(wb), g + offset(bb), begin, end, s.gemm); });
      });
      for_each_block(layer.in_features, nr, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
        timed(s, p, [&] { layer.backward_input(w + offset(wb), d_out, count, d_in, begin, end, input, s.gemm); });
      });
    };
    back(fc3_, ws_.a2.data(), ws_.d_logits.data(), ws_.d_a2.data(), fc3_w_, fc3_b_, Pass::fc3_backward);
    back(fc2_, ws_.a1.data(), ws_.d_a2.data(), ws_.d_a1.data(), fc2_w_, fc2_b_, Pass::fc2_backward);
    back(fc1_, ws_.a0.data(), ws_.d_a1.data(), ws_.d_a0.data(), fc1_w_, fc1_b_, Pass::fc1_backward);

    // Phase C: the convolutions backward, chunk by chunk, each into its own gradient slot.
    const std::ptrdiff_t region = conv_region();
    for_each_piece(count, options_.chunk, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
      const std::ptrdiff_t n = end - begin;
      ensure_scratch(s, n);
      T* slot = ws_.slots.data() + (begin / options_.chunk) * region;
      std::fill_n(slot, region, T(0));
      const T* pooled1 = ws_.pooled1.data() + begin * pooled1_size();
      // d_a0 already holds pool2's ReLU mask (fc1's input gradient took it from a0).
      timed(s, Pass::pool2_backward, [&] {
        MaxPool2d::backward(ws_.d_a0.data() + begin * fc1_.in_features, pool2_out(n),
                            ws_.argmax2.data() + begin * pooled2_size(), static_cast<const T*>(nullptr), conv2_out(n),
                            s.dy2.data());
      });
      timed(s, Pass::conv2_weights, [&] {
        conv2_.backward_weights(s.dy2.data(), pooled1, pool1_out(n), slot + offset(conv2_w_),
                                slot + offset(conv2_b_), s.gemm);
      });
      timed(s, Pass::conv2_input,
            [&] { conv2_.backward_input(w + offset(conv2_w_), s.dy2.data(), pool1_out(n), s.dp1.data(), s.gemm); });
      timed(s, Pass::pool1_backward, [&] {
        MaxPool2d::backward(s.dp1.data(), pool1_out(n), ws_.argmax1.data() + begin * pooled1_size(), pooled1,
                            conv1_out(n), s.dy1.data());
      });
      timed(s, Pass::conv1_weights, [&] {
        const auto [images, layout] = conv1_input(x, begin, n);
        framed_conv1_.backward_weights(s.dy1.data(), images, layout, slot + offset(conv1_w_),
                                       slot + offset(conv1_b_), s.gemm);
      });
    });

    // The slots, added in chunk order (each element's sum is the same for any thread count).
    const std::ptrdiff_t slots = chunks(count);
    constexpr std::ptrdiff_t block = 1024;  // slot by slot over a block that stays in L1
    for_each_piece(region, block, [&](std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
      timed(s, Pass::gradient_sum, [&] {
        T sum[block];
        const std::ptrdiff_t n = end - begin;
        std::copy_n(ws_.slots.data() + begin, n, sum);
        for (std::ptrdiff_t k = 1; k < slots; ++k) {
          const T* slot = ws_.slots.data() + k * region + begin;
          for (std::ptrdiff_t j = 0; j < n; ++j) sum[j] += slot[j];
        }
        for (std::ptrdiff_t j = 0; j < n; ++j) g[begin + j] += sum[j];
      });
    });
  }

  LeNet5Options options_;
  params_type params_;
  Conv2d conv1_, conv2_;
  Conv2d framed_conv1_;  // conv1 without padding, over conv1_input's framed copy
  Linear fc1_, fc2_, fc3_;
  std::ptrdiff_t size1_ = 0, pooled1_ = 0, size2_ = 0, pooled2_ = 0;
  std::size_t conv1_w_ = 0, conv1_b_ = 0, conv2_w_ = 0, conv2_b_ = 0;
  std::size_t fc1_w_ = 0, fc1_b_ = 0, fc2_w_ = 0, fc2_b_ = 0, fc3_w_ = 0, fc3_b_ = 0;
  Workspace ws_;
  bool timing_ = false;
};

static_assert(Model<LeNet5<float>>, "LeNet5 must model nn::Model");

}  // namespace distopt::nn

DISTOPT_PR105593_ON
