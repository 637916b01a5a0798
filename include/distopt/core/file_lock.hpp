// Locks that die with their holder, and the leftovers of writers that died.
//
// A folder one process writes (a training run's checkpoints, say) is claimed with a FileLock on a
// file inside it. The lock is an open-file-description lock (fcntl F_OFD_SETLK): the kernel drops
// it when the holder exits, however it exits, so a killed run never leaves a stale lock, and NFS
// clients pass it on to the server. The holder writes its host and PID into the lock file, so a
// process that is refused can name who holds the folder.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/core/io.hpp"

namespace distopt::io {

/// An exclusive lock on `file` (created if missing), held while the object lives. Locks of two
/// FileLock objects on one file exclude each other even inside one process (they are per open
/// file description, not per process).
class FileLock {
 public:
  /// The lock, or nothing when another holds it.
  [[nodiscard]] static std::optional<FileLock> try_acquire(const std::filesystem::path& file) { return acquire(file, false); }
  /// The lock, waiting for its holder to release it.
  [[nodiscard]] static FileLock wait(const std::filesystem::path& file) { return std::move(*acquire(file, true)); }

  /// Who holds (or last held) the lock on `file`, as its holder wrote it: "host <name>, PID <n>";
  /// empty when the file says nothing (a holder between taking the lock and writing its name).
  [[nodiscard]] static std::string holder(const std::filesystem::path& file) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    return line;
  }

  FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)), file_(std::move(other.file_)) {}
  FileLock& operator=(FileLock&& other) noexcept {
    std::swap(fd_, other.fd_);
    std::swap(file_, other.file_);
    return *this;
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }

  [[nodiscard]] const std::filesystem::path& file() const noexcept { return file_; }

 private:
  FileLock(int fd, std::filesystem::path file) : fd_(fd), file_(std::move(file)) {}

  static std::optional<FileLock> acquire(const std::filesystem::path& file, bool block) {
    create_parent(file, "FileLock");
    const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) fail<std::runtime_error>("FileLock: cannot open '", file.string(), "': ", std::generic_category().message(errno));
    FileLock lock(fd, file);
    struct flock range {};
    range.l_type = F_WRLCK;
    range.l_whence = SEEK_SET;
    while (::fcntl(fd, block ? F_OFD_SETLKW : F_OFD_SETLK, &range) != 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (!block && (err == EAGAIN || err == EACCES)) return std::nullopt;
      fail<std::runtime_error>("FileLock: cannot lock '", file.string(), "': ", std::generic_category().message(err));
    }
    // Best effort: the name only helps a refused process say who holds the lock.
    char host[256] = {};
    (void)::gethostname(host, sizeof host - 1);
    const std::string who = message("host ", host, ", PID ", ::getpid(), "\n");
    if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, who.data(), who.size(), 0);
    return lock;
  }

  int fd_ = -1;
  std::filesystem::path file_;
};

/// The PID in the name of an AtomicFile's temporary file (`<target>.tmp-<pid>-<hex>`), if the name
/// is one.
[[nodiscard]] inline std::optional<::pid_t> temporary_file_pid(const std::string& name) {
  const auto at = name.rfind(".tmp-");
  if (at == std::string::npos) return std::nullopt;
  const auto dash = name.find('-', at + 5);
  if (dash == std::string::npos || dash == at + 5) return std::nullopt;
  std::int64_t pid = 0;
  for (std::size_t i = at + 5; i < dash; ++i) {
    if (name[i] < '0' || name[i] > '9' || pid > 1'000'000'000) return std::nullopt;
    pid = pid * 10 + (name[i] - '0');
  }
  return static_cast<::pid_t>(pid);
}

/// Removes the temporary files AtomicFile writers left in `folder` when they died mid-write: those
/// whose PID is no longer a process on this host, or all of them with `all` (a caller holding the
/// folder's lock knows no writer of its own is at work). Returns the names removed.
inline std::vector<std::string> remove_dead_temporaries(const std::filesystem::path& folder, bool all = false) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    const auto pid = temporary_file_pid(name);
    if (!pid) continue;
    const bool gone = *pid <= 0 || (::kill(*pid, 0) != 0 && errno == ESRCH);
    if (!all && !gone) continue;
    std::error_code remove_error;
    if (std::filesystem::remove(entry.path(), remove_error)) removed.push_back(name);
  }
  return removed;
}

}  // namespace distopt::io
