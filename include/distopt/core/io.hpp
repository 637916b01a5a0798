// Files: written whole or not at all, read whole, appended to line by line; and the text forms of
// results (CSV, numbers as tables print them). Every writer of the library goes through here, so
// a crash never leaves a half-written checkpoint, cache, table or stamp, and every error names
// the path and the operating system's reason.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "distopt/core/error.hpp"

namespace distopt::io {

/// `value` as `digits` lowercase hexadecimal digits, zero-padded.
[[nodiscard]] inline std::string hex(std::uint64_t value, std::size_t digits) {
  constexpr std::string_view alphabet = "0123456789abcdef";
  std::string out(digits, '0');
  for (std::size_t i = 0; i < digits && i < 16; ++i) out[digits - 1 - i] = alphabet[(value >> (4 * i)) & 0xFu];
  return out;
}

/// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past
/// U+10FFFF).
[[nodiscard]] constexpr bool valid_utf8(std::string_view text) noexcept {
  constexpr std::array<std::uint32_t, 5> smallest{0, 0, 0x80, 0x800, 0x10000};
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = 1;
    std::uint32_t code = lead;
    if (lead >= 0x80) {
      if ((lead & 0xE0u) == 0xC0u) {
        length = 2;
        code = lead & 0x1Fu;
      } else if ((lead & 0xF0u) == 0xE0u) {
        length = 3;
        code = lead & 0x0Fu;
      } else if ((lead & 0xF8u) == 0xF0u) {
        length = 4;
        code = lead & 0x07u;
      } else {
        return false;
      }
      if (i + length > text.size()) return false;
      for (std::size_t k = 1; k < length; ++k) {
        const auto next = static_cast<unsigned char>(text[i + k]);
        if ((next & 0xC0u) != 0x80u) return false;
        code = (code << 6) | (next & 0x3Fu);
      }
      if (code < smallest[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    }
    i += length;
  }
  return true;
}

/// `text` as it can appear inside a message: control bytes (and, in malformed UTF-8, every
/// non-ASCII byte) written as \xNN, so a NUL or an escape sequence from a file cannot garble it.
[[nodiscard]] inline std::string printable(std::string_view text) {
  const bool utf8 = valid_utf8(text);
  std::string out;
  for (const char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte < 0x20 || byte == 0x7F || (byte >= 0x80 && !utf8)) {
      out += "\\x";
      out += hex(byte, 2);
    } else {
      out += ch;
    }
  }
  return out;
}

[[nodiscard]] inline std::span<const std::uint8_t> as_bytes(std::string_view text) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

/// Fault injection for tests: when set, called before every write of an AtomicFile with the path
/// being written, so a test can kill the process mid-write and check that the previous file
/// survives. Null (and never touched) outside tests.
inline void (*write_fault_hook)(const std::filesystem::path& target) = nullptr;

/// Writes a file under a temporary name in the same directory and renames it over the target only
/// once every byte is on disk (fsync), then syncs the directory: a crash or error at any point
/// leaves the old file (or none), never a partial one. The temporary name is unique (process id
/// and 64 random bits, created with O_EXCL), so two writers of one path never share it.
/// Destroying it before `commit` removes the temporary file. Errors are std::runtime_error
/// naming `context`, the target, the temporary file and the OS error.
class AtomicFile {
 public:
  AtomicFile(const std::filesystem::path& target, std::string_view context) : target_(target), context_(context) {
    std::random_device entropy;
    for (int attempt = 0;; ++attempt) {
      const std::uint64_t tag = (std::uint64_t{entropy()} << 32) ^ entropy();
      temp_ = target_;
      temp_ += message(".tmp-", ::getpid(), "-", hex(tag, 16));
      fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0) return;
      const int err = errno;
      if (err != EEXIST || attempt == 16)
        fail<std::runtime_error>(context_, ": cannot create temporary file '", temp_.string(), "' to write '",
                                 target_.string(), "': ", std::generic_category().message(err));
    }
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());
  }

  void write(std::span<const std::uint8_t> bytes) {
    if (write_fault_hook != nullptr) write_fault_hook(target_);
    while (!bytes.empty()) {
      const ::ssize_t written = ::write(fd_, bytes.data(), std::min<std::size_t>(bytes.size(), std::size_t{1} << 30));
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) os_error("cannot write", written == 0 ? EIO : errno);
      bytes = bytes.subspan(static_cast<std::size_t>(written));
    }
  }
  void write(std::string_view text) { write(as_bytes(text)); }

  void commit() {
    if (::fsync(fd_) != 0) os_error("cannot flush", errno);
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) os_error("cannot close", errno);
    std::error_code ec;
    std::filesystem::rename(temp_, target_, ec);
    if (ec) os_error("cannot rename the temporary file over", ec.value());
    committed_ = true;
    sync_directory(target_.has_parent_path() ? target_.parent_path() : std::filesystem::path("."));
  }

  /// Makes a rename inside `folder` durable. Best effort: the new entry is already in place, and
  /// some file systems refuse fsync on a directory, which is no reason to report a save as failed.
  static void sync_directory(const std::filesystem::path& folder) {
    if (const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
      (void)::fsync(dir);
      ::close(dir);
    }
  }

 private:
  [[noreturn]] void os_error(std::string_view what, int err) const {
    fail<std::runtime_error>(context_, ": ", what, " '", target_.string(), "' (temporary file '", temp_.string(),
                             "'): ", std::generic_category().message(err));
  }

  std::filesystem::path target_, temp_;
  std::string context_;
  int fd_ = -1;
  bool committed_ = false;
};

/// Creates the folders above `file` (std::runtime_error naming them if that fails).
inline void create_parent(const std::filesystem::path& file, std::string_view context) {
  if (!file.has_parent_path()) return;
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  require<std::runtime_error>(!ec, context, ": cannot create '", file.parent_path().string(), "': ", ec.message());
}

/// Writes `bytes` to `file` atomically (AtomicFile), creating its folder.
inline void write_file(const std::filesystem::path& file, std::span<const std::uint8_t> bytes,
                       std::string_view context = "write_file") {
  create_parent(file, context);
  AtomicFile out(file, context);
  out.write(bytes);
  out.commit();
}

/// Writes `text` to `file` atomically (AtomicFile), creating its folder.
inline void write_text(const std::filesystem::path& file, std::string_view text, std::string_view context = "write_text") {
  write_file(file, as_bytes(text), context);
}

/// The whole of a regular file; std::runtime_error naming `context`, the path and the OS error.
[[nodiscard]] inline std::vector<std::uint8_t> read_file(const std::filesystem::path& path,
                                                         std::string_view context = "read_file") {
  const auto os_error = [&](std::string_view what, int err) {
    fail<std::runtime_error>(context, ": ", what, " '", path.string(), "': ", std::generic_category().message(err));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) os_error("cannot open", errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct ::stat info {};
  if (::fstat(fd, &info) != 0) os_error("cannot stat", errno);
  if (!S_ISREG(info.st_mode)) os_error("cannot read", EISDIR);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(info.st_size));
  std::size_t filled = 0;
  while (filled < bytes.size()) {
    const ::ssize_t got = ::read(fd, bytes.data() + filled, bytes.size() - filled);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) os_error("cannot read", errno);
    if (got == 0) break;  // the file shrank since fstat: what is there
    filled += static_cast<std::size_t>(got);
  }
  bytes.resize(filled);
  return bytes;
}

/// The whole of a text file (read_file's errors).
[[nodiscard]] inline std::string read_text(const std::filesystem::path& path, std::string_view context = "read_text") {
  const auto bytes = read_file(path, context);
  return {bytes.begin(), bytes.end()};
}

/// The text of `path`, or nothing when there is no such file; other failures throw as read_file.
[[nodiscard]] inline std::optional<std::string> read_text_if_exists(const std::filesystem::path& path,
                                                                    std::string_view context = "read_text") {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  return read_text(path, context);
}

/// A log file appended to one whole line at a time (one write(2) per line with O_APPEND, so lines
/// of concurrent writers never interleave within a line); `sync` makes what was written durable.
/// A crash loses at most lines not yet synced, never the lines before them.
class AppendFile {
 public:
  AppendFile(const std::filesystem::path& file, bool truncate, std::string_view context) : path_(file), context_(context) {
    create_parent(file, context);
    fd_ = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0666);
    if (fd_ < 0) os_error("cannot open", errno);
  }
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  ~AppendFile() {
    if (fd_ >= 0) ::close(fd_);
  }

  /// Appends `line` and a line break.
  void append_line(std::string_view line) {
    std::string whole;
    whole.reserve(line.size() + 1);
    whole.append(line).push_back('\n');
    std::span<const std::uint8_t> bytes = as_bytes(whole);
    while (!bytes.empty()) {
      const ::ssize_t written = ::write(fd_, bytes.data(), bytes.size());
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) os_error("cannot append to", written == 0 ? EIO : errno);
      bytes = bytes.subspan(static_cast<std::size_t>(written));
    }
  }
  void sync() {
    if (::fsync(fd_) != 0) os_error("cannot flush", errno);
  }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  [[noreturn]] void os_error(std::string_view what, int err) const {
    fail<std::runtime_error>(context_, ": ", what, " '", path_.string(), "': ", std::generic_category().message(err));
  }
  std::filesystem::path path_;
  std::string context_;
  int fd_ = -1;
};

/// Replaces the folder `target` by the complete folder `staging` (a sibling of it): the old one is
/// moved aside first and removed last, so a crash leaves the previous folder or the new one, never
/// a mixture. std::runtime_error naming both when a rename fails (the previous folder is then put
/// back).
inline void replace_directory(const std::filesystem::path& staging, const std::filesystem::path& target,
                              std::string_view context) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path old;
  if (fs::exists(target)) {
    std::random_device entropy;
    old = target.parent_path() / message(".", target.filename().string(), ".old-", ::getpid(), "-", hex(entropy(), 8));
    fs::rename(target, old, ec);
    require<std::runtime_error>(!ec, context, ": cannot move the previous '", target.string(), "' aside: ", ec.message());
  }
  fs::rename(staging, target, ec);
  if (ec) {
    std::error_code ignored;
    if (!old.empty()) fs::rename(old, target, ignored);
    fail<std::runtime_error>(context, ": cannot rename '", staging.string(), "' to '", target.string(), "': ", ec.message());
  }
  AtomicFile::sync_directory(target.parent_path());
  if (!old.empty()) fs::remove_all(old, ec);
}

// --- CSV (RFC 4180) --------------------------------------------------------------------------

/// `field` as a CSV field: quoted, with quotes doubled, when it holds a comma, quote or line break.
[[nodiscard]] inline std::string csv_field(const std::string& field) {
  if (field.find_first_of(",\"\n\r") == std::string::npos) return field;
  std::string out = "\"";
  for (const char ch : field) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

/// The text of a CSV file: `header`, then every row (each as long as the header, or
/// std::invalid_argument naming `file` and the row).
[[nodiscard]] inline std::string csv_text(const std::filesystem::path& file, const std::vector<std::string>& header,
                                          const std::vector<std::vector<std::string>>& rows) {
  std::string text;
  const auto line = [&](const std::vector<std::string>& fields) {
    for (std::size_t i = 0; i < fields.size(); ++i) {
      if (i > 0) text += ',';
      text += csv_field(fields[i]);
    }
    text += '\n';
  };
  line(header);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    require(rows[r].size() == header.size(), "write_csv '", file.string(), "': row ", r + 1, " has ", rows[r].size(),
            " fields, the header ", header.size());
    line(rows[r]);
  }
  return text;
}

/// Writes a CSV file with a header row, atomically.
inline void write_csv(const std::filesystem::path& file, const std::vector<std::string>& header,
                      const std::vector<std::vector<std::string>>& rows) {
  write_text(file, csv_text(file, header, rows), "write_csv");
}

/// The records of an RFC 4180 CSV text: quoted fields may hold commas, doubled quotes and line
/// breaks; CR before LF is dropped.
[[nodiscard]] inline std::vector<std::vector<std::string>> parse_csv(std::string_view text) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> fields;
  std::string field;
  bool quoted = false, any = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    any = true;
    if (quoted) {
      if (c != '"') field += c;
      else if (i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
      else quoted = false;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.push_back(std::move(field));
      field.clear();
    } else if (c == '\n') {
      fields.push_back(std::move(field));
      field.clear();
      records.push_back(std::move(fields));
      fields.clear();
      any = false;
    } else if (c != '\r') {
      field += c;
    }
  }
  if (any) {
    fields.push_back(std::move(field));
    records.push_back(std::move(fields));
  }
  return records;
}

// --- numbers as text ------------------------------------------------------------------------

/// `v` with up to `digits` significant digits, as printf's %g writes it ("nan" for NaN): how
/// numbers go into CSV cells, tables and stamps.
[[nodiscard]] inline std::string format_number(double v, int digits = 6) {
  if (std::isnan(v)) return "nan";
  std::array<char, 64> buffer{};
  const auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), v, std::chars_format::general, digits);
  require<std::logic_error>(ec == std::errc(), "format_number: ", digits, " digits do not fit");
  return std::string(buffer.data(), end);
}

}  // namespace distopt::io
