// A model made of the library's layers in order, as torch.nn.Sequential: the backward pass, the
// scratch and the parallel schedule follow from the list.
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <omp.h>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/core/compiler.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/parameter_set.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/samples.hpp"
#include "distopt/nn/conv2d.hpp"
#include "distopt/nn/flatten.hpp"
#include "distopt/nn/gemm/kernel.hpp"
#include "distopt/nn/init.hpp"
#include "distopt/nn/isa.hpp"
#include "distopt/nn/linear.hpp"
#include "distopt/nn/loss.hpp"
#include "distopt/nn/maxpool2d.hpp"
#include "distopt/nn/model.hpp"
#include "distopt/nn/relu.hpp"
#include "distopt/nn/tanh.hpp"

DISTOPT_PR105593_OFF

namespace distopt::nn {

/// One layer of a Sequential, as the functions of nn::layers write it.
struct LayerSpec {
  enum class Kind : std::uint8_t { linear, conv2d, maxpool2d, relu, tanh, flatten };
  Kind kind = Kind::relu;
  std::ptrdiff_t features = 0;  ///< linear: out_features; conv2d: out_channels
  std::ptrdiff_t kernel = 0;    ///< conv2d: kernel x kernel
  std::ptrdiff_t padding = 0;   ///< conv2d: zeros on every side
};

/// The name of a layer kind, as its spec function is called.
[[nodiscard]] constexpr const char* to_string(LayerSpec::Kind kind) noexcept {
  constexpr std::array<const char*, 6> names = {"linear", "conv2d", "maxpool2d", "relu", "tanh", "flatten"};
  return names[static_cast<std::size_t>(kind)];
}

/// The layers a Sequential is built from, named and ordered as torch.nn's:
///   using namespace distopt::nn::layers;
///   nn::Sequential<float> mlp({13}, {linear(64), relu(), linear(3)});
namespace layers {
/// torch.nn.Linear(in, out_features): y = x W^T + b on samples of rank 1 (in from the sample).
[[nodiscard]] inline LayerSpec linear(std::ptrdiff_t out_features) {
  return {LayerSpec::Kind::linear, out_features, 0, 0};
}
/// torch.nn.Conv2d(in, out_channels, kernel, stride=1, padding) on samples [channels, height, width].
[[nodiscard]] inline LayerSpec conv2d(std::ptrdiff_t out_channels, std::ptrdiff_t kernel, std::ptrdiff_t padding = 0) {
  return {LayerSpec::Kind::conv2d, out_channels, kernel, padding};
}
/// torch.nn.MaxPool2d(2): 2 x 2 windows, stride 2, odd trailing rows and columns dropped.
[[nodiscard]] inline LayerSpec maxpool2d() { return {LayerSpec::Kind::maxpool2d, 0, 0, 0}; }
/// torch.nn.ReLU.
[[nodiscard]] inline LayerSpec relu() { return {LayerSpec::Kind::relu, 0, 0, 0}; }
/// torch.nn.Tanh.
[[nodiscard]] inline LayerSpec tanh() { return {LayerSpec::Kind::tanh, 0, 0, 0}; }
/// torch.nn.Flatten: each sample to rank 1, row-major ([C, H, W] in PyTorch's (c, y, x) order).
[[nodiscard]] inline LayerSpec flatten() { return {LayerSpec::Kind::flatten, 0, 0, 0}; }
}  // namespace layers

/// What a Sequential learns with and from.
struct SequentialOptions {
  Loss loss = Loss::cross_entropy();  ///< on the last layer's outputs
  std::uint64_t seed = 0;             ///< initial weights
  /// Samples per chunk of the convolutions, poolings and flattens. Part of the numerics (the
  /// order in which the chunks' convolution gradients are added), never of the thread count.
  std::ptrdiff_t chunk = 4;
};

/// Layers applied in order, then the loss (nn::Loss) on the last one's outputs, as
/// torch.nn.Sequential followed by F.cross_entropy or F.mse_loss. Shapes are checked when the
/// model is built: an error names the layer (its index and kind) and the shapes at fault. Blocks
/// are named as PyTorch's nn.Sequential state_dict names them, "<index>.weight" and
/// "<index>.bias" with the layer's position in the list, so a state dict maps one to one; each is
/// initialised with PyTorch's default distribution (nn::uniform_fan_in) from its own stream of
/// `seed`.
///
/// The schedule is LeNet5's, derived from the list. Every layer's output is kept for the whole
/// batch. A linear layer is one product over the whole batch, its output columns split over the
/// OpenMP team, every element the same sum whatever the split. The layers between two linear
/// layers run as one pass over fixed chunks of `chunk` samples spread over the team, each chunk
/// through all of them while it is in cache (a convolution's output is held channel-major per
/// chunk, as Conv2d writes it); each chunk adds its convolution weight gradients into its own
/// slot, and the slots are added in chunk order. So the same inputs give the same bits with any
/// number of threads, and inside another parallel region (or for a pass too small to share) the
/// model runs on the calling thread alone. A ReLU or Tanh after a layer whose backward pass does
/// not read its own output (linear, conv2d, maxpool2d) runs in place, and a ReLU after a linear
/// layer or a pooling is applied in that layer's epilogue, its backward pass in the input
/// gradient of the linear layer above it: the bits are those of the separate passes. After the
/// first batch of the largest size, a step allocates nothing.
template <std::floating_point T = float>
class Sequential {
 public:
  using scalar_type = T;
  using params_type = BasicParameterSet<T>;
  using Kind = LayerSpec::Kind;

  /// Builds the layers over samples of shape `input`; std::invalid_argument naming the layer and
  /// the shapes when one does not fit its input, or for a bad option.
  Sequential(Shape input, std::vector<LayerSpec> specs, SequentialOptions options = {})
      : options_(options), input_(input), loss_(options.loss) {
    (void)active_isa();  // an invalid DISTOPT_ISA is reported here, not inside a parallel region
    require(input.rank >= 1, "Sequential: the input shape is empty");
    require(!specs.empty(), "Sequential: needs at least one layer");
    require(options.chunk >= 1, "Sequential: chunk must be >= 1, got ", options.chunk);
    require(options.loss.label_smoothing >= 0 && options.loss.label_smoothing <= 1,
            "Sequential: label_smoothing must be in [0, 1], got ", options.loss.label_smoothing);
    build(specs);
  }

  [[nodiscard]] params_type& parameters() noexcept { return params_; }
  [[nodiscard]] const params_type& parameters() const noexcept { return params_; }
  [[nodiscard]] const SequentialOptions& options() const noexcept { return options_; }
  [[nodiscard]] const Loss& loss() const noexcept { return loss_; }
  [[nodiscard]] std::size_t num_layers() const noexcept { return nodes_.size(); }
  [[nodiscard]] const LayerSpec& layer(std::size_t index) const { return node(index).spec; }
  /// The shape of the samples a batch must have.
  [[nodiscard]] const Shape& input_shape() const noexcept { return input_; }
  /// The shape of one sample after layer `index`.
  [[nodiscard]] const Shape& output_shape(std::size_t index) const { return node(index).out; }
  /// The shape of one sample's outputs (after the last layer).
  [[nodiscard]] const Shape& output_shape() const noexcept { return nodes_.back().out; }
  /// Values per input sample.
  [[nodiscard]] std::ptrdiff_t input_size() const noexcept { return input_.size(); }
  /// Values per output sample: logits of a classifier, predictions of a regression (nn::Model).
  [[nodiscard]] std::ptrdiff_t output_size() const noexcept { return nodes_.back().out.size(); }

  /// One line per layer: "3 linear [400] -> [120] (48120 parameters)".
  [[nodiscard]] std::string summary() const {
    std::string out;
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      const Node& n = nodes_[i];
      out += message(i, " ", to_string(n.spec.kind), " ", n.in.str(), " -> ", n.out.str());
      if (n.trainable) out += message(" (", params_.block(n.weight).size + params_.block(n.bias).size, " parameters)");
      out += "\n";
    }
    return out;
  }

  /// Copies weights from a set of the same layout (std::invalid_argument naming the first
  /// difference otherwise).
  void load_parameters(const params_type& other) { params_.assign_values(other); }

  /// Outputs [x.count, output_size()], row-major (each sample's outputs in PyTorch's order).
  void forward(const Samples<T>& x, T* out) {
    check_input(x);
    run_forward(x);
    std::copy_n(activation(x, output_buffer_), x.count * output_size(), out);
  }

  /// Mean loss (and top-1/top-5 hits for a classifier) of a batch; gradients untouched.
  LossStats evaluate(const Samples<T>& x, const Targets& y) {
    check_input(x, y);
    run_forward(x);
    return run_loss(x, y, 0.0, false);
  }

  /// Adds weight * (gradient of the batch's mean loss) into parameters().grads().
  LossStats loss_and_gradient(const Samples<T>& x, const Targets& y, double weight = 1.0) {
    check_input(x, y);
    run_forward(x);
    const LossStats stats = run_loss(x, y, weight, true);
    run_backward(x);
    return stats;
  }

 private:
  // A layer with what the passes need to know of it.
  struct Node {
    LayerSpec spec;
    Shape in, out;
    std::size_t in_buffer = 0, out_buffer = 0;  // activations (buffer 0: the batch itself)
    bool in_channel_major = false, out_channel_major = false;
    bool in_place = false;        // relu, tanh over their input; a flatten that moves nothing
    bool fused_relu = false;      // linear, maxpool2d: the in-place ReLU after it, in its epilogue
    bool forward_fused = false;   // relu: its forward pass done by the layer below or the pooling above
    bool mask_below = false;      // linear: the in-place ReLU below masks its input gradient
    bool backward_fused = false;  // relu: its backward pass done by the linear layer or pooling above
    bool relu_before = false;     // maxpool2d: the in-place ReLU before it, moved after it (fused)
    bool trainable = false;
    Linear linear{};
    Conv2d conv{};
    std::size_t weight = 0, bias = 0;  // parameter blocks
    std::size_t argmax = 0;            // maxpool2d: its argmax buffer
  };

  // Layers [first, last) run as one pass: a linear layer alone (`dense`), or a run of the other
  // layers, chunk by chunk (`chunked`: one of them reads a chunk's layout) or split freely.
  struct Stage {
    std::size_t first = 0, last = 0;
    bool dense = false, chunked = false;
    double work = 0;  // per sample, for worth_a_team
  };

  struct ThreadScratch {
    gemm::Workspace<T> gemm;
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
    std::vector<AlignedBuffer<T>> acts, grads;  // per buffer id
    std::vector<AlignedBuffer<std::uint8_t>> argmax;
    AlignedBuffer<T> slots;
    AlignedBuffer<double> row_loss;
    AlignedBuffer<std::uint8_t> row_top1, row_top5;
    std::vector<ThreadScratch> threads;
  };

  static constexpr std::ptrdiff_t row_tile = 16;  // rows of a loss tile

  const Node& node(std::size_t index) const {
    require<std::out_of_range>(index < nodes_.size(), "Sequential: layer ", index, " out of range (", nodes_.size(),
                               " layers)");
    return nodes_[index];
  }

  // Shapes, buffers, parameter blocks and fusions from the list.
  void build(const std::vector<LayerSpec>& specs) {
    const Rng rng(options_.seed);
    auto add_block = [&](std::string name, std::vector<std::ptrdiff_t> shape, std::ptrdiff_t fan_in) {
      const std::size_t index = params_.add(std::move(name), std::move(shape));
      uniform_fan_in(params_.value(index), fan_in, rng.split(index));
      return index;
    };
    buffer_sizes_ = {input_.size()};
    std::vector<int> writer = {-1};  // per buffer: the kind of the layer that wrote it last (-1: the batch)
    auto new_buffer = [&](std::ptrdiff_t size, Kind kind) {
      buffer_sizes_.push_back(size);
      writer.push_back(static_cast<int>(kind));
      return buffer_sizes_.size() - 1;
    };
    Shape shape = input_;
    bool channel_major = false;
    std::size_t buffer = 0;
    std::size_t pools = 0;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const LayerSpec& spec = specs[i];
      Node n;
      n.spec = spec;
      n.in = shape;
      n.in_buffer = buffer;
      n.in_channel_major = channel_major;
      const std::string who = message("Sequential: layer ", i, " (", to_string(spec.kind), ")");
      const std::string name = std::to_string(i);
      switch (spec.kind) {
        case Kind::linear: {
          require(spec.features >= 1, who, ": out_features must be >= 1, got ", spec.features);
          require(shape.rank == 1, who, " needs samples of rank 1, got ", shape.str(), "; add flatten()");
          n.linear = Linear{name, shape[0], spec.features};
          n.out = Shape{spec.features};
          n.out_buffer = new_buffer(n.out.size(), spec.kind);
          n.weight = add_block(name + ".weight", {spec.features, shape[0]}, n.linear.fan_in());
          n.bias = add_block(name + ".bias", {spec.features}, n.linear.fan_in());
          n.trainable = true;
          channel_major = false;
          break;
        }
        case Kind::conv2d: {
          require(spec.features >= 1, who, ": out_channels must be >= 1, got ", spec.features);
          require(spec.kernel >= 1, who, ": kernel must be >= 1, got ", spec.kernel);
          require(spec.padding >= 0, who, ": padding must be >= 0, got ", spec.padding);
          require(shape.rank == 3, who, " needs samples of shape [channels, height, width], got ", shape.str());
          n.conv = Conv2d{name, shape[0], spec.features, spec.kernel, spec.padding};
          const std::ptrdiff_t oh = n.conv.out_size(shape[1]), ow = n.conv.out_size(shape[2]);
          require(oh >= 1 && ow >= 1, who, ": a ", spec.kernel, " x ", spec.kernel, " kernel with padding ",
                  spec.padding, " does not fit samples of ", shape.str());
          n.out = Shape{spec.features, oh, ow};
          n.out_buffer = new_buffer(n.out.size(), spec.kind);
          n.weight = add_block(name + ".weight", {spec.features, shape[0], spec.kernel, spec.kernel}, n.conv.fan_in());
          n.bias = add_block(name + ".bias", {spec.features}, n.conv.fan_in());
          n.trainable = true;
          channel_major = true;
          break;
        }
        case Kind::maxpool2d: {
          require(shape.rank == 3, who, " needs samples of shape [channels, height, width], got ", shape.str());
          require(shape[1] >= 2 && shape[2] >= 2, who, ": a 2 x 2 window does not fit samples of ", shape.str());
          n.out = Shape{shape[0], MaxPool2d::out_size(shape[1]), MaxPool2d::out_size(shape[2])};
          n.out_buffer = new_buffer(n.out.size(), spec.kind);
          n.argmax = pools++;
          break;
        }
        case Kind::relu:
        case Kind::tanh: {
          n.out = shape;
          // In place when nothing reads the values it overwrites: the layer that wrote them reads
          // only its input backward (a ReLU's mask is the same after a second ReLU).
          const int w = writer[buffer];
          n.in_place = buffer != 0 && (w == static_cast<int>(Kind::linear) || w == static_cast<int>(Kind::conv2d) ||
                                       w == static_cast<int>(Kind::maxpool2d) ||
                                       (spec.kind == Kind::relu && w == static_cast<int>(Kind::relu)));
          if (n.in_place) {
            n.out_buffer = buffer;
            writer[buffer] = static_cast<int>(spec.kind);
          } else {
            n.out_buffer = new_buffer(n.out.size(), spec.kind);
          }
          break;
        }
        case Kind::flatten: {
          n.out = Shape{shape.size()};
          // Row-major samples are flat already; channel-major chunks are reordered.
          n.in_place = !channel_major;
          n.out_buffer = n.in_place ? buffer : new_buffer(n.out.size(), spec.kind);
          channel_major = false;
          break;
        }
      }
      require(n.out.size() >= 1, who, ": empty output");
      n.out_channel_major = channel_major;
      shape = n.out;
      buffer = n.out_buffer;
      nodes_.push_back(std::move(n));
    }
    pools_ = pools;

    // The outputs as rows: a copy out of channel-major chunks when the last layer leaves them so.
    const Node& last = nodes_.back();
    output_buffer_ = last.out_channel_major ? new_buffer(last.out.size(), Kind::flatten) : last.out_buffer;

    // Layers below the first with parameters need no backward pass.
    first_trainable_ = nodes_.size();
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].trainable) {
        first_trainable_ = i;
        break;
      }

    // Fusions of an in-place ReLU with the linear layer or the pooling below it (forward), with
    // the pooling above it, and with the linear layer above it (backward). ReLU then max-pooling
    // is max-pooling then ReLU (max and ReLU commute), with a quarter of the ReLU's work; the
    // gradients are the same too: a window whose maximum is not positive passes none either way.
    for (std::size_t i = 1; i < nodes_.size(); ++i) {
      Node& n = nodes_[i];
      Node& below = nodes_[i - 1];
      if (n.spec.kind == Kind::relu && n.in_place &&
          (below.spec.kind == Kind::linear || below.spec.kind == Kind::maxpool2d)) {
        below.fused_relu = true;
        n.forward_fused = true;
      }
      if (n.spec.kind == Kind::maxpool2d && below.spec.kind == Kind::relu && below.in_place && !below.forward_fused) {
        n.fused_relu = true;
        n.relu_before = true;
        below.forward_fused = true;
        below.backward_fused = true;
      }
      if (n.spec.kind == Kind::linear && i > first_trainable_ && below.spec.kind == Kind::relu && below.in_place) {
        n.mask_below = true;
        below.backward_fused = true;
      }
    }

    // Stages: each linear layer, and the runs of other layers between them.
    stages_.clear();
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      const Node& n = nodes_[i];
      const bool dense = n.spec.kind == Kind::linear;
      if (dense || stages_.empty() || stages_.back().dense) stages_.push_back({.first = i, .dense = dense});
      Stage& stage = stages_.back();
      stage.last = i + 1;
      stage.work += work_per_sample(n);
      stage.chunked = stage.chunked || n.spec.kind == Kind::conv2d || n.spec.kind == Kind::maxpool2d ||
                      (n.spec.kind == Kind::flatten && !n.in_place);
    }

    // Gradients kept per buffer: the outputs', and every input of a layer above the first
    // trainable one (with what lies between).
    needs_grad_.assign(buffer_sizes_.size(), false);
    needs_grad_[output_buffer_] = true;
    for (std::size_t i = first_trainable_; i < nodes_.size(); ++i) {
      needs_grad_[nodes_[i].out_buffer] = true;
      if (i > first_trainable_) needs_grad_[nodes_[i].in_buffer] = true;
    }

    // Convolutions come before every linear layer (a linear layer leaves samples of rank 1), so
    // their blocks are a prefix of the parameters: the region the chunks' slots hold.
    conv_region_ = 0;
    for (const Node& n : nodes_)
      if (n.spec.kind == Kind::conv2d) conv_region_ = params_.block(n.bias).offset + params_.block(n.bias).size;
    if (conv_region_ > 0) {
      for (const Node& n : nodes_)
        if (n.spec.kind == Kind::linear)
          require(params_.block(n.weight).offset >= conv_region_,
                  "Sequential: internal: a linear layer before a convolution");
      conv_region_ = std::min(params_.size(), (conv_region_ + params_type::block_alignment - 1) /
                                                  params_type::block_alignment * params_type::block_alignment);
    }
  }

  void check_input(const Samples<T>& x) const {
    require(x.count >= 1, "Sequential: empty batch");
    require(x.data != nullptr, "Sequential: a batch of ", x.count, " samples has no data");
    if (!(x.shape == input_))  // (the shapes' strings made only for the message)
      fail("Sequential: expected samples of shape ", input_.str(), ", got ", x.shape.str());
  }
  void check_input(const Samples<T>& x, const Targets& y) const {
    check_input(x);
    loss_.check(y, x.count, output_size(), "Sequential");
  }

  std::ptrdiff_t chunks(std::ptrdiff_t count) const { return parallel::Chunks{count, options_.chunk}.count(); }

  void reserve(std::ptrdiff_t count) {
    if (count <= ws_.capacity) return;
    const std::size_t buffers = buffer_sizes_.size();
    ws_.acts.assign(buffers, AlignedBuffer<T>());
    ws_.grads.assign(buffers, AlignedBuffer<T>());
    for (std::size_t b = 1; b < buffers; ++b) ws_.acts[b] = AlignedBuffer<T>(count * buffer_sizes_[b]);
    for (std::size_t b = 0; b < buffers; ++b)
      if (needs_grad_[b]) ws_.grads[b] = AlignedBuffer<T>(count * buffer_sizes_[b]);
    ws_.argmax.assign(pools_, AlignedBuffer<std::uint8_t>());
    for (const Node& n : nodes_)
      if (n.spec.kind == Kind::maxpool2d) ws_.argmax[n.argmax] = AlignedBuffer<std::uint8_t>(count * n.out.size());
    ws_.slots = AlignedBuffer<T>(chunks(count) * conv_region_);
    ws_.row_loss = AlignedBuffer<double>(count);
    ws_.row_top1 = AlignedBuffer<std::uint8_t>(count);
    ws_.row_top5 = AlignedBuffer<std::uint8_t>(count);
    ws_.capacity = count;
  }

  // Whether a loop of about `work` multiply-adds (or element operations) is worth a team: below
  // this, starting and joining one costs more than it saves (and much more on a loaded machine).
  static bool worth_a_team(double work) { return work >= 131072.0; }

  // Runs body(begin, end, scratch) over fixed pieces of [0, n), pieces spread over the team
  // (or on the calling thread inside another parallel region, or for little `work`).
  template <class Body>
  void for_each_piece(std::ptrdiff_t n, std::ptrdiff_t piece, double work, Body&& body) {
    const parallel::Chunks pieces{n, piece};
    const std::ptrdiff_t count = pieces.count();
    const bool team = count > 1 && worth_a_team(work) && !parallel::in_parallel() && parallel::max_threads() > 1;
    const auto slots = static_cast<std::size_t>(team ? parallel::max_threads() : 1);
    if (ws_.threads.size() < slots) ws_.threads.resize(slots);
#pragma omp parallel for schedule(static) if (team)
    for (std::ptrdiff_t k = 0; k < count; ++k)
      body(pieces.begin(k), pieces.end(k), ws_.threads[static_cast<std::size_t>(omp_get_thread_num())]);
  }

  // Runs body(begin, end, scratch) over one block of [0, n) per thread, blocks a multiple of
  // `align`: for work whose every element is the same whatever the block.
  template <class Body>
  void for_each_block(std::ptrdiff_t n, std::ptrdiff_t align, double work, Body&& body) {
    const std::ptrdiff_t team = parallel::in_parallel() || !worth_a_team(work) ? 1 : parallel::max_threads();
    const std::ptrdiff_t piece = std::max<std::ptrdiff_t>(align, (n + team * align - 1) / (team * align) * align);
    for_each_piece(n, piece, work, std::forward<Body>(body));
  }

  // Runs body(begin, end, scratch) over the fixed chunks of `count` samples.
  template <class Body>
  void for_each_chunk(std::ptrdiff_t count, double work, Body&& body) {
    for_each_piece(count, options_.chunk, work, std::forward<Body>(body));
  }

  // Work per sample of a layer's pass (multiply-adds, or element operations), for worth_a_team.
  static double work_per_sample(const Node& n) {
    switch (n.spec.kind) {
      case Kind::linear:
        return static_cast<double>(n.linear.in_features * n.linear.out_features);
      case Kind::conv2d:
        return static_cast<double>(n.out.size() * n.conv.patch());
      default:
        return static_cast<double>(std::max(n.in.size(), n.out.size()));
    }
  }

  // The layout of `n` samples of `shape` (rank 3) held channel-major (a chunk of a convolution's
  // output) or sample-major.
  static PlaneLayout layout(const Shape& shape, bool channel_major, std::ptrdiff_t n) {
    return channel_major ? PlaneLayout::cnhw(shape[0], n, shape[1], shape[2])
                         : PlaneLayout::nchw(n, shape[0], shape[1], shape[2]);
  }

  // Where samples [begin, ...) of a layer's input, output and their gradients are.
  const T* activation(const Samples<T>& x, std::size_t buffer) const {
    return buffer == 0 ? x.data : ws_.acts[buffer].data();
  }
  const T* input(const Samples<T>& x, const Node& n, std::ptrdiff_t begin) const {
    return activation(x, n.in_buffer) + begin * n.in.size();
  }
  T* output(const Node& n, std::ptrdiff_t begin) { return ws_.acts[n.out_buffer].data() + begin * n.out.size(); }
  T* input_grad(const Node& n, std::ptrdiff_t begin) { return ws_.grads[n.in_buffer].data() + begin * n.in.size(); }
  T* output_grad(const Node& n, std::ptrdiff_t begin) { return ws_.grads[n.out_buffer].data() + begin * n.out.size(); }
  const T* weight(const Node& n) const { return params_.values().data() + params_.block(n.weight).offset; }
  const T* bias(const Node& n) const { return params_.values().data() + params_.block(n.bias).offset; }

  // Runs body(begin, end, scratch) over the samples of a stage: its fixed chunks when a layer
  // reads a chunk's layout, any split over the team for activations alone.
  template <class Body>
  void for_each_part(const Stage& stage, std::ptrdiff_t count, double work, Body&& body) {
    if (stage.chunked)
      for_each_chunk(count, work, std::forward<Body>(body));
    else
      for_each_block(count, 1, work, std::forward<Body>(body));
  }

  void run_forward(const Samples<T>& x) {
    reserve(x.count);
    const std::ptrdiff_t count = x.count;
    for (const Stage& stage : stages_) {
      const double work = stage.work * static_cast<double>(count);
      if (stage.dense) {
        // One product over the batch, its output columns split over the team; a ReLU fused.
        const Node& n = nodes_[stage.first];
        const T* in = input(x, n, 0);
        T* out = output(n, 0);
        for_each_block(n.linear.out_features, gemm::shape<T>().nr, work, [&](auto begin, auto end, ThreadScratch& s) {
          n.linear.forward(weight(n), bias(n), in, count, out, begin, end, n.fused_relu, s.gemm);
        });
        continue;
      }
      for_each_part(stage, count, work, [&](auto begin, auto end, ThreadScratch& s) {
        for (std::size_t i = stage.first; i < stage.last; ++i) forward_layer(nodes_[i], x, begin, end, s);
      });
    }
    const Node& last = nodes_.back();
    if (output_buffer_ != last.out_buffer) {
      T* rows = ws_.acts[output_buffer_].data();
      const double work = static_cast<double>(count * last.out.size());
      for_each_chunk(count, work, [&](auto begin, auto end, ThreadScratch&) {
        Flatten::forward(output(last, begin), layout(last.out, true, end - begin), rows, begin);
      });
    }
  }

  // The forward pass of layer `n` (not a linear layer) over samples [begin, end).
  void forward_layer(const Node& n, const Samples<T>& x, std::ptrdiff_t begin, std::ptrdiff_t end, ThreadScratch& s) {
    const std::ptrdiff_t images = end - begin;
    switch (n.spec.kind) {
      case Kind::linear:
        return;  // a stage of its own
      case Kind::conv2d:
        n.conv.forward(weight(n), bias(n), input(x, n, begin), layout(n.in, n.in_channel_major, images), output(n, begin),
                       s.gemm);
        return;
      case Kind::maxpool2d:
        MaxPool2d::forward(input(x, n, begin), layout(n.in, n.in_channel_major, images), output(n, begin),
                           layout(n.out, n.out_channel_major, images),
                           ws_.argmax[n.argmax].data() + begin * n.out.size(), n.fused_relu);
        return;
      case Kind::relu:
      case Kind::tanh: {
        if (n.forward_fused) return;
        const std::ptrdiff_t size = images * n.out.size();
        T* out = output(n, begin);
        if (!n.in_place) std::copy_n(input(x, n, begin), size, out);
        if (n.spec.kind == Kind::relu)
          Relu::forward(out, size);
        else
          Tanh::forward(out, size);
        return;
      }
      case Kind::flatten:
        if (!n.in_place)
          Flatten::forward(input(x, n, begin), layout(n.in, n.in_channel_major, images), output(n, 0), begin);
        return;
    }
  }

  // Loss and accuracy over the outputs; with `gradient`, their gradient = weight / count *
  // dloss/dz.
  LossStats run_loss(const Samples<T>& x, const Targets& y, double weight, bool gradient) {
    const std::ptrdiff_t count = x.count, outputs = output_size();
    const T* z = activation(x, output_buffer_);
    T* dz = ws_.grads[output_buffer_].data();
    const double scale = weight / static_cast<double>(count);
    const bool classifies = loss_.classifies();
    const double work = 8.0 * static_cast<double>(count * outputs);
    for_each_piece(count, row_tile, work, [&](auto begin, auto end, ThreadScratch&) {
      for (std::ptrdiff_t r = begin; r < end; ++r) {
        const T* row = z + r * outputs;
        ws_.row_loss[r] = loss_.row(row, outputs, y, r, gradient ? dz + r * outputs : nullptr, scale);
        if (!classifies) continue;
        const std::int32_t label = y.classes[static_cast<std::size_t>(r)];
        ws_.row_top1[r] = in_top_k(row, outputs, label, 1) ? 1 : 0;
        ws_.row_top5[r] = in_top_k(row, outputs, label, 5) ? 1 : 0;
      }
    });
    LossStats stats;
    for (std::ptrdiff_t r = 0; r < count; ++r) {  // in row order: the same sum for any threads
      stats.loss += ws_.row_loss[r];
      if (!classifies) continue;
      stats.correct1 += ws_.row_top1[r];
      stats.correct5 += ws_.row_top5[r];
    }
    stats.loss /= static_cast<double>(count);
    stats.count = count;
    stats.classified = classifies;
    return stats;
  }

  void run_backward(const Samples<T>& x) {
    if (first_trainable_ == nodes_.size()) return;
    const std::ptrdiff_t count = x.count;
    T* g = params_.grads().data();

    const Node& last = nodes_.back();
    if (output_buffer_ != last.out_buffer) {
      const T* rows = ws_.grads[output_buffer_].data();
      const double work = static_cast<double>(count * last.out.size());
      for_each_chunk(count, work, [&](auto begin, auto end, ThreadScratch&) {
        Flatten::backward(rows, begin, layout(last.out, true, end - begin), output_grad(last, begin));
      });
    }

    for (auto stage = stages_.rbegin(); stage != stages_.rend() && stage->last > first_trainable_; ++stage) {
      const double work = 2.0 * stage->work * static_cast<double>(count);
      if (stage->dense) {
        // The weight gradient (its rows split over the team), then the input gradient (its
        // columns split), through the in-place ReLU below when there is one.
        const Node& n = nodes_[stage->first];
        const T* in = input(x, n, 0);
        const T* d_out = output_grad(n, 0);
        T* weight_grad = g + params_.block(n.weight).offset;
        T* bias_grad = g + params_.block(n.bias).offset;
        for_each_block(n.linear.out_features, gemm::shape<T>().mr, work, [&](auto begin, auto end, ThreadScratch& s) {
          n.linear.backward_weights(in, d_out, count, weight_grad, bias_grad, begin, end, s.gemm);
        });
        if (stage->first == first_trainable_) continue;
        T* d_in = input_grad(n, 0);
        const T* mask = n.mask_below ? in : nullptr;
        for_each_block(n.linear.in_features, gemm::shape<T>().nr, work, [&](auto begin, auto end, ThreadScratch& s) {
          n.linear.backward_input(weight(n), d_out, count, d_in, begin, end, mask, s.gemm);
        });
        continue;
      }
      const std::size_t first = std::max(stage->first, first_trainable_), end_layer = stage->last;
      for_each_part(*stage, count, work, [&](auto begin, auto end, ThreadScratch& s) {
        for (std::size_t i = end_layer; i-- > first;) backward_layer(nodes_[i], i > first_trainable_, x, begin, end, s);
      });
    }

    // The convolutions' slots, added in chunk order (each element's sum is the same for any
    // thread count).
    if (conv_region_ == 0) return;
    const std::ptrdiff_t slots = chunks(count), region = conv_region_;
    constexpr std::ptrdiff_t block = 1024;  // slot by slot over a block that stays in L1
    for_each_piece(region, block, static_cast<double>(region * slots), [&](auto begin, auto end, ThreadScratch&) {
      T sum[block];
      const std::ptrdiff_t n = end - begin;
      std::copy_n(ws_.slots.data() + begin, n, sum);
      for (std::ptrdiff_t k = 1; k < slots; ++k) {
        const T* slot = ws_.slots.data() + k * region + begin;
        for (std::ptrdiff_t j = 0; j < n; ++j) sum[j] += slot[j];
      }
      for (std::ptrdiff_t j = 0; j < n; ++j) g[begin + j] += sum[j];
    });
  }

  // The backward pass of layer `n` (not a linear layer) over samples [begin, end): a
  // convolution's weight gradient into the chunk's slot, and with `below`, the input gradient.
  void backward_layer(const Node& n, bool below, const Samples<T>& x, std::ptrdiff_t begin, std::ptrdiff_t end,
                      ThreadScratch& s) {
    const std::ptrdiff_t images = end - begin;
    switch (n.spec.kind) {
      case Kind::linear:
        return;  // a stage of its own
      case Kind::conv2d: {
        const Block& wb = params_.block(n.weight);
        const Block& bb = params_.block(n.bias);
        T* slot = ws_.slots.data() + (begin / options_.chunk) * conv_region_;
        std::fill_n(slot + wb.offset, wb.size, T(0));
        std::fill_n(slot + bb.offset, bb.size, T(0));
        const PlaneLayout in_layout = layout(n.in, n.in_channel_major, images);
        const T* dy = output_grad(n, begin);
        n.conv.backward_weights(dy, input(x, n, begin), in_layout, slot + wb.offset, slot + bb.offset, s.gemm);
        if (below) n.conv.backward_input(weight(n), dy, in_layout, input_grad(n, begin), s.gemm);
        return;
      }
      case Kind::maxpool2d:
        // The ReLU moved here from below masks the gradient; one fused from above does so in its
        // own backward pass.
        if (below)
          MaxPool2d::backward(output_grad(n, begin), layout(n.out, n.out_channel_major, images),
                              ws_.argmax[n.argmax].data() + begin * n.out.size(),
                              n.relu_before ? static_cast<const T*>(output(n, begin)) : nullptr,
                              layout(n.in, n.in_channel_major, images), input_grad(n, begin));
        return;
      case Kind::relu:
      case Kind::tanh: {
        if (!below || n.backward_fused) return;
        const std::ptrdiff_t size = images * n.out.size();
        T* dx = input_grad(n, begin);
        if (!n.in_place) std::copy_n(output_grad(n, begin), size, dx);
        if (n.spec.kind == Kind::relu)
          Relu::backward(output(n, begin), dx, size);
        else
          Tanh::backward(output(n, begin), dx, size);
        return;
      }
      case Kind::flatten:
        if (below && !n.in_place)
          Flatten::backward(output_grad(n, 0), begin, layout(n.in, n.in_channel_major, images), input_grad(n, begin));
        return;
    }
  }

  SequentialOptions options_;
  Shape input_;
  Loss loss_;
  params_type params_;
  std::vector<Node> nodes_;
  std::vector<Stage> stages_;
  std::vector<std::ptrdiff_t> buffer_sizes_;  // values per sample of each activation buffer
  std::vector<bool> needs_grad_;               // per buffer
  std::size_t output_buffer_ = 0;
  std::size_t first_trainable_ = 0;
  std::size_t pools_ = 0;
  std::ptrdiff_t conv_region_ = 0;  // parameters the convolutions' slots hold
  Workspace ws_;
};

static_assert(Model<Sequential<float>>, "Sequential must model nn::Model");

}  // namespace distopt::nn

DISTOPT_PR105593_ON
