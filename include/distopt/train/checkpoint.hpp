// Checkpoints: everything a run needs to continue to the same bits, in one NumPy-readable .npz.
//
// A checkpoint is an .npz archive (core/archive.hpp: written to a temporary file, fsync'ed and
// renamed, so a crash mid-write leaves the previous checkpoint intact). Its fields come from the
// pieces of a run, each writing its own:
//   format                "distopt-checkpoint 2" (format 1 files load: tests/data/checkpoints)
//   progress.*, history.* the run loop's: epochs done, best validation so far, per-epoch metrics
//                         (float64 arrays, one element per epoch)
//   trainer               "central" or "local <outer>", and that trainer's state:
//     model.<name>        the weights, <name> as in PyTorch's state_dict (conv1.weight, ...):
//                         {k[6:]: torch.from_numpy(v) for k, v in np.load(f).items() if k.startswith("model.")}
//     optimizer.*         a centralized run's optimizer (optim/state.hpp), progress.step and the
//                         loader's position and seed; a local run's outer state, workers and
//                         communication (local/checkpoint.hpp)
//   best.<name>           the weights of the best validation epoch so far (KeepBest)
// The schedule is a pure function of the global step and a loader a pure function of (seed,
// epoch, batch), so these numbers are the whole of their state.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <system_error>
#include <vector>

#include "distopt/core/archive.hpp"
#include "distopt/core/block_archive.hpp"
#include "distopt/core/error.hpp"
#include "distopt/data/loader.hpp"
#include "distopt/train/metrics.hpp"

namespace distopt::train {

/// Metrics of one finished epoch.
struct EpochMetrics {
  double train_loss = std::nan("");
  double train_accuracy = std::nan("");
  double validation_loss = std::nan("");
  double validation_accuracy = std::nan("");
  double validation_top5 = std::nan("");
  double lr = std::nan("");
  double seconds = std::nan("");

  friend bool operator==(const EpochMetrics&, const EpochMetrics&) = default;
};

/// The running sums of an epoch a stop request cut short (train_epoch's totals and its step
/// records' window), kept in the checkpoint so that the resumed epoch reports what an
/// uninterrupted one would. All zero at an epoch boundary.
struct EpochSums {
  double loss_sum = 0;
  std::int64_t correct = 0;
  std::int64_t samples = 0;
  std::int64_t steps = 0;
  double seconds = 0;
  double window_loss = 0;
  std::int64_t window_correct = 0;
  std::int64_t window_samples = 0;
};

/// Where a run is, besides its weights and optimizer state.
struct Progress {
  std::uint64_t epochs_done = 0;        ///< epochs completed
  std::int64_t step = 0;                ///< optimizer steps taken (the schedule's t)
  data::LoaderPosition loader;          ///< the next batch the loader hands out
  std::uint64_t seed = 0;               ///< the loader's seed (order and augmentation)
  std::int64_t best_epoch = -1;         ///< 1-based epoch of the best validation accuracy, -1: none yet
  double best_accuracy = -std::numeric_limits<double>::infinity();
  double best_loss = std::numeric_limits<double>::infinity();
  std::uint64_t epochs_without_improvement = 0;
  std::vector<EpochMetrics> history;
  EpochSums partial;                    ///< of the epoch in progress, when a stop cut it short
};

namespace detail::checkpoint {

inline constexpr std::string_view format = checkpoint_format;

inline void require_field(const Archive& archive, const std::string& field) {
  require(archive.contains(field), "checkpoint '", archive.source(), "': field '", field, "' is missing");
}

inline constexpr std::string_view format_v1 = "distopt-checkpoint 1";

/// The per-epoch metrics a checkpoint keeps, as history.<name> arrays.
inline constexpr std::array<std::pair<const char*, double EpochMetrics::*>, 7> history_columns = {{
    {"train_loss", &EpochMetrics::train_loss},
    {"train_accuracy", &EpochMetrics::train_accuracy},
    {"validation_loss", &EpochMetrics::validation_loss},
    {"validation_accuracy", &EpochMetrics::validation_accuracy},
    {"validation_top5", &EpochMetrics::validation_top5},
    {"lr", &EpochMetrics::lr},
    {"seconds", &EpochMetrics::seconds},
}};

/// The run loop's part: epochs done, the best validation so far, early stopping's count, history.
inline void put_progress(Archive& archive, const Progress& progress) {
  archive.put_scalar<std::uint64_t>("progress.epochs_done", progress.epochs_done);
  archive.put_scalar<std::int64_t>("progress.best_epoch", progress.best_epoch);
  archive.put_scalar<double>("progress.best_accuracy", progress.best_accuracy);
  archive.put_scalar<double>("progress.best_loss", progress.best_loss);
  archive.put_scalar<std::uint64_t>("progress.epochs_without_improvement", progress.epochs_without_improvement);
  for (const auto& [name, field] : history_columns) {
    std::vector<double> values;
    for (const auto& e : progress.history) values.push_back(e.*field);
    archive.put<double>(std::string("history.") + name, std::span<const double>(values),
                        {static_cast<std::ptrdiff_t>(values.size())});
  }
}

/// Reads put_progress's fields into `progress` (its step, loader and seed untouched). A format-1
/// LocalTrainer checkpoint holds only the epochs done: the best is then unknown and the history
/// NaN, as nothing was measured in this process.
inline void get_progress(const Archive& archive, Progress& progress) {
  const std::string file = archive.source();
  require_field(archive, "progress.epochs_done");
  progress.epochs_done = archive.get_scalar<std::uint64_t>("progress.epochs_done");
  progress.history.assign(static_cast<std::size_t>(progress.epochs_done), EpochMetrics{});
  if (!archive.contains("history.train_loss")) return;
  for (const char* field : {"progress.best_epoch", "progress.best_accuracy", "progress.best_loss",
                            "progress.epochs_without_improvement"})
    require_field(archive, field);
  for (const auto& column : history_columns) require_field(archive, std::string("history.") + column.first);
  progress.best_epoch = archive.get_scalar<std::int64_t>("progress.best_epoch");
  progress.best_accuracy = archive.get_scalar<double>("progress.best_accuracy");
  progress.best_loss = archive.get_scalar<double>("progress.best_loss");
  progress.epochs_without_improvement = archive.get_scalar<std::uint64_t>("progress.epochs_without_improvement");
  for (const auto& [name, field] : history_columns) {
    const auto values = archive.get<double>(std::string("history.") + name);
    require(values.size() == progress.epochs_done, "checkpoint '", file, "': field 'history.", name, "' holds ",
            values.size(), " epochs, progress.epochs_done says ", progress.epochs_done);
    for (std::size_t e = 0; e < values.size(); ++e) progress.history[e].*field = values[e];
  }
}

/// A centralized run's trainer: model, optimizer, global step, the loader's position and seed.
template <class Params, SavesState Optimizer>
void put_central(Archive& archive, const Params& params, const Optimizer& optimizer, const Progress& progress) {
  archive.put_string("trainer", "central");
  save_blocks(archive, params, params.values().data(), "model.");
  optimizer.save_state(archive, "optimizer.");
  archive.put_scalar<std::int64_t>("progress.step", progress.step);
  archive.put_scalar<std::uint64_t>("progress.loader_epoch", progress.loader.epoch);
  archive.put_scalar<std::uint64_t>("progress.loader_batch", progress.loader.batch);
  archive.put_scalar<std::uint64_t>("progress.seed", progress.seed);
  if (progress.loader.batch == 0) return;  // an epoch boundary: nothing in progress
  const EpochSums& p = progress.partial;
  archive.put_scalar<double>("progress.partial.loss_sum", p.loss_sum);
  archive.put_scalar<std::int64_t>("progress.partial.correct", p.correct);
  archive.put_scalar<std::int64_t>("progress.partial.samples", p.samples);
  archive.put_scalar<std::int64_t>("progress.partial.steps", p.steps);
  archive.put_scalar<double>("progress.partial.seconds", p.seconds);
  archive.put_scalar<double>("progress.partial.window_loss", p.window_loss);
  archive.put_scalar<std::int64_t>("progress.partial.window_correct", p.window_correct);
  archive.put_scalar<std::int64_t>("progress.partial.window_samples", p.window_samples);
}

/// Checks that `archive` is a centralized run's checkpoint of this model and optimizer, then
/// reads put_central's fields. Everything is checked before anything changes: std::invalid_argument
/// naming the file and the field otherwise.
template <class Params, SavesState Optimizer>
void get_central(const Archive& archive, Params& params, Optimizer& optimizer, Progress& progress) {
  const std::string file = archive.source();
  require_field(archive, "format");
  const std::string found = archive.get_string("format");
  require(found == format || found == format_v1, "checkpoint '", file, "': field 'format' is '", found, "', expected '",
          format, "'");
  if (archive.contains("trainer"))
    require(archive.get_string("trainer") == "central", "checkpoint '", file, "': field 'trainer' is '",
            archive.get_string("trainer"), "', not a centralized run's");
  check_blocks(archive, params, "model.");
  for (const char* field : {"progress.step", "progress.loader_epoch", "progress.loader_batch", "progress.seed"})
    require_field(archive, field);
  // The optimizer checks its kind and layout and changes nothing on failure; it goes first, so
  // every later step can no longer fail.
  Optimizer candidate = optimizer;
  try {
    candidate.load_state(archive, "optimizer.");
  } catch (const std::invalid_argument& e) {
    fail("checkpoint '", file, "': ", e.what());
  }
  optimizer = std::move(candidate);
  load_blocks(archive, params, params.values().data(), "model.");
  progress.step = archive.get_scalar<std::int64_t>("progress.step");
  progress.loader = {archive.get_scalar<std::uint64_t>("progress.loader_epoch"), archive.get_scalar<std::uint64_t>("progress.loader_batch")};
  progress.seed = archive.get_scalar<std::uint64_t>("progress.seed");
  progress.partial = {};
  if (progress.loader.batch == 0) return;
  for (const char* field : {"progress.partial.loss_sum", "progress.partial.correct", "progress.partial.samples",
                            "progress.partial.steps", "progress.partial.seconds", "progress.partial.window_loss",
                            "progress.partial.window_correct", "progress.partial.window_samples"})
    require_field(archive, field);
  EpochSums& p = progress.partial;
  p.loss_sum = archive.get_scalar<double>("progress.partial.loss_sum");
  p.correct = archive.get_scalar<std::int64_t>("progress.partial.correct");
  p.samples = archive.get_scalar<std::int64_t>("progress.partial.samples");
  p.steps = archive.get_scalar<std::int64_t>("progress.partial.steps");
  p.seconds = archive.get_scalar<double>("progress.partial.seconds");
  p.window_loss = archive.get_scalar<double>("progress.partial.window_loss");
  p.window_correct = archive.get_scalar<std::int64_t>("progress.partial.window_correct");
  p.window_samples = archive.get_scalar<std::int64_t>("progress.partial.window_samples");
}

/// The best weights (KeepBest), when there are any.
template <class Params>
void put_best(Archive& archive, const Params& params, std::span<const typename Params::scalar_type> best) {
  if (best.empty()) return;
  require(best.size() == static_cast<std::size_t>(params.size()), "checkpoint: best weights hold ", best.size(),
          " values, the model ", params.size());
  save_blocks(archive, params, best.data(), "best.");
}
template <class Params>
void get_best(const Archive& archive, const Params& params, std::vector<typename Params::scalar_type>& best) {
  const bool has_best = archive.contains("best." + params.blocks().front().name);
  if (has_best) check_blocks(archive, params, "best.");
  best.assign(has_best ? static_cast<std::size_t>(params.size()) : 0, typename Params::scalar_type{});
  if (has_best) load_blocks(archive, params, best.data(), "best.");
}

}  // namespace detail::checkpoint

/// Writes a centralized run's checkpoint of `params` (and `best`, the best weights, same layout,
/// if not empty), `optimizer` and `progress` to `file`, atomically: what run_training writes
/// after every epoch.
template <class Params, class Optimizer>
void save_checkpoint(const std::filesystem::path& file, const Params& params, std::span<const typename Params::scalar_type> best,
                     const Optimizer& optimizer, const Progress& progress) {
  using namespace detail::checkpoint;
  Archive archive;
  archive.put_string("format", format);
  put_progress(archive, progress);
  put_central(archive, params, optimizer, progress);
  put_best(archive, params, best);
  archive.save(file);
}

/// Reads a centralized run's checkpoint (format 1 or 2) into `params`, `best` (resized; empty if
/// the checkpoint has none), `optimizer` and `progress`. Everything is checked before anything
/// changes: std::invalid_argument naming the file and the field for a checkpoint of another model
/// (a missing block or another shape) or another optimizer; std::runtime_error naming the file,
/// member and byte offset for a truncated or corrupt file (from Archive::load).
template <class Params, class Optimizer>
void load_checkpoint(const std::filesystem::path& file, Params& params, std::vector<typename Params::scalar_type>& best,
                     Optimizer& optimizer, Progress& progress) {
  using namespace detail::checkpoint;
  const Archive archive = Archive::load(file);
  Progress loaded;
  get_progress(archive, loaded);
  std::vector<typename Params::scalar_type> loaded_best;
  get_best(archive, params, loaded_best);
  get_central(archive, params, optimizer, loaded);
  best = std::move(loaded_best);
  progress = std::move(loaded);
}

/// Which weights of a checkpoint load_weights reads: the best validation epoch's (KeepBest's
/// `best.*`), the model's at the checkpoint (`model.*`), or the best where there are any.
enum class Weights : std::uint8_t { best_or_model, best, model };

/// Loads only the weights of a checkpoint (centralized or local, any format) or of a plain
/// state dict (names without a prefix, as save_weights or `np.savez(f, **model.state_dict())`
/// write) into `params`, for inference: no optimizer, no progress. Checked before anything
/// changes: std::invalid_argument naming the file and the block for a missing block or another
/// shape; std::runtime_error naming the file, member and offset for a damaged file.
template <ParameterContainer Params>
void load_weights(const std::filesystem::path& file, Params& params, Weights which = Weights::best_or_model) {
  const Archive archive = Archive::load(file);
  const std::string first = params.blocks().empty() ? std::string() : params.blocks().front().name;
  std::string prefix;
  if (which != Weights::model && archive.contains("best." + first)) prefix = "best.";
  else if (which != Weights::best && archive.contains("model." + first)) prefix = "model.";
  else if (which == Weights::best_or_model && archive.contains(first)) prefix = "";
  else
    fail("load_weights: '", file.string(), "' holds no ", which == Weights::best ? "best weights ('best." : "weights ('model.",
         first, "'", which == Weights::best_or_model ? ", 'best.', or a plain state dict" : "", ")");
  check_blocks(archive, params, prefix);
  load_blocks(archive, params, params.values().data(), prefix);
}

/// Writes the weights of `params` as a plain state dict (`np.load(file)["fc1.weight"]`; PyTorch
/// loads it with `{k: torch.from_numpy(v) for k, v in np.load(file).items()}`), atomically.
template <ParameterContainer Params>
void save_weights(const std::filesystem::path& file, const Params& params) {
  Archive archive;
  save_blocks(archive, params, params.values().data(), "");
  archive.save(file);
}

/// The checkpoints of one run, `<root>/train/<optimizer>/<batch_size>/<lr>/<weight_decay>/<epoch>.npz`
/// (the study's layout; <epoch> counts from 1): the latest, and pruning to the last N plus the best.
class CheckpointFolder {
 public:
  CheckpointFolder(const std::filesystem::path& root, std::string_view optimizer, std::size_t batch_size, double lr,
                   double weight_decay)
      : path_(root / "train" / std::string(optimizer) / std::to_string(batch_size) / io::format_number(lr, 10) /
              io::format_number(weight_decay, 10)) {}
  explicit CheckpointFolder(std::filesystem::path path) : path_(std::move(path)) {}

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] std::filesystem::path file(std::uint64_t epoch) const { return path_ / (std::to_string(epoch) + ".npz"); }
  /// The checkpoint a stop request wrote in the middle of an epoch (newer than every <epoch>.npz
  /// while it exists: the next finished epoch removes it).
  [[nodiscard]] std::filesystem::path interrupted_file() const { return path_ / interrupted_name; }
  static constexpr const char* interrupted_name = "interrupted.npz";

  /// Creates the folder and proves it writable (a small file written, renamed, removed), so an
  /// output folder that cannot be written fails before any training. std::runtime_error names it.
  void prepare() const {
    std::error_code ec;
    std::filesystem::create_directories(path_, ec);
    require<std::runtime_error>(!ec, "checkpoint folder '", path_.string(), "' cannot be created: ", ec.message());
    const std::filesystem::path probe = path_ / ".write-test";
    Archive empty;
    empty.put_string("probe", "ok");
    empty.save(probe);
    std::filesystem::remove(probe, ec);
  }

  /// The epoch a checkpoint's file name says, for canonical names only: "<epoch>.npz" as
  /// std::to_string writes it ("007.npz" or "+7.npz" are not epoch 7's).
  [[nodiscard]] static std::optional<std::uint64_t> epoch_of(std::string_view name) {
    if (!name.ends_with(".npz") || name.size() == 4) return std::nullopt;
    std::uint64_t epoch = 0;
    const auto stem = name.substr(0, name.size() - 4);
    const auto [end, err] = std::from_chars(stem.data(), stem.data() + stem.size(), epoch);
    if (err != std::errc() || end != stem.data() + stem.size() || std::to_string(epoch) != stem) return std::nullopt;
    return epoch;
  }

  /// Epochs that have a checkpoint, ascending (temporary files of an interrupted save are ignored).
  [[nodiscard]] std::vector<std::uint64_t> epochs() const {
    std::vector<std::uint64_t> out;
    for (const std::string& name : npz_names())
      if (const auto epoch = epoch_of(name)) out.push_back(*epoch);
    std::sort(out.begin(), out.end());
    return out;
  }

  /// The .npz files that are not checkpoints of this folder by their names (neither <epoch>.npz
  /// nor interrupted.npz): never read, so a caller can name them.
  [[nodiscard]] std::vector<std::string> strays() const {
    std::vector<std::string> out;
    for (const std::string& name : npz_names())
      if (!epoch_of(name) && name != interrupted_name) out.push_back(name);
    std::sort(out.begin(), out.end());
    return out;
  }

  [[nodiscard]] std::optional<std::uint64_t> latest() const {
    const auto all = epochs();
    return all.empty() ? std::nullopt : std::optional(all.back());
  }

  /// Removes checkpoints older than the last `keep_last`, except epoch `keep` (the best).
  void prune(std::size_t keep_last, std::optional<std::uint64_t> keep = std::nullopt) const {
    const auto all = epochs();
    if (all.size() <= keep_last) return;
    for (std::size_t i = 0; i + keep_last < all.size(); ++i) {
      if (keep && all[i] == *keep) continue;
      std::error_code ec;
      std::filesystem::remove(file(all[i]), ec);
    }
  }

 private:
  [[nodiscard]] std::vector<std::string> npz_names() const {
    std::vector<std::string> out;
    std::error_code ec;
    if (!std::filesystem::is_directory(path_, ec)) return out;
    for (const auto& entry : std::filesystem::directory_iterator(path_, ec))
      if (const std::string name = entry.path().filename().string(); name.ends_with(".npz")) out.push_back(name);
    return out;
  }

  std::filesystem::path path_;
};

}  // namespace distopt::train
