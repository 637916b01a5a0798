// How a stage's training runs are spread: in one process, one run after another; under an MPI
// launcher, over groups of ranks that each take the next run of the stage's work list when they
// finish one, so fast and slow runs balance whatever their order.
//
//   world:  rank 0 | rank 1 | rank 2 | rank 3        --ranks-per-run 2
//   groups: [ group 0      ] [ group 1      ]        MPI_Comm_split(world, rank / 2)
//
// World rank 0 is the study's only writer of results: a coordinator thread beside its own group's
// work hands out runs and receives each finished run's result row, metrics and run folder (its
// final checkpoint), which it writes under its own --work and --results. Groups keep intermediate
// checkpoints on their own disk, so no shared file system is needed. With --shared-work every
// group writes its run folders directly, each under an OS lock on <run>.lock, so two jobs pointed
// at one folder never train the same run: a job that finds a run locked moves on, and comes back
// to wait for the lock (and the other job's result) when nothing else is left.
//
// Every run has its own seed path and no run reads another's state, so which group trains which
// run changes nothing in the results: one process, `mpirun -np 2` and `-np 3` give the same bits.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/runs.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/file_lock.hpp"
#include "distopt/core/io.hpp"
#include "distopt/local/communicator.hpp"

#if defined(DISTOPT_STUDY_MPI)
#include <mpi.h>

#include "distopt/local/mpi.hpp"
#endif

namespace distopt::study {

/// The communicator of one rank group, the one a run's LocalTrainer spreads its workers over: the
/// in-process one when the group is this process alone (so a group of one rank trains exactly as
/// a one-process run does), else MPI over the group's ranks.
class GroupComm {
  // Declared first: the members below deduce their types from them.
  template <class F>
  decltype(auto) forward(F&& f) {
#if defined(DISTOPT_STUDY_MPI)
    if (mpi_) return f(*mpi_);
#endif
    return f(alone_);
  }
  template <class F>
  decltype(auto) forward(F&& f) const {
#if defined(DISTOPT_STUDY_MPI)
    if (mpi_) return f(*mpi_);
#endif
    return f(alone_);
  }

 public:
  GroupComm() = default;
#if defined(DISTOPT_STUDY_MPI)
  /// MPI over `comm`, or this process alone when `comm` has one rank.
  explicit GroupComm(MPI_Comm comm) {
    int size = 1;
    MPI_Comm_size(comm, &size);
    if (size > 1) mpi_.emplace(comm);
  }
#endif

  [[nodiscard]] int rank() const noexcept { return forward([](const auto& c) { return c.rank(); }); }
  [[nodiscard]] int ranks() const noexcept { return forward([](const auto& c) { return c.ranks(); }); }
  [[nodiscard]] std::size_t first_worker(std::size_t workers) const noexcept {
    return forward([&](const auto& c) { return c.first_worker(workers); });
  }
  [[nodiscard]] std::size_t local_workers(std::size_t workers) const noexcept {
    return forward([&](const auto& c) { return c.local_workers(workers); });
  }
  void allreduce_sum(std::span<double> buffer) {
    forward([&](auto& c) { c.allreduce_sum(buffer); });
  }
  void broadcast_bytes(std::vector<std::uint8_t>& bytes) {
    forward([&](auto& c) { c.broadcast_bytes(bytes); });
  }
  [[nodiscard]] std::vector<std::vector<std::uint8_t>> gather_bytes(const std::vector<std::uint8_t>& bytes) {
    return forward([&](auto& c) { return c.gather_bytes(bytes); });
  }
  void barrier() {
    forward([](auto& c) { c.barrier(); });
  }
  void require_same(std::uint64_t value, std::string_view what) {
    forward([&](auto& c) { c.require_same(value, what); });
  }

  /// The pending collective of whichever communicator runs.
  struct Pending {
    local::InProcess::Pending alone;
#if defined(DISTOPT_STUDY_MPI)
    local::MpiCommunicator::Pending mpi;
#endif
  };
  [[nodiscard]] Pending start_allreduce_sum(std::span<double> buffer) {
    Pending p;
#if defined(DISTOPT_STUDY_MPI)
    if (mpi_) p.mpi = mpi_->start_allreduce_sum(buffer);
#endif
    if (!mpi_active()) p.alone = alone_.start_allreduce_sum(buffer);
    return p;
  }
  [[nodiscard]] Pending start_allgather_bytes(const std::vector<std::uint8_t>& bytes) {
    Pending p;
#if defined(DISTOPT_STUDY_MPI)
    if (mpi_) p.mpi = mpi_->start_allgather_bytes(bytes);
#endif
    if (!mpi_active()) p.alone = alone_.start_allgather_bytes(bytes);
    return p;
  }
  [[nodiscard]] bool test(Pending& p) {
#if defined(DISTOPT_STUDY_MPI)
    if (mpi_) return mpi_->test(p.mpi);
#endif
    return alone_.test(p.alone);
  }
  [[nodiscard]] std::vector<std::vector<std::uint8_t>> wait(Pending& p) {
#if defined(DISTOPT_STUDY_MPI)
    if (mpi_) return mpi_->wait(p.mpi);
#endif
    return alone_.wait(p.alone);
  }

 private:
  [[nodiscard]] bool mpi_active() const noexcept {
#if defined(DISTOPT_STUDY_MPI)
    return mpi_.has_value();
#else
    return false;
#endif
  }

  local::InProcess alone_;
#if defined(DISTOPT_STUDY_MPI)
  std::optional<local::MpiCommunicator> mpi_;
#endif
};
static_assert(local::Communicator<GroupComm>);

/// The lock of --shared-work on <run>.lock (io::FileLock: dropped by the kernel when the holder
/// dies, passed on to the server by NFS clients).
using io::FileLock;

/// Bytes of the work list's messages: unsigned 64-bit numbers and length-prefixed strings. The
/// reader checks every length against what is left, naming the field it was reading.
class Message {
 public:
  Message() = default;
  explicit Message(std::vector<std::uint8_t> bytes) : bytes_(std::move(bytes)) {}

  void put(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void put(std::string_view s) {
    put(static_cast<std::uint64_t>(s.size()));
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  void put(const Row& row) {
    put(static_cast<std::uint64_t>(row.cells().size()));
    for (const auto& [name, value] : row.cells()) put(name), put(value);
  }
  [[nodiscard]] std::uint64_t number(std::string_view field) {
    require(8 <= bytes_.size() - at_, "work message: ", field, " at offset ", at_, " runs past its end (", bytes_.size(), " bytes)");
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t{bytes_[at_++]} << (8 * i);
    return v;
  }
  [[nodiscard]] std::string text(std::string_view field) {
    const std::uint64_t size = number(field);
    require(size <= bytes_.size() - at_, "work message: ", field, " at offset ", at_, " claims ", size, " bytes, ",
            bytes_.size() - at_, " are left");
    std::string s(bytes_.begin() + static_cast<std::ptrdiff_t>(at_), bytes_.begin() + static_cast<std::ptrdiff_t>(at_ + size));
    at_ += static_cast<std::size_t>(size);
    return s;
  }
  [[nodiscard]] Row row(std::string_view field) {
    Row row;
    const std::uint64_t cells = number(field);
    for (std::uint64_t i = 0; i < cells; ++i) {
      std::string name = text(field);
      row[name] = text(field);
    }
    return row;
  }
  [[nodiscard]] std::vector<std::uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
  std::size_t at_ = 0;
};

/// One training run of a stage's work list: its run folder (where its lock, metrics and files are).
struct Job {
  std::filesystem::path folder;
};

/// The row of job i without training it, read by rank 0 (or, with --shared-work, by the group that
/// holds its lock): a finished run's result, another stage's run of the same stamp, a cell too
/// sparse to run. Nothing when the job must train.
using Lookup = std::function<std::optional<Row>(std::size_t)>;
/// Trains job i, collectively over the group's ranks; the row of the group's rank 0 counts.
using Runner = std::function<Row(std::size_t, GroupComm&)>;

/// How a job is spread: ranks per run (a LocalSGD cell's workers spread over them) and whether
/// every group sees one --work folder (a shared file system).
struct WorkOptions {
  int ranks_per_run = 1;
  bool shared = false;
};

/// The files of a run folder (recursively; names relative to it), without temporary files of
/// writes in progress.
[[nodiscard]] inline std::vector<std::pair<std::string, std::string>> folder_files(const std::filesystem::path& folder) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, std::string>> files;
  if (!fs::is_directory(folder)) return files;
  for (const auto& entry : fs::recursive_directory_iterator(folder)) {
    if (!entry.is_regular_file() || entry.path().filename().string().find(".tmp-") != std::string::npos) continue;
    files.emplace_back(fs::relative(entry.path(), folder).string(), io::read_text(entry.path(), "folder_files"));
  }
  std::sort(files.begin(), files.end());
  return files;
}

/// A stage's runs spread over the job's rank groups (see the top of this file). Every rank of the
/// job constructs it, calls `run` with the same jobs in the same order, and gets every row back.
class Work {
 public:
  /// One process: the jobs one after another.
  explicit Work(WorkOptions options = {}) : options_(options) {}
#if defined(DISTOPT_STUDY_MPI)
  /// The ranks of MPI_COMM_WORLD (MPI initialised with MPI_THREAD_MULTIPLE: rank 0's coordinator
  /// thread talks while its main thread trains) in groups of `options.ranks_per_run`.
  Work(WorkOptions options, bool use_mpi) : options_(options) {
    if (!use_mpi) return;
    mpi_ = true;
    int provided = 0;
    MPI_Query_thread(&provided);
    MPI_Comm_dup(MPI_COMM_WORLD, &world_comm_);
    MPI_Comm_dup(MPI_COMM_WORLD, &list_comm_);
    MPI_Comm_rank(world_comm_, &world_rank_);
    MPI_Comm_size(world_comm_, &world_size_);
    require(options_.ranks_per_run >= 1 && world_size_ % options_.ranks_per_run == 0, "--ranks-per-run ", options_.ranks_per_run,
            " does not divide the job's ", world_size_, " ranks into whole groups");
    require(provided >= MPI_THREAD_MULTIPLE || world_size_ == options_.ranks_per_run,
            "this MPI library offers no MPI_THREAD_MULTIPLE, which rank 0's coordinator of several groups needs");
    MPI_Comm_split(world_comm_, world_rank_ / options_.ranks_per_run, world_rank_, &group_comm_);
    world_ = GroupComm(world_comm_);
    group_ = GroupComm(group_comm_);
  }
#endif
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work() {
#if defined(DISTOPT_STUDY_MPI)
    if (mpi_) {
      MPI_Comm_free(&group_comm_);
      MPI_Comm_free(&list_comm_);
      MPI_Comm_free(&world_comm_);
    }
#endif
  }

  /// World rank 0: the only reader and writer of the study's results.
  [[nodiscard]] bool root() const noexcept { return world_rank_ == 0; }
  [[nodiscard]] int ranks() const noexcept { return world_size_; }
  [[nodiscard]] int groups() const noexcept { return world_size_ / options_.ranks_per_run; }
  [[nodiscard]] const WorkOptions& options() const noexcept { return options_; }
  /// Every rank of the job, for the stage's own decisions (rank 0 reads, broadcasts).
  [[nodiscard]] GroupComm& world() noexcept { return world_; }

  /// The rows of `jobs` in their order, on every rank: each looked up (rank 0) or trained by one
  /// group. The metrics of every run trained are appended to `metrics` (rank 0) when it ends.
  [[nodiscard]] std::vector<Row> run(const std::vector<Job>& jobs, const Lookup& lookup, const Runner& runner,
                                     const std::filesystem::path& metrics) {
    std::vector<std::optional<Row>> rows(jobs.size());
    std::deque<std::size_t> todo;
    if (root()) {
      for (std::size_t i = 0; i < jobs.size(); ++i)
        if (!(rows[i] = lookup(i))) todo.push_back(i);
      restore_metrics(jobs, rows, metrics);
    }
    if (!mpi_) {
      std::vector<std::size_t> busy;
      for (const std::size_t i : todo) {
        Outcome o = execute(jobs, i, false, lookup, runner);
        if (o.busy) busy.push_back(i);
        else deliver(jobs, o, metrics, rows, /*from_root=*/true);
      }
      for (const std::size_t i : busy) deliver(jobs, execute(jobs, i, true, lookup, runner), metrics, rows, true);
    } else {
#if defined(DISTOPT_STUDY_MPI)
      spread(jobs, lookup, runner, metrics, rows, std::move(todo));
#endif
    }
    Message all;
    if (root())
      for (const auto& r : rows) {
        require(r.has_value(), "Work::run: a job has no row");
        all.put(*r);
      }
    world_.broadcast_bytes(all.bytes());
    std::vector<Row> out;
    out.reserve(jobs.size());
    for (std::size_t i = 0; i < jobs.size(); ++i) out.push_back(all.row("row"));
    return out;
  }

 private:
  /// What a group reports about a job: busy (another job holds its lock), or its row with the
  /// run's metrics and, unless the work folder is shared or the group is rank 0's, every file of
  /// its run folder (rank 0 may be on another disk).
  struct Outcome {
    std::size_t job = 0;
    bool busy = false;
    bool trained = false;
    Row row;
    std::string metrics;
    std::vector<std::pair<std::string, std::string>> files;
  };

  [[nodiscard]] static std::filesystem::path lock_file(const Job& job) {
    std::filesystem::path p = job.folder;
    p += ".lock";
    return p;
  }

  /// Job i on this group (collective over it). With a shared folder the group's rank 0 takes the
  /// run's lock first (waiting for it when `wait`) and looks the run up under it: another job may
  /// have finished it since rank 0 looked.
  Outcome execute(const std::vector<Job>& jobs, std::size_t i, bool wait, const Lookup& lookup, const Runner& runner) {
    Outcome o;
    o.job = i;
    const bool leader = group_.rank() == 0;
    std::optional<FileLock> lock;
    enum Decision : std::uint64_t { train, busy, found };
    std::uint64_t decision = train;
    if (leader && options_.shared) {
      lock = wait ? std::optional<FileLock>(FileLock::wait(lock_file(jobs[i]))) : FileLock::try_acquire(lock_file(jobs[i]));
      if (!lock) {
        decision = busy;
      } else if (auto row = lookup(i)) {
        decision = found;
        o.row = std::move(*row);
      }
    }
    share_in_group(&decision, 1);
    o.busy = decision == busy;
    if (decision != train) return o;
    Row row = runner(i, group_);
    if (!leader) return o;
    o.row = std::move(row);
    o.trained = true;
    const std::filesystem::path metrics = jobs[i].folder / "metrics.jsonl";
    o.metrics = io::read_text_if_exists(metrics, "Work").value_or("");
    if (!options_.shared && !root()) o.files = folder_files(jobs[i].folder);
    return o;
  }

  /// The group's first rank's `values` on every rank of the group. The others sleep while they
  /// wait (for a lock, for the coordinator), leaving the cores to the ranks at work.
  void share_in_group([[maybe_unused]] std::uint64_t* values, [[maybe_unused]] int count) {
#if defined(DISTOPT_STUDY_MPI)
    if (!mpi_ || group_.ranks() == 1) return;
    MPI_Request request{};
    MPI_Ibcast(values, count, MPI_UINT64_T, 0, group_comm_, &request);
    local::wait_sleeping(request);
#endif
  }

  /// The records of the runs found finished in the work folder that the stage's metrics file
  /// lacks, appended from each run folder's metrics.jsonl: results deleted or damaged (a stage
  /// run again) are rebuilt whole from the work folder, and a run is never there twice.
  static void restore_metrics(const std::vector<Job>& jobs, const std::vector<std::optional<Row>>& rows,
                              const std::filesystem::path& metrics) {
    std::set<std::string> present;
    std::istringstream in(io::read_text_if_exists(metrics, "Work: the stage's metrics").value_or(""));
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("run") && j["run"].is_string()) present.insert(j["run"].get<std::string>());
    }
    std::string lines;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      if (!rows[i] || present.count(jobs[i].folder.filename().string()) != 0) continue;
      std::string text = io::read_text_if_exists(jobs[i].folder / "metrics.jsonl", "Work: a run's metrics").value_or("");
      if (!text.empty() && text.back() != '\n') text += '\n';
      lines += text;
    }
    if (lines.empty()) return;
    lines.pop_back();
    io::AppendFile out(metrics, false, "Work: the stage's metrics");
    out.append_line(lines);
    out.sync();
  }

  /// Rank 0 keeps the outcome: the row, the metrics appended to the stage's file, and the files of
  /// a folder trained on another group's disk.
  void deliver(const std::vector<Job>& jobs, const Outcome& o, const std::filesystem::path& metrics,
               std::vector<std::optional<Row>>& rows, bool from_root) {
    rows[o.job] = o.row;
    if (!o.trained) return;
    if (!from_root)
      for (const auto& [name, bytes] : o.files) io::write_text(jobs[o.job].folder / name, bytes, "Work: a group's run folder");
    if (!o.metrics.empty()) {
      // The run's lines, whole lines each (its sink appends one line per record), in one write.
      std::string_view lines = o.metrics;
      if (lines.back() == '\n') lines.remove_suffix(1);
      io::AppendFile out(metrics, false, "Work: the stage's metrics");
      out.append_line(lines);
      out.sync();
    }
  }

#if defined(DISTOPT_STUDY_MPI)
  static constexpr int request_tag = 1, assign_tag = 2;

  static Message encode(const Outcome& o) {
    Message m;
    m.put(std::uint64_t{1});
    m.put(static_cast<std::uint64_t>(o.job));
    m.put(static_cast<std::uint64_t>(o.busy) | (static_cast<std::uint64_t>(o.trained) << 1));
    m.put(o.row);
    m.put(o.metrics);
    m.put(static_cast<std::uint64_t>(o.files.size()));
    for (const auto& [name, bytes] : o.files) m.put(name), m.put(bytes);
    return m;
  }
  static std::optional<Outcome> decode(Message& m) {
    if (m.number("kind") == 0) return std::nullopt;
    Outcome o;
    o.job = static_cast<std::size_t>(m.number("job"));
    const std::uint64_t flags = m.number("flags");
    o.busy = (flags & 1) != 0;
    o.trained = (flags & 2) != 0;
    o.row = m.row("row");
    o.metrics = m.text("metrics");
    const std::uint64_t files = m.number("file count");
    for (std::uint64_t f = 0; f < files; ++f) {
      std::string name = m.text("file name");
      o.files.emplace_back(std::move(name), m.text("file"));
    }
    return o;
  }

  /// The work list over the groups: rank 0's coordinator thread answers each group leader's
  /// request (carrying its last outcome) with the next job; the leader broadcasts it to its group.
  void spread(const std::vector<Job>& jobs, const Lookup& lookup, const Runner& runner, const std::filesystem::path& metrics,
              std::vector<std::optional<Row>>& rows, std::deque<std::size_t> todo) {
    // A failure on either side ends the job: the other ranks may be waiting for this one.
    const auto abort_on = [&](const std::exception& e, const char* where) {
      std::fprintf(stderr, "%s on rank %d: error: %s\n", where, world_rank_, e.what());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    };
    std::thread coordinator;
    if (root())
      coordinator = std::thread([&] {
        try {
          coordinate(jobs, metrics, rows, std::move(todo));
        } catch (const std::exception& e) {
          abort_on(e, "work list");
        }
      });
    try {
      take_jobs(jobs, lookup, runner);
    } catch (const std::exception& e) {
      abort_on(e, "a run");
    }
    if (coordinator.joinable()) coordinator.join();
  }

  /// A group's side: ask for a job (reporting the last), run it, until there is none.
  void take_jobs(const std::vector<Job>& jobs, const Lookup& lookup, const Runner& runner) {
    const bool leader = group_.rank() == 0;
    std::optional<Outcome> last;
    for (;;) {
      std::uint64_t assignment[2] = {0, 0};  // job + 1 (0: no more), wait for its lock
      if (leader) {
        Message request = last ? encode(*last) : Message();
        if (!last) request.put(std::uint64_t{0});
        MPI_Request sent{}, received{};
        MPI_Isend(request.bytes().data(), static_cast<int>(request.bytes().size()), MPI_BYTE, 0, request_tag, list_comm_, &sent);
        MPI_Irecv(assignment, 2, MPI_UINT64_T, 0, assign_tag, list_comm_, &received);
        local::wait_sleeping(sent);
        local::wait_sleeping(received);
      }
      share_in_group(assignment, 2);
      if (assignment[0] == 0) break;
      last = execute(jobs, static_cast<std::size_t>(assignment[0] - 1), assignment[1] != 0, lookup, runner);
    }
  }

  /// Rank 0's side of the work list (its own thread): jobs in list order; a job another job holds
  /// goes to the back, to be waited for; groups asking when nothing is left to hand out wait until
  /// every job is done (a busy job may come back).
  void coordinate(const std::vector<Job>& jobs, const std::filesystem::path& metrics, std::vector<std::optional<Row>>& rows,
                  std::deque<std::size_t> todo) {
    std::deque<std::pair<std::size_t, bool>> queue;
    for (const std::size_t i : todo) queue.emplace_back(i, false);
    std::size_t out = 0;
    int released = 0;
    std::vector<int> waiting;
    std::vector<MPI_Request> replies;
    std::deque<std::array<std::uint64_t, 2>> assignments;  // a deque: the buffers of pending sends stay put
    const auto reply = [&](int leader, std::uint64_t job, bool wait) {
      assignments.push_back({job, wait ? 1u : 0u});
      replies.emplace_back();
      MPI_Isend(assignments.back().data(), 2, MPI_UINT64_T, leader, assign_tag, list_comm_, &replies.back());
    };
    while (released < groups()) {
      // Hand out what can be handed out, and release the waiting groups once everything is done.
      while (!waiting.empty() && !queue.empty()) {
        reply(waiting.back(), queue.front().first + 1, queue.front().second);
        waiting.pop_back(), queue.pop_front(), ++out;
      }
      if (queue.empty() && out == 0)
        for (; !waiting.empty(); waiting.pop_back(), ++released) reply(waiting.back(), 0, false);
      if (released == groups()) break;
      int flag = 0;
      MPI_Status status{};
      MPI_Iprobe(MPI_ANY_SOURCE, request_tag, list_comm_, &flag, &status);
      if (flag == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      int count = 0;
      MPI_Get_count(&status, MPI_BYTE, &count);
      Message request(std::vector<std::uint8_t>(static_cast<std::size_t>(count)));
      MPI_Recv(request.bytes().data(), count, MPI_BYTE, status.MPI_SOURCE, request_tag, list_comm_, MPI_STATUS_IGNORE);
      if (auto o = decode(request)) {
        --out;
        require(o->job < jobs.size(), "work message from rank ", status.MPI_SOURCE, ": job ", o->job, " of ", jobs.size());
        if (o->busy) queue.emplace_back(o->job, true);
        else deliver(jobs, *o, metrics, rows, status.MPI_SOURCE == 0);
      }
      waiting.push_back(status.MPI_SOURCE);
    }
    for (auto& r : replies) local::wait_sleeping(r);
  }
#endif

  WorkOptions options_;
  bool mpi_ = false;
  int world_rank_ = 0, world_size_ = 1;
  GroupComm world_, group_;
#if defined(DISTOPT_STUDY_MPI)
  MPI_Comm world_comm_ = MPI_COMM_NULL, list_comm_ = MPI_COMM_NULL, group_comm_ = MPI_COMM_NULL;
#endif
};

}  // namespace distopt::study
