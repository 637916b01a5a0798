// Downloading CIFAR-100: fetch the official archive, check its md5, unpack it safely.
//
//   std::filesystem::path root = distopt::data::download_cifar100("data");  // data/cifar-100-binary
//   distopt::data::Cifar100 cifar = distopt::data::load_cifar100(root);
//
// This header needs libcurl and libarchive, so it is not part of <distopt/distopt.hpp>: link the
// CMake target distopt::download (find_package(distopt COMPONENTS download) in a consumer).
//
// What download_cifar100(folder) does, and what it leaves in `folder`:
//
//   cifar-100-binary/           complete (the four files load_cifar100 reads): nothing to do.
//   cifar-100-binary.tar.gz     an archive already there, put by hand or by an earlier call, is
//                               used instead of the network; it is kept after unpacking, so a
//                               re-unpack needs no network (delete it to save 160 MB).
//   cifar-100-binary.tar.gz.part
//                               a download in progress, locked with flock(2) so that processes
//                               sharing the folder wait for each other. An interrupted download
//                               leaves it and the next call resumes it with an HTTP Range request.
//   .cifar-100-binary.tmp-*     where the archive is unpacked before the folder is renamed into
//                               place, so an interruption never leaves a half-unpacked
//                               cifar-100-binary/; removed on failure.
//
// A download that fails its md5 check, holds entries that may not be unpacked (absolute paths,
// `..`, links, devices) or lacks one of the four files is removed; a file the user put in place
// is never removed, the error says what is wrong with it instead.
#pragma once

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>

#include "distopt/core/io.hpp"
#include "distopt/core/error.hpp"
#include "distopt/data/cifar.hpp"
#include "distopt/data/detail/md5.hpp"
#include "distopt/version.hpp"

namespace distopt::data {

namespace cifar100 {
/// File name of the official archive, and its md5 as published on the CIFAR page.
inline constexpr std::string_view archive_name = "cifar-100-binary.tar.gz";
inline constexpr std::string_view archive_md5 = "03b5dce01913d631647c71ecec9e9cb8";
}  // namespace cifar100

/// What a progress callback is told while the archive downloads. `received` counts the bytes
/// of the archive on disk (those of a resumed partial file included); `total` is the archive's
/// size, 0 while unknown. `first` marks the first call of a request (`received` > 0 then means
/// a resumed download), `last` its end, successful or not. `url` is valid during the call only.
struct DownloadProgress {
  std::string_view url{};
  std::uint64_t received = 0;
  std::uint64_t total = 0;
  bool first = false;
  bool last = false;
};

/// A progress callback; may throw to abandon the download (the partial file is kept).
using DownloadProgressFn = std::function<void(const DownloadProgress&)>;

/// Prints download progress to a stdio stream. `live` (for a terminal) redraws one line with
/// '\r' at most ten times a second; otherwise (a log file, CI) it prints a line per 10% step, so
/// a whole download costs about a dozen lines.
class ProgressPrinter {
 public:
  ProgressPrinter(std::FILE* out, bool live) : out_(out), live_(live) {}

  void operator()(const DownloadProgress& p) {
    if (p.first) {
      std::fputs(message("distopt: ", p.received > 0 ? "resuming" : "downloading", " ", p.url, "\n").c_str(), out_);
      next_step_ = 0;
      printed_ = std::nullopt;
    }
    const std::uint64_t step = p.total > 0 ? std::min<std::uint64_t>(p.received * 10 / p.total, 10) : 0;
    if (live_) {
      const auto now = std::chrono::steady_clock::now();
      if (!p.first && !p.last && now - drawn_ < std::chrono::milliseconds(100)) return;
      drawn_ = now;
      std::fputs(message("\r  ", line(p)).c_str(), out_);
      if (p.last) std::fputs("\n", out_);
    } else if ((p.total > 0 && step >= next_step_) || (p.last && printed_ != p.received)) {
      std::fputs(message("  ", line(p), "\n").c_str(), out_);
      next_step_ = step + 1;
      printed_ = p.received;
    }
    std::fflush(out_);
  }

 private:
  static std::string line(const DownloadProgress& p) {
    std::array<char, 96> text{};
    const double mb = 1e-6;
    if (p.total > 0)
      std::snprintf(text.data(), text.size(), "%.1f of %.1f MB (%d%%)", static_cast<double>(p.received) * mb,
                    static_cast<double>(p.total) * mb,
                    static_cast<int>(std::min<std::uint64_t>(p.received * 100 / p.total, 100)));
    else
      std::snprintf(text.data(), text.size(), "%.1f MB", static_cast<double>(p.received) * mb);
    return text.data();
  }

  std::FILE* out_;
  bool live_;
  std::uint64_t next_step_ = 0;
  std::optional<std::uint64_t> printed_;
  std::chrono::steady_clock::time_point drawn_{};
};

/// The default progress report: a ProgressPrinter on stderr, live when stderr is a terminal.
[[nodiscard]] inline DownloadProgressFn stderr_progress() {
  return ProgressPrinter(stderr, ::isatty(STDERR_FILENO) == 1);
}

/// How download_cifar100 fetches and checks the archive.
struct DownloadOptions {
  /// Where the archive comes from (http, https, ftp or file; redirects are followed).
  std::string url = std::string(cifar100::source_url);
  /// The md5 the archive must have, 32 hexadecimal digits (either case).
  std::string md5 = std::string(cifar100::archive_md5);
  /// Told of the progress at most ten times a second, and at the first and last byte of each
  /// request; nullptr for silence.
  DownloadProgressFn progress = stderr_progress();
  /// Longest wait for a connection to the server.
  std::chrono::seconds connect_timeout{30};
  /// A transfer slower than `low_speed_limit` bytes per second for `low_speed_time` is given
  /// up, so a dead server never hangs the program.
  std::size_t low_speed_limit = 1024;
  std::chrono::seconds low_speed_time{60};
  /// How many times a request that broke off after receiving data is resumed within the same
  /// call. Failures that received nothing (no network, HTTP errors) are reported at once.
  unsigned retries = 3;
};

namespace detail::download {

namespace fs = std::filesystem;

/// The four files of an unpacked cifar-100-binary/.
inline constexpr std::array<std::string_view, 4> required_files{"train.bin", "test.bin", "fine_label_names.txt",
                                                                "coarse_label_names.txt"};

/// The names of `required_files` that are not regular files in `dir`.
[[nodiscard]] inline std::vector<std::string> missing_files(const fs::path& dir) {
  std::vector<std::string> missing;
  std::error_code ec;
  for (const std::string_view name : required_files)
    if (!fs::is_regular_file(dir / name, ec)) missing.emplace_back(name);
  return missing;
}

[[nodiscard]] inline std::string join(const std::vector<std::string>& names, std::string_view prefix = "") {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) out += message(i ? ", " : "", prefix, names[i]);
  return out;
}

/// The paths download_cifar100 works with (see the top of this header).
struct Paths {
  explicit Paths(const fs::path& root)
      : folder(root.empty() ? fs::path(".") : root),
        target(folder / cifar100::folder_name),
        archive(folder / cifar100::archive_name),
        part(fs::path(archive) += ".part") {}
  fs::path folder, target, archive, part;
};

/// The sentence every network error ends with: how to install the data without the network.
[[nodiscard]] inline std::string by_hand(const Paths& paths, std::string_view md5) {
  return message("Without network access, download ", cifar100::source_url, " elsewhere and put it at '",
                 paths.archive.string(), "' (md5 ", md5, "), or its unpacked folder at '", paths.target.string(),
                 "/', then call again.");
}

/// Contents of an archive that may not be unpacked: a downloaded archive is removed for it.
struct BadArchive : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void os_error(std::string_view what, const fs::path& path, int err) {
  fail<std::runtime_error>("download_cifar100: ", what, " '", path.string(), "': ", std::generic_category().message(err));
}

/// Makes renames and new entries in `dir` durable. Best effort: some file systems refuse
/// fsync on a directory, which is no reason to fail a download that is complete.
inline void sync_directory(const fs::path& dir) {
  if (const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

inline void write_all(int fd, const void* data, std::size_t size, std::uint64_t offset, const fs::path& path) {
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ::ssize_t written = ::pwrite(fd, bytes, size, static_cast<::off_t>(offset));
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) os_error("cannot write", path, written == 0 ? EIO : errno);
    bytes += written;
    size -= static_cast<std::size_t>(written);
    offset += static_cast<std::uint64_t>(written);
  }
}

/// The partial download, opened (created if need be) and locked for the lifetime of the object.
/// flock(2) makes a second process wait until the first is done; since the first may have renamed
/// or removed the file meanwhile, `stale()` says the lock is on a file no longer at `path`, and the
/// caller starts over. An empty partial file (nothing was received) is removed on destruction.
class PartFile {
 public:
  explicit PartFile(fs::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd_ < 0) os_error("cannot open", path_, errno);
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd_);
      os_error("cannot lock", path_, err);
    }
    struct ::stat mine {}, named {};
    stale_ = ::fstat(fd_, &mine) != 0 || ::stat(path_.c_str(), &named) != 0 || mine.st_ino != named.st_ino ||
             mine.st_dev != named.st_dev;
  }
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;
  ~PartFile() {
    struct ::stat info {};
    if (!stale_ && ::fstat(fd_, &info) == 0 && info.st_size == 0) ::unlink(path_.c_str());
    ::close(fd_);  // releases the lock
  }

  [[nodiscard]] bool stale() const { return stale_; }
  [[nodiscard]] int fd() const { return fd_; }
  [[nodiscard]] const fs::path& path() const { return path_; }
  [[nodiscard]] std::uint64_t size() const {
    struct ::stat info {};
    if (::fstat(fd_, &info) != 0) os_error("cannot stat", path_, errno);
    return static_cast<std::uint64_t>(info.st_size);
  }

  /// Deletes the file (a failed md5 check).
  void remove() {
    ::unlink(path_.c_str());
    stale_ = true;
  }

  /// Flushes the file and renames it to `target`, durably.
  void commit(const fs::path& target) {
    if (::fsync(fd_) != 0) os_error("cannot flush", path_, errno);
    std::error_code ec;
    fs::rename(path_, target, ec);
    if (ec) os_error(message("cannot rename to '", target.string(), "' the file"), path_, ec.value());
    stale_ = true;
    sync_directory(target.parent_path());
  }

 private:
  fs::path path_;
  int fd_ = -1;
  bool stale_ = false;
};

/// curl_global_init once per process (C++ makes the static's initialisation thread-safe).
inline void init_curl() {
  struct Global {
    Global() : code(curl_global_init(CURL_GLOBAL_DEFAULT)) {}
    Global(const Global&) = delete;
    Global& operator=(const Global&) = delete;
    ~Global() {
      if (code == CURLE_OK) curl_global_cleanup();
    }
    CURLcode code;
  };
  static const Global global;
  if (global.code != CURLE_OK)
    fail<std::runtime_error>("download_cifar100: curl_global_init failed: ", curl_easy_strerror(global.code));
}

/// One HTTP request's state, shared with libcurl's callbacks. Exceptions never cross libcurl (C
/// code): a callback stores them in `error` and makes libcurl abort, and the caller rethrows.
struct Transfer {
  CURL* curl = nullptr;
  int fd = -1;
  fs::path file{};
  std::string_view url{};
  const DownloadProgressFn* progress = nullptr;
  std::uint64_t resume_from = 0;  // size of the partial file when the request was made
  std::uint64_t start = 0;        // where the body goes: resume_from, or 0 if the server sent it all
  std::uint64_t written = 0;      // body bytes written by this request
  std::uint64_t total = 0;        // size of the whole archive once known, else 0
  long status = 0;                // of the last status line (a redirect or proxy sends several)
  std::optional<std::uint64_t> range_start{};  // from its Content-Range header
  bool prepared = false;
  std::exception_ptr error{};
  std::chrono::steady_clock::time_point reported{};

  // Called at the first byte of the body (or at the end of a request without one), when the
  // status of the response that counts is known.
  void prepare() {
    prepared = true;
    if (resume_from > 0 && status == 200) {
      // The server ignored the Range header and sends the whole file: start over rather than
      // append the archive to its own beginning. (libcurl itself refuses such an answer when it
      // has no Content-Range header; fetch starts over then.)
      if (::ftruncate(fd, 0) != 0) os_error("cannot truncate", file, errno);
      start = 0;
    } else {
      if (status == 206 && range_start && *range_start != resume_from)
        fail<std::runtime_error>("download_cifar100: '", url, "' answered a request for the bytes from ", resume_from,
                                 " with bytes from ", *range_start);
      start = resume_from;
    }
    curl_off_t length = -1;
    if (curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) == CURLE_OK && length >= 0)
      total = start + static_cast<std::uint64_t>(length);
    report(true, false);
  }

  void report(bool first, bool last) {
    if (progress == nullptr || !*progress) return;
    const auto now = std::chrono::steady_clock::now();
    if (!first && !last && now - reported < std::chrono::milliseconds(100)) return;
    reported = now;
    (*progress)(DownloadProgress{.url = url, .received = start + written, .total = total, .first = first, .last = last});
  }
};

inline std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  const std::string_view line(data, size * count);
  const auto number_after = [&](std::string_view text, std::size_t at) -> std::optional<std::uint64_t> {
    while (at < text.size() && text[at] == ' ') ++at;
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data() + at, text.data() + text.size(), value);
    if (ec != std::errc() || end == text.data() + at) return std::nullopt;
    return value;
  };
  const auto starts_with_nocase = [&](std::string_view prefix) {
    return line.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), line.begin(), [](char a, char b) {
             return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
           });
  };
  if (line.starts_with("HTTP/")) {
    const std::size_t space = line.find(' ');
    const auto code = space == std::string_view::npos ? std::nullopt : number_after(line, space);
    t.status = code ? static_cast<long>(*code) : 0;
    t.range_start.reset();
  } else if (starts_with_nocase("content-range:")) {
    // "Content-Range: bytes 100-999/1000"
    const std::size_t unit = line.find("bytes");
    if (unit != std::string_view::npos) t.range_start = number_after(line, unit + 5);
  }
  return size * count;
}

inline std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  try {
    if (!t.prepared) t.prepare();
    write_all(t.fd, data, size * count, t.start + t.written, t.file);
    t.written += size * count;
    return size * count;
  } catch (...) {
    t.error = std::current_exception();
    return 0;  // any count but the one given makes libcurl abort
  }
}

inline int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto& t = *static_cast<Transfer*>(user);
  try {
    if (t.prepared) t.report(false, false);
    return 0;
  } catch (...) {
    t.error = std::current_exception();
    return 1;
  }
}

/// Downloads `options.url` into `part`, resuming from its current size; returns when the
/// request has succeeded (the md5 check comes after), throws std::runtime_error otherwise.
inline void fetch(PartFile& part, const Paths& paths, const DownloadOptions& options) {
  init_curl();
  const std::unique_ptr<CURL, void (*)(CURL*)> handle(curl_easy_init(), curl_easy_cleanup);
  if (!handle) fail<std::runtime_error>("download_cifar100: curl_easy_init failed");
  CURL* curl = handle.get();
  const std::string user_agent = message("distopt/", version.major, ".", version.minor, ".", version.patch);
  unsigned retried = 0;
  bool restarted = false;
  for (;;) {
    Transfer t{.curl = curl, .fd = part.fd(), .file = part.path(), .url = options.url, .progress = &options.progress};
    t.resume_from = part.size();
    std::array<char, CURL_ERROR_SIZE> error_text{};
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, options.url.c_str());
    curl_easy_setopt(curl, CURLOPT_USERAGENT, user_agent.c_str());
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM: other threads may be running
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, static_cast<long>(options.connect_timeout.count()));
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, static_cast<long>(options.low_speed_limit));
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options.low_speed_time.count()));
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_text.data());
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, &on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    if (t.resume_from > 0) curl_easy_setopt(curl, CURLOPT_RESUME_FROM_LARGE, static_cast<curl_off_t>(t.resume_from));

    const CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (t.prepared && !t.error) t.report(false, true);
    if (t.error) std::rethrow_exception(t.error);
    // Success, or an answer without a body to a resume request (a 416 for a range that starts at
    // the end, or a 200 as long as the partial file): the partial file may then be the whole
    // archive, kept by a process stopped before its md5 check. The md5 check that follows decides.
    if (code == CURLE_OK) return;
    if (code == CURLE_HTTP_RETURNED_ERROR && status == 416 && t.resume_from > 0) return;
    // libcurl refuses a whole file sent in answer to a range request: start over, once.
    if (code == CURLE_RANGE_ERROR && t.resume_from > 0 && !restarted) {
      if (::ftruncate(part.fd(), 0) != 0) os_error("cannot truncate", part.path(), errno);
      restarted = true;
      continue;
    }
    if (t.written > 0 && retried < options.retries) {
      ++retried;
      continue;
    }

    const std::uint64_t kept = part.size();
    fail<std::runtime_error>(
        "download_cifar100: cannot download '", options.url, "': ", curl_easy_strerror(code),
        error_text[0] != '\0' ? message(" (", error_text.data(), ")") : std::string(),
        status >= 400 ? message(", HTTP status ", status) : std::string(), ". ",
        kept > 0 ? message("The ", kept, " bytes received are kept in '", part.path().string(),
                           "'; the next call resumes from there. ")
                 : std::string(),
        by_hand(paths, options.md5));
  }
}

/// A fresh folder `.cifar-100-binary.tmp-<pid>-<random>` inside `parent`, removed with all it
/// holds on destruction.
class TempFolder {
 public:
  explicit TempFolder(const fs::path& parent) {
    std::random_device entropy;
    for (int attempt = 0;; ++attempt) {
      path_ = parent / message(".", cifar100::folder_name, ".tmp-", ::getpid(), "-",
                               io::hex(entropy(), 8));
      if (::mkdir(path_.c_str(), 0777) == 0) return;
      if (errno != EEXIST || attempt == 16) os_error("cannot create the folder", path_, errno);
    }
  }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  ~TempFolder() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// The path of an archive entry below the unpack folder; BadArchive for one that would land
/// outside it (absolute, or with a `..` component). Empty for the folder itself ("./").
[[nodiscard]] inline fs::path entry_path(const char* name, const fs::path& archive) {
  const auto refuse = [&](std::string_view why) {
    throw BadArchive(message("download_cifar100: refusing to unpack '", archive.string(), "': entry '",
                             io::printable(name ? name : ""), "' ", why,
                             " (only files and folders inside the archive's own folder are unpacked)"));
  };
  if (name == nullptr || *name == '\0') refuse("has no name");
  const std::string_view text(name);
  if (text.front() == '/') refuse("is an absolute path");
  fs::path relative;
  for (std::size_t begin = 0; begin <= text.size();) {
    std::size_t end = text.find('/', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view part = text.substr(begin, end - begin);
    if (part == "..") refuse("has a '..' component");
    if (!part.empty() && part != ".") relative /= part;
    begin = end + 1;
  }
  return relative;
}

[[nodiscard]] inline std::string_view entry_kind(unsigned type) {
  switch (type) {
    case AE_IFLNK: return "is a symbolic link";
    case AE_IFCHR: return "is a character device";
    case AE_IFBLK: return "is a block device";
    case AE_IFIFO: return "is a FIFO";
    case AE_IFSOCK: return "is a socket";
    default: return "has an unknown file type";
  }
}

/// Unpacks the .tar.gz `archive` into the existing folder `into`, refusing (BadArchive) absolute
/// paths, `..`, links and special files before anything of them reaches the disk.
inline void extract(const fs::path& archive, const fs::path& into) {
  const std::unique_ptr<struct archive, int (*)(struct archive*)> reader(archive_read_new(), archive_read_free);
  if (!reader) fail<std::runtime_error>("download_cifar100: archive_read_new failed");
  struct archive* a = reader.get();
  archive_read_support_filter_gzip(a);
  archive_read_support_format_tar(a);
  const auto where = [&] { return message("download_cifar100: cannot unpack '", archive.string(), "'"); };
  // The file was just checked by its md5, so a failure here is about its contents, not the disk.
  if (archive_read_open_filename(a, archive.c_str(), std::size_t{1} << 16) != ARCHIVE_OK)
    throw BadArchive(message(where(), ": ", archive_error_string(a)));
  for (;;) {
    struct archive_entry* entry = nullptr;
    const int status = archive_read_next_header(a, &entry);
    if (status == ARCHIVE_EOF) break;
    if (status < ARCHIVE_WARN) throw BadArchive(message(where(), ": ", archive_error_string(a)));
    const char* name = archive_entry_pathname(entry);
    const fs::path relative = entry_path(name, archive);
    if (const char* link = archive_entry_hardlink(entry))
      throw BadArchive(message("download_cifar100: refusing to unpack '", archive.string(), "': entry '",
                               io::printable(name), "' is a hard link to '",
                               io::printable(link),
                               "' (only files and folders inside the archive's own folder are unpacked)"));
    const unsigned type = archive_entry_filetype(entry);
    if (type == AE_IFDIR) {
      fs::create_directories(into / relative);
      continue;
    }
    if (type != AE_IFREG)
      throw BadArchive(message("download_cifar100: refusing to unpack '", archive.string(), "': entry '",
                               io::printable(name), "' ", entry_kind(type),
                               " (only files and folders inside the archive's own folder are unpacked)"));
    if (relative.empty()) throw BadArchive(message(where(), ": a file entry has the name '", name, "'"));

    const fs::path out = into / relative;
    fs::create_directories(out.parent_path());
    // O_NOFOLLOW: no link can exist in a folder we create, but never write through one anyway.
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) os_error("cannot create", out, errno);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    for (;;) {
      const void* block = nullptr;
      std::size_t size = 0;
      la_int64_t offset = 0;
      const int got = archive_read_data_block(a, &block, &size, &offset);
      if (got == ARCHIVE_EOF) break;
      if (got < ARCHIVE_WARN)
        throw BadArchive(message(where(), ": entry '", io::printable(name), "': ",
                                 archive_error_string(a)));
      write_all(fd, block, size, static_cast<std::uint64_t>(offset), out);
    }
    // Sparse entries may end in a hole that no block wrote.
    if (archive_entry_size_is_set(entry) && ::ftruncate(fd, static_cast<::off_t>(archive_entry_size(entry))) != 0)
      os_error("cannot set the size of", out, errno);
    if (::fsync(fd) != 0) os_error("cannot flush", out, errno);
  }
}

/// Unpacks paths.archive next to the target and renames its cifar-100-binary/ into place.
inline void unpack(const Paths& paths) {
  const TempFolder temp(paths.folder);
  extract(paths.archive, temp.path());
  const fs::path unpacked = temp.path() / cifar100::folder_name;
  if (const auto missing = missing_files(unpacked); !missing.empty())
    throw BadArchive(message("download_cifar100: '", paths.archive.string(), "' does not contain ",
                             join(missing, message(cifar100::folder_name, "/")),
                             ": it is not the CIFAR-100 binary archive"));
  sync_directory(unpacked);
  std::error_code ec;
  fs::rename(unpacked, paths.target, ec);
  // Another process may have unpacked the same archive first: its folder is as good as ours.
  if (ec && !(fs::is_directory(paths.target) && missing_files(paths.target).empty()))
    os_error(message("cannot rename '", unpacked.string(), "' to"), paths.target, ec.value());
  sync_directory(paths.folder);
}

[[nodiscard]] inline std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

inline void check(const DownloadOptions& options) {
  require(!options.url.empty(), "DownloadOptions::url is empty");
  require(options.md5.size() == 32 && std::all_of(options.md5.begin(), options.md5.end(),
                                                  [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }),
          "DownloadOptions::md5 '", options.md5, "' is not 32 hexadecimal digits");
  require(options.connect_timeout.count() > 0, "DownloadOptions::connect_timeout must be positive, got ",
          options.connect_timeout.count(), " s");
  require(options.low_speed_time.count() > 0, "DownloadOptions::low_speed_time must be positive, got ",
          options.low_speed_time.count(), " s");
  require(options.low_speed_limit > 0, "DownloadOptions::low_speed_limit must be positive");
}

}  // namespace detail::download

/// Makes sure `folder`/cifar-100-binary/ holds CIFAR-100 and returns that path, for
/// load_cifar100. Downloads the archive unless it is already unpacked or `folder`/
/// cifar-100-binary.tar.gz is there (see the top of this header for the files involved),
/// checks its md5, and unpacks it into a temporary folder renamed into place.
/// Throws std::invalid_argument for bad options, and std::runtime_error when the download
/// fails (with curl's error, the URL and the HTTP status, and where to put the archive by
/// hand), the md5 differs (naming the file and both digests), the archive holds entries it may
/// not unpack or lacks a file (naming them), or the disk refuses a write.
inline std::filesystem::path download_cifar100(const std::filesystem::path& folder,
                                               const DownloadOptions& options = {}) {
  namespace fs = std::filesystem;
  using namespace detail::download;
  check(options);
  const Paths paths(folder);
  const std::string expected = lowercase(options.md5);
  for (;;) {  // runs again only when another process changed the files while this one waited
    if (fs::is_directory(paths.target)) {
      const auto missing = missing_files(paths.target);
      if (missing.empty()) return paths.target;
      fail<std::runtime_error>("download_cifar100: '", paths.target.string(), "' exists but lacks ", join(missing),
                               "; complete it, or remove it to have it unpacked again");
    }
    fs::create_directories(paths.folder);
    bool downloaded = false;
    if (!fs::exists(paths.archive)) {
      PartFile part(paths.part);
      if (part.stale() || fs::exists(paths.archive) || fs::is_directory(paths.target)) continue;
      fetch(part, paths, options);
      if (const std::string actual = data::detail::md5_file(part.path()); actual != expected) {
        part.remove();
        fail<std::runtime_error>("download_cifar100: md5 mismatch for '", part.path().string(), "' downloaded from '",
                                 options.url, "': expected ", expected, ", got ", actual,
                                 ". The file was removed; the next call downloads it again. ",
                                 by_hand(paths, expected));
      }
      part.commit(paths.archive);
      downloaded = true;
    } else if (const std::string actual = data::detail::md5_file(paths.archive); actual != expected) {
      fail<std::runtime_error>("download_cifar100: md5 mismatch for '", paths.archive.string(), "': expected ",
                               expected, ", got ", actual,
                               ". It is not the CIFAR-100 binary archive, or it is damaged: replace it, or remove "
                               "it to have it downloaded");
    }
    try {
      unpack(paths);
    } catch (const BadArchive& bad) {
      if (!downloaded)
        fail<std::runtime_error>(bad.what(), "; '", paths.archive.string(),
                                 "' was left in place: replace it, or remove it to have it downloaded");
      std::error_code ec;
      fs::remove(paths.archive, ec);
      fail<std::runtime_error>(bad.what(), "; the downloaded archive was removed");
    }
    return paths.target;
  }
}

}  // namespace distopt::data
