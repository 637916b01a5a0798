// Mini-batches for the model from any data set (data/dataset.hpp): shuffled per epoch,
// augmented when asked, normalised, optionally prepared ahead.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/images.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/core/samples.hpp"
#include "distopt/data/dataset.hpp"
#include "distopt/data/images.hpp"
#include "distopt/data/transforms.hpp"

namespace distopt::data {

/// A data set as loaders, evaluation and the trainers read it: any Dataset with the
/// normalisation chosen for it, by reference (the data must outlive the Source and every copy).
/// Two paths:
///  - uint8 images (LabelledImages) with a per-channel Normalizer: pixels go through
///    torchvision's ToTensor + Normalize as one table lookup per pixel, fused with the crop and
///    flip (transform_image), the study's bits and speed;
///  - any Dataset with a per-feature FeatureNormalizer (the identity by default): its copy()
///    into the batch, then crop and flip where asked (on [C, H, W] samples only), then
///    standardisation.
class Source {
 public:
  /// Images normalised per channel (the study's pipeline).
  Source(const LabelledImages& images, Normalizer normalizer, std::string name = "images")
      : images_(&images), normalizer_(std::move(normalizer)), name_(std::move(name)) {
    check_labels_match(images, "Source");
    check_channels(normalizer_, images.shape(), "Source");
    size_ = images.size();
    shape_ = images.sample_shape();
    info_ = images.target_info();
    copy_ = [&images](std::span<const std::size_t> i, std::span<float> f, std::span<std::int32_t> c, std::span<float> v) {
      images.copy(i, f, c, v);
    };
  }
  /// Any data set, standardised per feature by `features` (its features() must match the
  /// sample size unless it is the identity).
  template <Dataset D>
  explicit Source(const D& data, FeatureNormalizer features = {}, std::string name = "data")
      : features_(std::move(features)), name_(std::move(name)) {
    if constexpr (requires { data.name(); }) name_ = data.name();
    size_ = data.size();
    shape_ = data.sample_shape();
    info_ = data.target_info();
    require(features_.identity() || static_cast<std::ptrdiff_t>(features_.features()) == shape_.size(), name_,
            ": the normalizer has ", features_.features(), " features, a sample of shape ", shape_.str(), " has ", shape_.size());
    copy_ = [&data](std::span<const std::size_t> i, std::span<float> f, std::span<std::int32_t> c, std::span<float> v) {
      data.copy(i, f, c, v);
    };
  }

  // A Source refers to its data: a temporary would be gone before the first batch.
  Source(const LabelledImages&&, Normalizer, std::string = {}) = delete;
  template <Dataset D>
  explicit Source(const D&&, FeatureNormalizer = {}, std::string = {}) = delete;

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] const Shape& sample_shape() const noexcept { return shape_; }
  [[nodiscard]] const TargetInfo& target_info() const noexcept { return info_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  /// The image set of the image path, or null.
  [[nodiscard]] const LabelledImages* images() const noexcept { return images_; }
  /// The per-channel normalizer of the image path (std::logic_error on the other).
  [[nodiscard]] const Normalizer& normalizer() const {
    require<std::logic_error>(images_ != nullptr, name_, ": not an image set with a per-channel normalizer");
    return normalizer_;
  }
  [[nodiscard]] const FeatureNormalizer& feature_normalizer() const noexcept { return features_; }
  /// The Dataset interface: raw features and targets (no normalisation), so a Source is a Dataset.
  void copy(std::span<const std::size_t> indices, std::span<float> features, std::span<std::int32_t> classes,
            std::span<float> values) const {
    copy_(indices, features, classes, values);
  }
  /// Every class id in sample order (class-balanced shards, stratified splits; data::class_ids
  /// calls it): the images' labels directly, any other data set's through copy(). Throws
  /// std::invalid_argument naming the data when targets are real values.
  [[nodiscard]] std::vector<std::int32_t> class_ids() const {
    require(info_.are_classes(), name_, ": targets are ", info_.str(), ", not class ids");
    if (images_ != nullptr) return {images_->fine.begin(), images_->fine.end()};
    return detail::dataset::copied_class_ids(*this);
  }

  /// Throws std::invalid_argument naming both when `augmentation` cannot apply to these samples:
  /// a crop and flip needs samples of shape [channels, height, width].
  void check_augmentation(const Augmentation& augmentation, std::string_view who) const {
    require(augmentation.padding >= 0 && augmentation.padding <= 32, who, ".augmentation.padding must be in [0, 32], got ",
            augmentation.padding);
    require(shape_.rank == 3, who, ".augmentation: a random crop (padding ", augmentation.padding,
            ") and flip apply to images of shape [channels, height, width]; '", name_, "' has samples of shape ",
            shape_.str());
  }

 private:
  const LabelledImages* images_ = nullptr;
  Normalizer normalizer_{1};
  FeatureNormalizer features_{};
  std::function<void(std::span<const std::size_t>, std::span<float>, std::span<std::int32_t>, std::span<float>)> copy_;
  std::size_t size_ = 0;
  Shape shape_{};
  TargetInfo info_{};
  std::string name_;
};

/// Which of an image's labels a loader hands to the model (coarse: CIFAR-100's superclasses).
enum class LabelKind { fine, coarse };

/// What a Loader does. Batches of `batch_size` samples; with `shuffle` a new order every epoch,
/// a pure function of (seed, epoch); the last short batch is dropped if `drop_last`;
/// `augmentation` (none for evaluation) is drawn per (seed, epoch, sample); with `prefetch` a
/// background thread prepares the next batch while the caller trains on the current one.
struct LoaderOptions {
  std::size_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;
  std::uint64_t seed = 0;
  std::optional<Augmentation> augmentation = std::nullopt;
  LabelKind labels = LabelKind::fine;
  bool prefetch = false;
};

/// Where a loader is: the epoch and the number of its batches already handed out. Saved in a
/// checkpoint, it resumes the exact sequence of batches.
struct LoaderPosition {
  std::uint64_t epoch = 0;
  std::size_t batch = 0;

  friend bool operator==(const LoaderPosition&, const LoaderPosition&) = default;
};

/// One mini-batch: `size()` samples as float32 [size, shape...] (images: NCHW) and their targets
/// (class ids, or real values [size, width]).
class Batch {
 public:
  [[nodiscard]] std::size_t size() const noexcept { return samples_.size(); }
  /// The samples, as every model reads them.
  [[nodiscard]] Samples<float> inputs() const noexcept { return {pixels_.data(), static_cast<std::ptrdiff_t>(size()), shape_}; }
  /// The samples as NCHW images (std::invalid_argument unless they have rank 3).
  [[nodiscard]] Images<float> images() const { return inputs().images("Batch::images"); }
  [[nodiscard]] Targets targets() const {
    return width_ == 0 ? Targets(std::span<const std::int32_t>(labels_))
                       : Targets::real(std::span<const float>(values_.data(), size() * width_), static_cast<std::ptrdiff_t>(width_));
  }
  /// Class ids (empty when the targets are real values).
  [[nodiscard]] std::span<const std::int32_t> labels() const noexcept { return labels_; }
  /// Indices into the loader's dataset of this batch's samples, in batch order.
  [[nodiscard]] std::span<const std::size_t> samples() const noexcept { return samples_; }
  /// Which batch this is: its epoch and its index within the epoch.
  [[nodiscard]] LoaderPosition position() const noexcept { return position_; }

 private:
  friend class Loader;
  AlignedBuffer<float> pixels_;
  Shape shape_{};
  std::vector<std::int32_t> labels_;
  std::vector<float> values_;
  std::size_t width_ = 0;
  std::vector<std::size_t> samples_;
  LoaderPosition position_;
};

/// Turns a data set (or a subset of it, e.g. one worker's shard) into mini-batches.
///
///   Loader loader(data.train, Normalizer(stats), {.batch_size = 128, .augmentation = Augmentation{}});
///   Loader table(Source(arrays, FeatureNormalizer(feature_statistics(arrays))), {.batch_size = 32});
///   for (std::uint64_t epoch = 0; epoch < epochs; ++epoch) {
///     loader.start_epoch(epoch);
///     while (const Batch* batch = loader.next()) model.loss_and_gradient(batch->images(), batch->labels(), 1.0);
///   }
///
/// The loader keeps a reference to `data`, which must outlive it. A batch's content depends on
/// (data, indices, options, epoch, batch index) only: the same bits for any number of threads,
/// with or without prefetch. Without prefetch a batch is prepared by the OpenMP team of the
/// caller; with it, by one background thread (so it never competes with the training's team).
class Loader {
 public:
  /// Batches over all of `data`, or over `indices` (positions in `data`) when given. Throws
  /// std::invalid_argument naming the field for batch_size 0, no samples, an index outside
  /// `data` or a bad augmentation.
  Loader(const LabelledImages& data, Normalizer normalizer, LoaderOptions options = {},
         std::optional<std::vector<std::size_t>> indices = std::nullopt)
      : Loader(Source(data, std::move(normalizer)), options, std::move(indices)) {}

  Loader(Source source, LoaderOptions options = {}, std::optional<std::vector<std::size_t>> indices = std::nullopt)
      : source_(std::move(source)), options_(options) {
    require(options_.batch_size > 0, "LoaderOptions.batch_size must be positive");
    if (options_.augmentation) source_.check_augmentation(*options_.augmentation, "LoaderOptions");
    const LabelledImages* images = source_.images();
    require(options_.labels == LabelKind::fine || (images != nullptr && images->has_coarse()),
            "Loader: LoaderOptions.labels is coarse, but the data has no coarse labels");
    const std::size_t n = source_.size();
    if (indices) {
      indices_ = std::move(*indices);
      for (std::size_t k = 0; k < indices_.size(); ++k)
        require(indices_[k] < n, "Loader: index ", indices_[k], " at position ", k, " is outside the ", n, " samples");
    } else {
      indices_.resize(n);
      std::iota(indices_.begin(), indices_.end(), std::size_t{0});
    }
    require(!indices_.empty(), "Loader: no samples to load");
    require(!options_.drop_last || indices_.size() >= options_.batch_size, "Loader: drop_last with batch_size ",
            options_.batch_size, " leaves no batch of the ", indices_.size(), " samples");
    order_ = indices_;
    start_epoch(0);
  }

  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;
  ~Loader() { stop_worker(); }

  [[nodiscard]] const LoaderOptions& options() const noexcept { return options_; }
  [[nodiscard]] const Source& source() const noexcept { return source_; }
  /// The per-channel normalizer of an image source (std::logic_error otherwise).
  [[nodiscard]] const Normalizer& normalizer() const { return source_.normalizer(); }
  /// Samples per epoch (before drop_last).
  [[nodiscard]] std::size_t size() const noexcept { return indices_.size(); }
  [[nodiscard]] std::size_t batches_per_epoch() const noexcept {
    const std::size_t n = indices_.size(), b = options_.batch_size;
    return options_.drop_last ? n / b : (n + b - 1) / b;
  }
  [[nodiscard]] LoaderPosition position() const noexcept { return position_; }

  /// Starts epoch `epoch` at its first batch.
  void start_epoch(std::uint64_t epoch) { seek({epoch, 0}); }

  /// Continues at `position` (as returned by position()), e.g. from a checkpoint. Throws
  /// std::invalid_argument if the batch index is beyond the epoch's batches.
  void seek(LoaderPosition position) {
    require(position.batch <= batches_per_epoch(), "Loader::seek: batch ", position.batch, " is beyond the ",
            batches_per_epoch(), " batches of an epoch");
    cancel_prefetch();
    if (position.epoch != order_epoch_ || !order_valid_) {
      order_ = indices_;
      if (options_.shuffle) {
        Rng rng = Rng(options_.seed).split({order_stream, position.epoch});
        rng.shuffle(order_.begin(), order_.end());
      }
      order_epoch_ = position.epoch;
      order_valid_ = true;
    }
    position_ = position;
    request_prefetch(position_);
  }

  /// The next batch of the current epoch, or nullptr once the epoch is over. The batch stays
  /// valid until the next call of next(), seek() or start_epoch().
  const Batch* next() {
    if (position_.batch >= batches_per_epoch()) return nullptr;
    if (options_.prefetch) {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return !job_pending_; });
      if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
      if (ready_ && ready_position_ == position_) {
        std::swap(current_, ahead_);
        ready_ = false;
      } else {
        lock.unlock();
        prepare(position_, current_, false);
      }
    } else {
      prepare(position_, current_, true);
    }
    ++position_.batch;
    // At the end of an epoch, the first batch of the next one: what a training loop asks next.
    request_prefetch(position_.batch < batches_per_epoch() ? position_ : LoaderPosition{position_.epoch + 1, 0});
    return &current_;
  }

  /// Prepares batch `position` into `batch` directly, without moving the loader (the batches
  /// of any epoch can be looked at in any order).
  void prepare(LoaderPosition position, Batch& batch, bool parallel) const {
    const std::size_t begin = position.batch * options_.batch_size;
    const std::size_t end = std::min(begin + options_.batch_size, indices_.size());
    require(begin < end, "Loader::prepare: batch ", position.batch, " is beyond the epoch");
    std::vector<std::size_t> local;
    const std::vector<std::size_t>* order = &order_;
    if (position.epoch != order_epoch_ && options_.shuffle) {
      local = indices_;
      Rng rng = Rng(options_.seed).split({order_stream, position.epoch});
      rng.shuffle(local.begin(), local.end());
      order = &local;
    }
    const std::size_t count = end - begin;
    const Shape shape = source_.sample_shape();
    const auto size = static_cast<std::size_t>(shape.size());
    const TargetInfo info = source_.target_info();
    batch.shape_ = shape;
    if (batch.pixels_.size() < static_cast<std::ptrdiff_t>(options_.batch_size * size))
      batch.pixels_.resize(static_cast<std::ptrdiff_t>(options_.batch_size * size));
    batch.samples_.assign(order->begin() + static_cast<std::ptrdiff_t>(begin), order->begin() + static_cast<std::ptrdiff_t>(end));
    batch.position_ = position;
    batch.width_ = info.are_classes() ? 0 : info.width;
    batch.labels_.resize(info.are_classes() ? count : 0);
    batch.values_.resize(count * batch.width_);
    float* out = batch.pixels_.data();
    if (const LabelledImages* data = source_.images()) {
      const auto& labels = options_.labels == LabelKind::fine ? data->fine : data->coarse;
      for (std::size_t k = 0; k < count; ++k) batch.labels_[k] = labels[batch.samples_[k]];
      const ImageShape image = data->shape();
      const std::uint8_t* images = data->images.data();
      const Normalizer& normalizer = source_.normalizer();
      const auto one = [&](std::size_t k) {
        const std::size_t sample = batch.samples_[k];
        if (options_.augmentation) {
          const CropFlip crop = draw_crop_flip(*options_.augmentation, options_.seed, position.epoch, sample);
          transform_image(images + sample * size, out + k * size, normalizer, image, options_.augmentation->padding, crop);
        } else {
          transform_image(images + sample * size, out + k * size, normalizer, image);
        }
      };
      run(count, parallel, [&](std::size_t b, std::size_t e) {
        for (std::size_t k = b; k < e; ++k) one(k);
      });
      return;
    }
    prepare_copied(position, batch, parallel, shape, out);
  }

 private:
  static constexpr std::uint64_t order_stream = 0x0D3E;

  // Any data set but uint8 images: its own copy of a run of samples, then crop and flip, then
  // standardisation. A function of its own, so the image path's loop stays as compact as it was.
  void prepare_copied(LoaderPosition position, Batch& batch, bool parallel, const Shape& shape, float* out) const {
    const auto size = static_cast<std::size_t>(shape.size());
    const std::size_t count = batch.samples_.size();
    const auto width = batch.width_;
    run(count, parallel, [&](std::size_t b, std::size_t e) {
      const std::span<const std::size_t> samples(batch.samples_.data() + b, e - b);
      float* x = out + b * size;
      source_.copy(samples, std::span<float>(x, (e - b) * size),
                   width == 0 ? std::span<std::int32_t>(batch.labels_.data() + b, e - b) : std::span<std::int32_t>(),
                   width == 0 ? std::span<float>() : std::span<float>(batch.values_.data() + b * width, (e - b) * width));
      if (options_.augmentation) {
        const ImageShape image{static_cast<std::size_t>(shape[0]), static_cast<std::size_t>(shape[1]), static_cast<std::size_t>(shape[2])};
        std::vector<float> raw(size);
        for (std::size_t k = b; k < e; ++k) {
          std::copy_n(out + k * size, size, raw.data());
          const CropFlip crop = draw_crop_flip(*options_.augmentation, options_.seed, position.epoch, batch.samples_[k]);
          crop_flip(raw.data(), out + k * size, image, options_.augmentation->padding, crop);
        }
      }
      if (!source_.feature_normalizer().identity()) source_.feature_normalizer().apply(x, e - b);
    });
  }

  // --- prefetch: one background thread, one batch ahead ---------------------------------------
  // A prepared batch is a pure function of its position, so one prepared ahead stays good until
  // it is used, whatever seeks happen in between.
  void request_prefetch(LoaderPosition target) {
    if (!options_.prefetch || target.batch >= batches_per_epoch()) return;
    if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
    std::lock_guard lock(mutex_);
    if (ready_ && ready_position_ == target) return;
    job_position_ = target;
    job_pending_ = true;
    ready_ = false;
    wake_.notify_one();
  }

  // Waits for the background thread, so the epoch order can change under no one's feet.
  void cancel_prefetch() {
    if (!options_.prefetch) return;
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return !job_pending_; });
    error_ = nullptr;
  }

  void work() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return job_pending_ || stopping_; });
      if (stopping_) return;
      const LoaderPosition position = job_position_;
      lock.unlock();
      std::exception_ptr error;
      try {
        prepare(position, ahead_, false);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      ready_ = error == nullptr;
      ready_position_ = position;
      error_ = error;
      job_pending_ = false;
      done_.notify_all();
    }
  }

  void stop_worker() {
    if (!worker_.joinable()) return;
    {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return !job_pending_; });
      stopping_ = true;
      wake_.notify_one();
    }
    worker_.join();
  }

  // Samples [0, count) of a batch in chunks of 8, over the OpenMP team when `parallel`.
  template <class Body>
  static void run(std::size_t count, bool parallel, Body&& body) {
    if (!parallel) return body(std::size_t{0}, count);
    parallel::for_each_chunk(static_cast<std::ptrdiff_t>(count), 8, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
      body(static_cast<std::size_t>(b), static_cast<std::size_t>(e));
    });
  }

  Source source_;
  LoaderOptions options_;
  std::vector<std::size_t> indices_;
  std::vector<std::size_t> order_;
  std::uint64_t order_epoch_ = 0;
  bool order_valid_ = false;
  LoaderPosition position_;
  Batch current_, ahead_;

  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  LoaderPosition job_position_, ready_position_;
  bool job_pending_ = false, ready_ = false, stopping_ = false;
  std::exception_ptr error_;
};

}  // namespace distopt::data
