// The checkpoint layout of a LocalTrainer: everything a resumed trainer needs to continue to the
// same bits, as fields of one .npz archive (core/archive.hpp):
//   trainer                   "local <outer>" (format 1: outer.kind beside format
//                             "distopt-local-checkpoint 1")
//   model.<name>              the global model x
//   outer.*                   the outer policy's state (SlowMo's slow momentum)
//   local.step, local.workers, local.local_steps, local.seed, local.compression (its label;
//                             absent: none)
//   progress.epochs_done
//   communication.*           the cost so far (rounds, values and bytes, modelled and measured time)
//   streaming.{fragments,delay,alpha}  Streaming DiLoCo's settings (absent: none, from before it)
//   clock.{simulated,compute,link_free}  the simulated wall clock (absent: from before it, 0)
//   exchange.count, exchange.<i>.{fragment,started,gamma,arrives,average}  the exchanges in flight, in
//                             the order they started, each completed before saving (its average
//                             is the same bits whenever it arrives)
//   worker.<k>.optimizer.*    every worker's inner optimizer, worker.<k>.loader_{epoch,batch} its
//                             loader's position, and worker.<k>.model.* its weights unless the
//                             inner buffers are reset every round, worker.<k>.residual its
//                             error-feedback residual (with error feedback)
// With several ranks, saving is a collective: every rank's workers go to rank 0, which writes the
// file; resuming has rank 0 read the file and broadcast its bytes, so the ranks need not share a
// file system.
#pragma once

#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "distopt/core/archive.hpp"
#include "distopt/core/block_archive.hpp"
#include "distopt/core/error.hpp"
#include "distopt/local/local_trainer.hpp"

namespace distopt::local {

/// Saves, loads and resumes a LocalTrainer's state (the layout above).
struct LocalCheckpoint {
  static constexpr std::string_view format_v1 = "distopt-local-checkpoint 1";

  /// Writes `fields` (the run's other fields, format included) and `trainer`'s state to `file`,
  /// atomically. Collective over the trainer's communicator: rank 0 writes.
  template <class Trainer>
  static void save(Trainer& trainer, const std::filesystem::path& file, const Archive& fields) {
    Archive archive = fields;
    trainer.complete_exchanges();
    put(trainer, archive);
    auto& comm = trainer.comm_;
    if (comm.ranks() > 1) {
      const auto parts = comm.gather_bytes(archive.to_bytes());
      if (comm.rank() != 0) return;
      for (std::size_t r = 1; r < parts.size(); ++r) merge_into(archive, Archive::from_bytes(parts[r], message("rank ", r)));
    }
    archive.save(file);
  }

  /// Writes `trainer`'s state alone to `file` (a checkpoint outside train::run).
  template <class Trainer>
  static void save(Trainer& trainer, const std::filesystem::path& file) {
    Archive fields;
    fields.put_string("format", checkpoint_format);
    save(trainer, file, fields);
  }

  /// Applies the state in `archive` (`file` names it in errors) to `trainer`. Everything is
  /// checked first (std::invalid_argument naming the file and field for another model, outer
  /// policy, K, H or seed); on failure nothing changes.
  template <class Trainer>
  static void load(Trainer& trainer, const Archive& archive, const std::filesystem::path& file) {
    using Inner = std::remove_cvref_t<decltype(trainer.workers_.front()->optimizer)>;
    static_assert(SavesState<Inner>, "a LocalTrainer checkpoints its inner optimizers: Inner must model SavesState");
    const auto field_is = [&](const char* name, std::uint64_t expected) {
      require(archive.contains(name), "checkpoint '", file.string(), "': field '", name, "' is missing");
      const auto v = archive.get_scalar<std::uint64_t>(name);
      require(v == expected, "checkpoint '", file.string(), "': field '", name, "' is ", v, ", this trainer has ", expected);
    };
    require(archive.contains("format"), "checkpoint '", file.string(), "': field 'format' is missing");
    const std::string format = archive.get_string("format");
    const std::string outer = trainer.outer_.name();
    if (format == format_v1) {
      require(archive.get_string("outer.kind") == outer, "checkpoint '", file.string(), "': field 'outer.kind' is '",
              archive.get_string("outer.kind"), "', this trainer's outer policy is '", outer, "'");
    } else {
      require(archive.contains("trainer"), "checkpoint '", file.string(), "': field 'trainer' is missing (format '", format, "')");
      require(archive.get_string("trainer") == kind(trainer), "checkpoint '", file.string(), "': field 'trainer' is '",
              archive.get_string("trainer"), "', this trainer is '", kind(trainer), "'");
    }
    field_is("local.workers", trainer.options_.workers);
    field_is("local.local_steps", trainer.options_.local_steps);
    field_is("local.seed", trainer.options_.seed);
    const std::string compression = archive.contains("local.compression") ? archive.get_string("local.compression") : "none";
    require(compression == trainer.options_.compression.label(), "checkpoint '", file.string(), "': field 'local.compression' is '",
            compression, "', this trainer sends '", trainer.options_.compression.label(), "'");
    const Streaming& streaming = trainer.options_.streaming;
    if (archive.contains("streaming.fragments")) {
      field_is("streaming.fragments", streaming.fragments);
      field_is("streaming.delay", streaming.delay);
      const double alpha = archive.get_scalar<double>("streaming.alpha");
      require(alpha == streaming.alpha, "checkpoint '", file.string(), "': field 'streaming.alpha' is ", alpha, ", this trainer has ",
              streaming.alpha);
    } else {
      require(!streaming.overlaps(), "checkpoint '", file.string(), "': field 'streaming.fragments' is missing (a run without streaming)");
    }
    using Exchange = typename std::remove_cvref_t<decltype(*trainer.in_flight_.front())>;
    std::vector<std::unique_ptr<Exchange>> exchanges;
    const std::uint64_t count = archive.contains("exchange.count") ? archive.get_scalar<std::uint64_t>("exchange.count") : 0;
    for (std::uint64_t i = 0; i < count; ++i) {
      const std::string prefix = message("exchange.", i, ".");
      auto e = std::make_unique<Exchange>();
      e->fragment = static_cast<std::size_t>(archive.get_scalar<std::uint64_t>(prefix + "fragment"));
      require(e->fragment < trainer.fragments_.size(), "checkpoint '", file.string(), "': field '", prefix, "fragment' is ", e->fragment,
              ", this trainer has ", trainer.fragments_.size(), " fragments");
      e->started = archive.get_scalar<std::int64_t>(prefix + "started");
      e->gamma = archive.get_scalar<double>(prefix + "gamma");
      e->arrives = archive.get_scalar<double>(prefix + "arrives");
      const auto average = archive.get<double>(prefix + "average");
      require(average.size() == trainer.fragments_[e->fragment].size(), "checkpoint '", file.string(), "': field '", prefix,
              "average' holds ", average.size(), " values, fragment ", e->fragment, " has ", trainer.fragments_[e->fragment].size());
      e->average.assign(average.begin(), average.end());
      e->complete = true;
      exchanges.push_back(std::move(e));
    }
    check_blocks(archive, trainer.global_.parameters(), "model.");
    auto outer_state = trainer.outer_;
    outer_state.load(archive, "outer.");
    std::vector<Inner> optimizers;
    for (const auto& w : trainer.workers_) {
      const std::string prefix = message("worker.", w->index, ".");
      Inner candidate = w->optimizer;
      try {
        candidate.load_state(archive, prefix + "optimizer.");
      } catch (const std::invalid_argument& e) {
        fail("checkpoint '", file.string(), "': ", e.what());
      }
      optimizers.push_back(std::move(candidate));
      if (!w->residual.empty()) {
        require(archive.contains(prefix + "residual"), "checkpoint '", file.string(), "': field '", prefix, "residual' is missing");
        const std::size_t stored = archive.get<double>(prefix + "residual").size();
        require(stored == w->residual.size(), "checkpoint '", file.string(), "': field '", prefix, "residual' holds ", stored,
                " values, the model ", w->residual.size());
      }
      if (trainer.options_.inner_buffers != InnerBuffers::reset) check_blocks(archive, w->model.parameters(), prefix + "model.");
    }
    // Checked: now apply.
    load_blocks(archive, trainer.global_.parameters(), trainer.global_.parameters().values().data(), "model.");
    trainer.outer_ = std::move(outer_state);
    for (std::size_t i = 0; i < trainer.workers_.size(); ++i) {
      auto& w = *trainer.workers_[i];
      const std::string prefix = message("worker.", w.index, ".");
      w.optimizer = std::move(optimizers[i]);
      w.loader->seek({archive.get_scalar<std::uint64_t>(prefix + "loader_epoch"),
                      archive.get_scalar<std::uint64_t>(prefix + "loader_batch")});
      if (trainer.options_.inner_buffers != InnerBuffers::reset)
        load_blocks(archive, w.model.parameters(), w.model.parameters().values().data(), prefix + "model.");
      if (!w.residual.empty()) {
        const auto residual = archive.get<double>(prefix + "residual");
        std::copy(residual.begin(), residual.end(), w.residual.begin());
      }
    }
    trainer.complete_exchanges();  // what was in flight before is replaced
    trainer.in_flight_ = std::move(exchanges);
    const auto clock = [&](const char* name) { return archive.contains(name) ? archive.get_scalar<double>(name) : 0.0; };
    trainer.clock_ = {clock("clock.simulated"), clock("clock.compute"), clock("clock.link_free")};
    trainer.step_ = archive.get_scalar<std::int64_t>("local.step");
    trainer.epochs_done_ = archive.get_scalar<std::uint64_t>("progress.epochs_done");
    auto& c = trainer.communication_;
    c.rounds = archive.get_scalar<std::int64_t>("communication.rounds");
    c.allreduce_values = archive.get_scalar<std::int64_t>("communication.allreduce_values");
    c.bytes_per_worker = archive.get_scalar<double>("communication.bytes_per_worker");
    c.modelled_seconds = archive.get_scalar<double>("communication.modelled_seconds");
    c.measured_seconds = archive.get_scalar<double>("communication.measured_seconds");
    // Checkpoints from before the all-reduce was timed apart resume with that time unknown (0).
    c.allreduce_seconds =
        archive.contains("communication.allreduce_seconds") ? archive.get_scalar<double>("communication.allreduce_seconds") : 0.0;
  }

  /// Loads the checkpoint `file` into `trainer`; returns the archive (for the run's own fields).
  template <class Trainer>
  static Archive load(Trainer& trainer, const std::filesystem::path& file) {
    Archive archive = Archive::load(file);
    load(trainer, archive, file);
    return archive;
  }

  /// Resumes from the checkpoint rank 0 names in `latest` (nothing: a fresh start, on every rank).
  /// Collective: rank 0 reads the file and broadcasts its bytes, so the ranks agree on where to
  /// resume even without a shared file system; a checkpoint rank 0 cannot read is broadcast as
  /// its error, so every rank throws it (none is left waiting in the next collective).
  template <class Trainer>
  static std::optional<Archive> resume(Trainer& trainer, const std::optional<std::filesystem::path>& latest) {
    auto& comm = trainer.comm_;
    if (comm.ranks() <= 1) {
      if (!latest) return std::nullopt;
      return load(trainer, *latest);
    }
    enum : std::uint8_t { none, checkpoint, error };
    std::vector<std::uint8_t> bytes{none};
    std::filesystem::path file = "rank 0's checkpoint";
    std::exception_ptr failure;
    if (comm.rank() == 0 && latest) try {
        file = *latest;
        bytes = Archive::load(file).to_bytes();
        bytes.insert(bytes.begin(), checkpoint);
      } catch (const std::exception& e) {
        failure = std::current_exception();
        const std::string what = e.what();
        bytes.assign(1, error);
        bytes.insert(bytes.end(), what.begin(), what.end());
      }
    comm.broadcast_bytes(bytes);
    if (failure) std::rethrow_exception(failure);
    if (bytes.front() == error) fail<std::runtime_error>("rank 0: ", std::string(bytes.begin() + 1, bytes.end()));
    if (bytes.front() == none) return std::nullopt;
    Archive archive = Archive::from_bytes(std::span<const std::uint8_t>(bytes).subspan(1), file.string());
    load(trainer, archive, file);
    return archive;
  }

  /// "local <outer>": the trainer field of its checkpoints.
  template <class Trainer>
  [[nodiscard]] static std::string kind(const Trainer& trainer) {
    return "local " + trainer.outer_.name();
  }

 private:
  template <class Trainer>
  static void put(const Trainer& trainer, Archive& archive) {
    archive.put_string("trainer", kind(trainer));
    save_blocks(archive, trainer.global_.parameters(), trainer.global_.parameters().values().data(), "model.");
    trainer.outer_.save(archive, "outer.");
    archive.put_scalar<std::int64_t>("local.step", trainer.step_);
    archive.put_scalar<std::uint64_t>("local.workers", trainer.options_.workers);
    archive.put_scalar<std::uint64_t>("local.local_steps", trainer.options_.local_steps);
    archive.put_scalar<std::uint64_t>("local.seed", trainer.options_.seed);
    archive.put_string("local.compression", trainer.options_.compression.label());
    const Streaming& streaming = trainer.options_.streaming;
    archive.put_scalar<std::uint64_t>("streaming.fragments", streaming.fragments);
    archive.put_scalar<std::uint64_t>("streaming.delay", streaming.delay);
    archive.put_scalar<double>("streaming.alpha", streaming.alpha);
    archive.put_scalar<double>("clock.simulated", trainer.clock_.now);
    archive.put_scalar<double>("clock.compute", trainer.clock_.compute);
    archive.put_scalar<double>("clock.link_free", trainer.clock_.link_free);
    archive.put_scalar<std::uint64_t>("exchange.count", trainer.in_flight_.size());
    for (std::size_t i = 0; i < trainer.in_flight_.size(); ++i) {
      const auto& e = *trainer.in_flight_[i];
      const std::string prefix = message("exchange.", i, ".");
      archive.put_scalar<std::uint64_t>(prefix + "fragment", e.fragment);
      archive.put_scalar<std::int64_t>(prefix + "started", e.started);
      archive.put_scalar<double>(prefix + "gamma", e.gamma);
      archive.put_scalar<double>(prefix + "arrives", e.arrives);
      archive.put<double>(prefix + "average", std::span<const double>(e.average), {static_cast<std::ptrdiff_t>(e.average.size())});
    }
    if (!archive.contains("progress.epochs_done")) archive.put_scalar<std::uint64_t>("progress.epochs_done", trainer.epochs_done_);
    const auto& c = trainer.communication_;
    archive.put_scalar<std::int64_t>("communication.rounds", c.rounds);
    archive.put_scalar<std::int64_t>("communication.allreduce_values", c.allreduce_values);
    archive.put_scalar<double>("communication.bytes_per_worker", c.bytes_per_worker);
    archive.put_scalar<double>("communication.modelled_seconds", c.modelled_seconds);
    archive.put_scalar<double>("communication.measured_seconds", c.measured_seconds);
    archive.put_scalar<double>("communication.allreduce_seconds", c.allreduce_seconds);
    for (const auto& w : trainer.workers_) {
      const std::string prefix = message("worker.", w->index, ".");
      w->optimizer.save_state(archive, prefix + "optimizer.");
      archive.put_scalar<std::uint64_t>(prefix + "loader_epoch", w->loader->position().epoch);
      archive.put_scalar<std::uint64_t>(prefix + "loader_batch", w->loader->position().batch);
      if (trainer.options_.inner_buffers != InnerBuffers::reset)
        save_blocks(archive, w->model.parameters(), w->model.parameters().values().data(), prefix + "model.");
      if (!w->residual.empty())
        archive.put<double>(prefix + "residual", std::span<const double>(w->residual), {static_cast<std::ptrdiff_t>(w->residual.size())});
    }
  }

  // Copies every array of `from` into `into` (the workers of the other ranks, on rank 0).
  static void merge_into(Archive& into, const Archive& from) {
    for (const std::string& name : from.names()) {
      if (into.contains(name)) continue;  // the fields every rank writes alike
      const std::string_view dtype = from.dtype(name);
      const auto copy = [&]<class T>(std::type_identity<T>) { into.put<T>(name, from.get<T>(name), from.shape(name)); };
      if (dtype == npy_dtype<float>) copy(std::type_identity<float>{});
      else if (dtype == npy_dtype<double>) copy(std::type_identity<double>{});
      else if (dtype == npy_dtype<std::int32_t>) copy(std::type_identity<std::int32_t>{});
      else if (dtype == npy_dtype<std::int64_t>) copy(std::type_identity<std::int64_t>{});
      else if (dtype == npy_dtype<std::uint8_t>) copy(std::type_identity<std::uint8_t>{});
      else if (dtype == npy_dtype<std::uint32_t>) copy(std::type_identity<std::uint32_t>{});
      else if (dtype == npy_dtype<std::uint64_t>) copy(std::type_identity<std::uint64_t>{});
      else fail("merge_into: array '", name, "' of ", from.source(), " has dtype ", dtype);
    }
  }
};

}  // namespace distopt::local
