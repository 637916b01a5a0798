// Mini-batches for the model: shuffled per epoch, augmented, normalised, optionally prepared ahead.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <numeric>
#include <optional>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/images.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/data/images.hpp"
#include "distopt/data/transforms.hpp"

namespace distopt::data {

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

/// One mini-batch: `size()` images as float NCHW [size, C, H, W] and their labels.
class Batch {
 public:
  [[nodiscard]] std::size_t size() const noexcept { return labels_.size(); }
  [[nodiscard]] Images<float> images() const noexcept {
    return {pixels_.data(), static_cast<std::ptrdiff_t>(size()), static_cast<std::ptrdiff_t>(shape_.channels),
            static_cast<std::ptrdiff_t>(shape_.height), static_cast<std::ptrdiff_t>(shape_.width)};
  }
  [[nodiscard]] std::span<const std::int32_t> labels() const noexcept { return labels_; }
  /// Indices into the loader's dataset of this batch's samples, in batch order.
  [[nodiscard]] std::span<const std::size_t> samples() const noexcept { return samples_; }
  /// Which batch this is: its epoch and its index within the epoch.
  [[nodiscard]] LoaderPosition position() const noexcept { return position_; }

 private:
  friend class Loader;
  AlignedBuffer<float> pixels_;
  ImageShape shape_{};
  std::vector<std::int32_t> labels_;
  std::vector<std::size_t> samples_;
  LoaderPosition position_;
};

/// Turns a labelled image set (or a subset of it, e.g. one worker's shard) into mini-batches.
///
///   Loader loader(data.train, Normalizer(stats), {.batch_size = 128, .augmentation = Augmentation{}});
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
      : data_(&data), normalizer_(std::move(normalizer)), options_(options) {
    require(options_.batch_size > 0, "LoaderOptions.batch_size must be positive");
    if (options_.augmentation)
      require(options_.augmentation->padding >= 0 && options_.augmentation->padding <= 32,
              "LoaderOptions.augmentation.padding must be in [0, 32], got ", options_.augmentation->padding);
    check_labels_match(data, "Loader");
    require(options_.labels == LabelKind::fine || data.has_coarse(), "Loader: LoaderOptions.labels is coarse, but the data has no coarse labels");
    check_channels(normalizer_, data.shape(), "Loader");
    if (indices) {
      indices_ = std::move(*indices);
      for (std::size_t k = 0; k < indices_.size(); ++k)
        require(indices_[k] < data.size(), "Loader: index ", indices_[k], " at position ", k, " is outside the ",
                data.size(), " samples");
    } else {
      indices_.resize(data.size());
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
  [[nodiscard]] const Normalizer& normalizer() const noexcept { return normalizer_; }
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
    const ImageShape shape = data_->shape();
    const std::size_t pixels = shape.pixels();
    batch.shape_ = shape;
    if (batch.pixels_.size() < static_cast<std::ptrdiff_t>(options_.batch_size * pixels))
      batch.pixels_.resize(static_cast<std::ptrdiff_t>(options_.batch_size * pixels));
    batch.labels_.resize(count);
    batch.samples_.assign(order->begin() + static_cast<std::ptrdiff_t>(begin), order->begin() + static_cast<std::ptrdiff_t>(end));
    batch.position_ = position;
    const auto& labels = options_.labels == LabelKind::fine ? data_->fine : data_->coarse;
    for (std::size_t k = 0; k < count; ++k) batch.labels_[k] = labels[batch.samples_[k]];
    const std::uint8_t* images = data_->images.data();
    float* out = batch.pixels_.data();
    const auto one = [&](std::size_t k) {
      const std::size_t sample = batch.samples_[k];
      if (options_.augmentation) {
        const CropFlip crop = draw_crop_flip(*options_.augmentation, options_.seed, position.epoch, sample);
        transform_image(images + sample * pixels, out + k * pixels, normalizer_, shape, options_.augmentation->padding, crop);
      } else {
        transform_image(images + sample * pixels, out + k * pixels, normalizer_, shape);
      }
    };
    if (parallel) {
      parallel::for_each_chunk(static_cast<std::ptrdiff_t>(count), 8, [&](std::ptrdiff_t b, std::ptrdiff_t e) {
        for (auto k = static_cast<std::size_t>(b); k < static_cast<std::size_t>(e); ++k) one(k);
      });
    } else {
      for (std::size_t k = 0; k < count; ++k) one(k);
    }
  }

 private:
  static constexpr std::uint64_t order_stream = 0x0D3E;

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

  const LabelledImages* data_;
  Normalizer normalizer_;
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
