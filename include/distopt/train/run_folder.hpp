// A run folder is one run's, and says which run it is.
//
// Two processes writing one run folder interleave checkpoints, prune each other's and leave a
// summary that belongs to neither. So a run claims its folder under an OS lock (io::FileLock on
// <folder>/run.lock, dropped by the kernel when the holder dies), and the folder holds the run's
// identity, config.json: every setting that changes the result (data, model, optimizer and each
// hyperparameter, schedule, seed, augmentation, accumulation). A run of another configuration
// that finds the folder is refused, naming each difference; `--resume` is refused the same way,
// except for the settings a resume may change (a larger number of epochs, the thread count).
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <concepts>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "distopt/core/error.hpp"
#include "distopt/core/file_lock.hpp"
#include "distopt/core/io.hpp"
#include "distopt/core/archive.hpp"
#include "distopt/train/checkpoint.hpp"

namespace distopt::train {

/// The configuration of a run: every setting that changes its result, by name, as text (numbers
/// in their shortest round-trip form, so equal text is an equal value). Kept in the order set.
class RunConfig {
  // Declared first: set and get deduce its type. `entries` is entries_, const or not.
  template <class Entries>
  static auto find(Entries& entries, const std::string& name) {
    return std::find_if(entries.begin(), entries.end(), [&](const auto& e) { return e.first == name; });
  }

 public:
  RunConfig() = default;

  RunConfig& set(const std::string& name, std::string value) {
    const auto it = find(entries_, name);
    if (it != entries_.end()) it->second = std::move(value);
    else entries_.emplace_back(name, std::move(value));
    return *this;
  }
  RunConfig& set(const std::string& name, const char* value) { return set(name, std::string(value)); }
  /// The shortest text that reads back as the same double ("0.9", not "0.90000000000000002").
  RunConfig& set(const std::string& name, double value) {
    if (std::isnan(value)) return set(name, std::string("nan"));
    std::array<char, 64> buffer{};
    const auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
    return set(name, std::string(buffer.data(), ec == std::errc() ? end : buffer.data()));
  }
  RunConfig& set(const std::string& name, bool value) { return set(name, std::string(value ? "true" : "false")); }
  template <std::integral I>
    requires(!std::same_as<I, bool>)
  RunConfig& set(const std::string& name, I value) {
    return set(name, std::to_string(value));
  }

  [[nodiscard]] std::optional<std::string> get(const std::string& name) const {
    const auto it = find(entries_, name);
    return it == entries_.end() ? std::nullopt : std::optional(it->second);
  }
  [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& entries() const noexcept { return entries_; }
  [[nodiscard]] bool empty() const noexcept { return entries_.empty(); }

  /// Each setting that differs between `before` (the folder's) and this one, as
  /// "name: before -> now" ("(none)" for a setting one side lacks), except those `allowed` accepts.
  [[nodiscard]] std::vector<std::string> differences(
      const RunConfig& before,
      const std::function<bool(const std::string& name, const std::string& before, const std::string& now)>& allowed = {}) const {
    std::vector<std::string> out;
    const auto note = [&](const std::string& name, const std::optional<std::string>& was, const std::optional<std::string>& is) {
      if (was == is) return;
      if (was && is && allowed && allowed(name, *was, *is)) return;
      out.push_back(message(name, ": ", was.value_or("(none)"), " -> ", is.value_or("(none)")));
    };
    for (const auto& [name, value] : before.entries_) note(name, value, get(name));
    for (const auto& [name, value] : entries_)
      if (!before.get(name)) note(name, std::nullopt, value);
    return out;
  }

  /// As JSON: {"name": "value", ...}.
  [[nodiscard]] std::string json() const {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (const auto& [name, value] : entries_) j[name] = value;
    return j.dump(2) + "\n";
  }
  /// The configuration in `text` (config.json's content); std::invalid_argument naming `source`
  /// when it is not JSON, not an object, or holds a value that is not a string.
  [[nodiscard]] static RunConfig parse(std::string_view text, std::string_view source) {
    nlohmann::ordered_json j;
    try {
      j = nlohmann::ordered_json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail("run config '", source, "': not JSON (", e.what(), ")");
    }
    require(j.is_object(), "run config '", source, "': not a JSON object");
    RunConfig config;
    for (const auto& [name, value] : j.items()) {
      require(value.is_string(), "run config '", source, "': '", name, "' is not a string");
      config.entries_.emplace_back(name, value.get<std::string>());
    }
    return config;
  }
  /// Reads config.json of `folder`, if there is one (see parse).
  [[nodiscard]] static std::optional<RunConfig> read(const std::filesystem::path& folder) {
    const auto text = io::read_text_if_exists(folder / file_name, "run config");
    if (!text) return std::nullopt;
    return parse(*text, (folder / file_name).string());
  }
  /// Writes config.json into `folder`, atomically.
  void write(const std::filesystem::path& folder) const { io::write_text(folder / file_name, json(), "run config"); }

  static constexpr const char* file_name = "config.json";

  friend bool operator==(const RunConfig&, const RunConfig&) = default;

 private:
  std::vector<std::pair<std::string, std::string>> entries_;
};

/// What a resume may change: a larger (or equal) `epochs`, and `threads`, which changes no bits.
[[nodiscard]] inline bool resume_may_change(const std::string& name, const std::string& before, const std::string& now) {
  if (name == "threads") return true;
  if (name != "epochs") return false;
  try {
    return std::stoull(now) >= std::stoull(before);
  } catch (const std::exception&) {
    return false;
  }
}

/// Raised when a run folder holds what this run may not replace: an earlier run's checkpoints
/// (neither resume nor overwrite asked), or a run of another configuration.
class FolderRefused : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Raised when a folder is claimed by another live process.
class FolderBusy : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// This process's claim on `folder`: the lock on <folder>/run.lock. Claims of one folder inside
/// one process share the lock (a program that claims its run folder before calling
/// train::run_training, which claims it again, holds it once); another process is refused with
/// FolderBusy naming the holder's host and PID. The folder is created if missing.
[[nodiscard]] inline std::shared_ptr<const io::FileLock> claim_folder(const std::filesystem::path& folder, std::string_view who = "run") {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<const io::FileLock>> held;
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  require<std::runtime_error>(!ec, who, ": cannot create '", folder.string(), "': ", ec.message());
  const std::filesystem::path file = folder / "run.lock";
  const std::string key = std::filesystem::weakly_canonical(file, ec).string();
  const std::lock_guard guard(mutex);
  if (auto lock = held[key].lock()) return lock;
  auto acquired = io::FileLock::try_acquire(file);
  if (!acquired) {
    const std::string holder = io::FileLock::holder(file);
    throw FolderBusy(message(who, ": '", folder.string(), "' is in use by another process (",
                             holder.empty() ? std::string("its name not yet written") : holder,
                             "); wait for it to finish, or stop it first"));
  }
  auto lock = std::make_shared<const io::FileLock>(std::move(*acquired));
  held[key] = lock;
  return lock;
}

/// How a run treats the folder it finds: continue it (`resume`), or replace an earlier run of it
/// (`overwrite`); the run's configuration to check and keep (none: unchecked); where notes go
/// (a removed leftover, a damaged checkpoint set aside; none: stderr).
struct FolderPolicy {
  bool resume = false;
  bool overwrite = false;
  std::optional<RunConfig> config{};
  std::function<void(const std::string&)> note{};
};

namespace detail::run_folder {
inline void note(const FolderPolicy& policy, const std::string& text) {
  if (policy.note) policy.note(text);
  else std::cerr << "run: " << text << '\n';
}
inline std::string joined(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
  return out;
}
/// Renames a damaged file to <name>.damaged (or .damaged-2, ...), never over another.
inline std::filesystem::path set_aside(const std::filesystem::path& file) {
  std::filesystem::path aside = file;
  aside += ".damaged";
  for (int n = 2; std::filesystem::exists(aside); ++n) {
    aside = file;
    aside += message(".damaged-", n);
  }
  std::error_code ec;
  std::filesystem::rename(file, aside, ec);
  require<std::runtime_error>(!ec, "cannot set the damaged checkpoint '", file.string(), "' aside as '", aside.string(),
                              "': ", ec.message());
  return aside;
}
}  // namespace detail::run_folder

/// Opens `folder` for a run of this process: claims it (claim_folder: another live process on it
/// is refused, naming it), removes the temporary files of writers that died (all of them with
/// `overwrite`), names the .npz files that are not checkpoints by their names, then checks the
/// folder's config.json against `policy.config`: a fresh run of another configuration is refused
/// unless `overwrite`, naming each difference; a resume of another configuration always is, but
/// for a larger epochs count. A fresh run into a folder that holds checkpoints is refused unless
/// `overwrite`, which removes them. Writes `policy.config` into the folder. Keep the returned
/// claim while the run writes.
inline std::shared_ptr<const io::FileLock> open_run_folder(const CheckpointFolder& folder, const FolderPolicy& policy) {
  using detail::run_folder::joined;
  auto claim = claim_folder(folder.path(), "run");
  folder.prepare();
  const std::string where = folder.path().string();
  for (const std::string& name : io::remove_dead_temporaries(folder.path(), policy.overwrite && !policy.resume))
    detail::run_folder::note(policy, message("removed '", name, "' in '", where, "', left by a writer that died"));
  for (const std::string& name : folder.strays())
    detail::run_folder::note(policy, message("ignoring '", name, "' in '", where, "': checkpoints are named <epoch>.npz"));
  const std::optional<RunConfig> stored = RunConfig::read(folder.path());
  if (policy.config && stored) {
    if (policy.resume) {
      const auto changed = policy.config->differences(*stored, resume_may_change);
      require<FolderRefused>(changed.empty(), "resume: the run in '", where, "' was started with another configuration (",
                             joined(changed), "); only a larger number of epochs may change on resume (start it again with "
                             "overwrite, or elsewhere)");
    } else if (!policy.overwrite) {
      const auto changed = policy.config->differences(*stored);
      require<FolderRefused>(changed.empty(), "run folder '", where, "' holds a run of another configuration (", joined(changed),
                             "); overwrite replaces it, or choose another output folder");
    }
  }
  const bool interrupted = std::filesystem::exists(folder.interrupted_file());
  if (!policy.resume && (!folder.epochs().empty() || interrupted)) {
    require<FolderRefused>(policy.overwrite, "run: '", where, "' holds checkpoints of an earlier run (",
            folder.epochs().empty() ? std::string("interrupted in its first epoch")
                                    : message("epochs up to ", folder.epochs().back()),
            "); resume it or overwrite it");
    for (const auto epoch : folder.epochs()) std::filesystem::remove(folder.file(epoch));
    std::filesystem::remove(folder.interrupted_file());
  }
  if (policy.config) policy.config->write(folder.path());
  return claim;
}

/// The checkpoint a resume continues from: the newest intact one. A damaged checkpoint (one
/// Archive::load refuses: truncated, a CRC mismatch, ...) is named with the reason, set aside as
/// <name>.damaged and passed over for the one before; interrupted.npz (a stop mid-epoch) wins over
/// the epoch it continues, and is removed when an epoch after it was checkpointed. Nothing: start
/// afresh (no intact checkpoint).
[[nodiscard]] inline std::optional<std::filesystem::path> resume_point(const CheckpointFolder& folder,
                                                                       const FolderPolicy& policy = {}) {
  const auto intact = [&](const std::filesystem::path& file) -> std::optional<Archive> {
    try {
      return Archive::load(file);
    } catch (const std::exception& e) {
      const std::filesystem::path aside = detail::run_folder::set_aside(file);
      detail::run_folder::note(policy, message("checkpoint '", file.string(), "' is damaged (", e.what(), "); kept aside as '",
                                               aside.filename().string(), "', resuming from the one before"));
      return std::nullopt;
    }
  };
  std::optional<std::uint64_t> chosen;
  const auto epochs = folder.epochs();
  for (auto it = epochs.rbegin(); it != epochs.rend() && !chosen; ++it)
    if (intact(folder.file(*it))) chosen = *it;
  const std::filesystem::path stopped = folder.interrupted_file();
  if (std::filesystem::exists(stopped)) {
    if (const auto archive = intact(stopped)) {
      const bool current = !archive->contains("progress.epochs_done") ||
                           !chosen || archive->get_scalar<std::uint64_t>("progress.epochs_done") >= *chosen;
      if (current) return stopped;
      std::filesystem::remove(stopped);
      detail::run_folder::note(policy, message("removed '", stopped.string(), "': epoch ", *chosen, " was checkpointed after it"));
    }
  }
  if (!chosen) return std::nullopt;
  return folder.file(*chosen);
}

}  // namespace distopt::train
