#include "distopt/data/download.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../support/files.hpp"

using distopt::message;
using distopt::data::DownloadOptions;
using distopt::data::DownloadProgress;
using distopt::data::LabelledImages;
using distopt::data::download_cifar100;
using distopt::data::detail::Md5;
using distopt::data::detail::md5_file;
using distopt::data::detail::md5_hex;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

using test_support::Bytes;
using test_support::read_bytes;
using test_support::write_bytes;
using TempDir = test_support::TempDir;

std::span<const std::uint8_t> bytes_of(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// The names of the entries of `dir`, sorted.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> lines_of(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The message of the std::runtime_error `f` throws; fails the test if it throws nothing.
template <class F>
std::string runtime_error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  FAIL("no std::runtime_error was thrown");
  return {};
}

// A port on 127.0.0.1 nobody listens on: bound by the kernel's choice, then released.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof address;
  const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                     ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0;
  ::close(fd);
  REQUIRE(bound);
  return ntohs(address.sin_port);
}

// tests/datasets/range_http_server.py serving `folder`, logging each request to `log`. The
// child reads its stdin until end of file, so it also exits if this process dies; the
// destructor kills it, so a failed REQUIRE never leaves it running.
class HttpServer {
 public:
  HttpServer(const fs::path& folder, const fs::path& log) : log_(log) {
    std::array<int, 2> to_child{-1, -1}, from_child{-1, -1};
    REQUIRE(::pipe2(to_child.data(), O_CLOEXEC) == 0);
    child_.stdin_fd = to_child[1];
    REQUIRE(::pipe2(from_child.data(), O_CLOEXEC) == 0);
    child_.stdout_fd = from_child[0];

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to_child[0], 0);  // dup2 clears O_CLOEXEC
    posix_spawn_file_actions_adddup2(&actions, from_child[1], 1);
    std::string python = DISTOPT_TEST_PYTHON, script = DISTOPT_TEST_SOURCE_DIR "/datasets/range_http_server.py",
                root = folder.string(), log_file = log.string();
    std::array<char*, 5> argv{python.data(), script.data(), root.data(), log_file.data(), nullptr};
    const int spawned = ::posix_spawn(&child_.pid, python.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(to_child[0]);
    ::close(from_child[1]);
    if (spawned != 0) child_.pid = -1;
    REQUIRE(spawned == 0);

    // The child prints its port once it listens.
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (line.find('\n') == std::string::npos) {
      pollfd ready{child_.stdout_fd, POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || ::poll(&ready, 1, static_cast<int>(left.count())) != 1) break;
      std::array<char, 64> buffer{};
      const ::ssize_t got = ::read(child_.stdout_fd, buffer.data(), buffer.size());
      if (got <= 0) break;
      line.append(buffer.data(), static_cast<std::size_t>(got));
    }
    INFO("the server printed '" << line << "'");
    REQUIRE(line.find('\n') != std::string::npos);
    port_ = std::stoi(line);
    REQUIRE(port_ > 0);
  }

  [[nodiscard]] std::string url(std::string_view path) const {
    return message("http://127.0.0.1:", port_, "/", path);
  }
  // One line per request so far: "<method> <path> <Range header or ->".
  [[nodiscard]] std::vector<std::string> requests() const { return lines_of(log_); }

 private:
  struct Child {
    pid_t pid = -1;
    int stdin_fd = -1, stdout_fd = -1;
    Child() = default;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child() {
      if (stdin_fd >= 0) ::close(stdin_fd);
      if (stdout_fd >= 0) ::close(stdout_fd);
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
      }
    }
  };
  Child child_;
  fs::path log_;
  int port_ = 0;
};

LabelledImages random_dataset(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  LabelledImages d;
  d.images = xt::xtensor<std::uint8_t, 4>::from_shape({n, 3, 32, 32});
  for (auto& pixel : d.images) pixel = static_cast<std::uint8_t>(gen());
  for (std::size_t i = 0; i < n; ++i) {
    d.fine.push_back(static_cast<std::uint8_t>(gen() % 100));
    d.coarse.push_back(static_cast<std::uint8_t>(gen() % 20));
  }
  return d;
}

std::vector<std::string> numbered_names(std::string_view stem, std::size_t n) {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < n; ++i) names.push_back(message(stem, "_", i));
  return names;
}

// One entry of a test archive: a regular file with `data`, or another type (a folder, a link).
struct Entry {
  std::string name{};
  Bytes data{};
  unsigned type = AE_IFREG;
  std::string symlink{};   // for AE_IFLNK
  std::string hardlink{};  // when set, a hard link to this name
};

// A .tar.gz holding `entries`, written by libarchive.
Bytes tar_gz(const std::vector<Entry>& entries) {
  archive* writer = archive_write_new();
  REQUIRE(writer != nullptr);
  archive_write_add_filter_gzip(writer);
  archive_write_set_format_pax_restricted(writer);
  Bytes buffer(std::size_t{1} << 22);
  std::size_t used = 0;
  REQUIRE(archive_write_open_memory(writer, buffer.data(), buffer.size(), &used) == ARCHIVE_OK);
  for (const Entry& e : entries) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.name.c_str());
    archive_entry_set_filetype(entry, e.type);
    archive_entry_set_perm(entry, e.type == AE_IFDIR ? 0755 : 0644);
    archive_entry_set_size(entry, static_cast<la_int64_t>(e.data.size()));
    if (!e.symlink.empty()) archive_entry_set_symlink(entry, e.symlink.c_str());
    if (!e.hardlink.empty()) archive_entry_set_hardlink(entry, e.hardlink.c_str());
    const bool written =
        archive_write_header(writer, entry) == ARCHIVE_OK &&
        (e.data.empty() || archive_write_data(writer, e.data.data(), e.data.size()) == static_cast<la_ssize_t>(e.data.size()));
    archive_entry_free(entry);
    REQUIRE(written);
  }
  REQUIRE(archive_write_close(writer) == ARCHIVE_OK);
  archive_write_free(writer);
  buffer.resize(used);
  return buffer;
}

// A CIFAR-100 in miniature (20 training and 5 test records) and its files, as the archive holds them.
struct MiniCifar {
  MiniCifar() {
    const TempDir staging("download-staging");
    distopt::data::write_cifar100_records(staging / "train.bin", train);
    distopt::data::write_cifar100_records(staging / "test.bin", test);
    distopt::data::write_label_names(staging / "fine_label_names.txt", fine_names);
    distopt::data::write_label_names(staging / "coarse_label_names.txt", coarse_names);
    for (const char* name : {"train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt"})
      files.push_back({.name = message("cifar-100-binary/", name), .data = read_bytes(staging / name)});
  }

  // The archive: the folder entry, then `files` (or what a test made of them).
  [[nodiscard]] Bytes archive(std::vector<Entry> extra = {}, std::string_view drop = "") const {
    std::vector<Entry> entries{{.name = "cifar-100-binary/", .type = AE_IFDIR}};
    for (const Entry& f : files)
      if (f.name != drop) entries.push_back(f);
    entries.insert(entries.end(), extra.begin(), extra.end());
    return tar_gz(entries);
  }

  LabelledImages train = random_dataset(20, 1), test = random_dataset(5, 2);
  std::vector<std::string> fine_names = numbered_names("fine", 100), coarse_names = numbered_names("coarse", 20);
  std::vector<Entry> files;
};

void require_equal(const LabelledImages& a, const LabelledImages& b) {
  REQUIRE(a.size() == b.size());
  const bool same_pixels = a.images == b.images;
  REQUIRE(same_pixels);
  REQUIRE(a.fine == b.fine);
  REQUIRE(a.coarse == b.coarse);
}

// What the tests share: a served folder `www` holding the archive, a download folder `data`,
// and the server.
struct Site {
  explicit Site(const Bytes& served) {
    fs::create_directories(www);
    write_bytes(www / "cifar-100-binary.tar.gz", served);
  }
  // Quiet options with short timeouts for `path` on the server.
  [[nodiscard]] DownloadOptions options(std::string_view path, const std::string& md5) const {
    return {.url = server.url(path),
            .md5 = md5,
            .progress = nullptr,
            .connect_timeout = 5s,
            .low_speed_limit = 1024,
            .low_speed_time = 5s,
            .retries = 0};
  }

  TempDir root{"download"};
  fs::path www = root / "www", data = root / "data";
  HttpServer server{www, root / "requests.log"};
};

const std::vector<std::string> unpacked_and_archive{"cifar-100-binary", "cifar-100-binary.tar.gz"};

void require_cifar(const fs::path& data, const MiniCifar& mini) {
  const auto cifar = distopt::data::load_cifar100(data, {std::nullopt, std::nullopt});
  require_equal(cifar.train, mini.train);
  require_equal(cifar.test, mini.test);
  REQUIRE(cifar.fine_names == mini.fine_names);
  REQUIRE(cifar.coarse_names == mini.coarse_names);
}

}  // namespace

TEST_CASE("Md5 gives the digests of the test suite of RFC 1321") {
  // RFC 1321, appendix A.5.
  const std::vector<std::pair<std::string_view, std::string_view>> suite{
      {"", "d41d8cd98f00b204e9800998ecf8427e"},
      {"a", "0cc175b9c0f1b6a831c399e269772661"},
      {"abc", "900150983cd24fb0d6963f7d28e17f72"},
      {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
      {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
      {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"},
      {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
       "57edf4a22be3c955ac49da2e2107b67a"}};
  for (const auto& [text, digest] : suite) {
    INFO("MD5(\"" << text << "\")");
    CHECK(md5_hex(bytes_of(text)) == digest);
  }
}

TEST_CASE("Md5 fed in pieces of any size equals Md5 of the whole, and md5sum") {
  std::mt19937 gen(7);
  Bytes bytes(5000);
  for (auto& b : bytes) b = static_cast<std::uint8_t>(gen());
  const std::string whole = md5_hex(bytes);
  // Pieces that end exactly at, just before and just after the 56-byte padding limit and the 64-byte block.
  for (const std::size_t piece : std::array<std::size_t, 12>{1, 3, 55, 56, 57, 63, 64, 65, 119, 128, 1000, 4999}) {
    Md5 md5;
    for (std::size_t at = 0; at < bytes.size(); at += piece)
      md5.update(std::span<const std::uint8_t>(bytes).subspan(at, std::min(piece, bytes.size() - at)));
    INFO("pieces of " << piece << " bytes");
    CHECK(md5.hex_digest() == whole);
  }
  // The digest of a prefix does not disturb the sum that goes on.
  Md5 md5;
  md5.update(std::span<const std::uint8_t>(bytes).first(100));
  CHECK(md5.hex_digest() == md5_hex(std::span<const std::uint8_t>(bytes).first(100)));
  md5.update(std::span<const std::uint8_t>(bytes).subspan(100));
  CHECK(md5.hex_digest() == whole);

  // md5_file, and coreutils' md5sum as an independent implementation.
  const TempDir dir("md5");
  write_bytes(dir / "bytes.bin", bytes);
  CHECK(md5_file(dir / "bytes.bin") == whole);
  std::FILE* pipe = ::popen(message("md5sum '", (dir / "bytes.bin").string(), "'").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::array<char, 33> printed{};
  const std::size_t got = std::fread(printed.data(), 1, 32, pipe);
  ::pclose(pipe);
  REQUIRE(got == 32);
  CHECK(std::string(printed.data()) == whole);
  REQUIRE_THROWS_WITH(md5_file(dir / "missing.bin"), Contains("missing.bin"));
}

TEST_CASE("download_cifar100 downloads, checks and unpacks the archive, then does nothing") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Site site(archive);
  DownloadOptions options = site.options("cifar-100-binary.tar.gz", md5_hex(archive));
  std::vector<DownloadProgress> events;
  options.progress = [&](const DownloadProgress& p) { events.push_back(p); };

  REQUIRE(download_cifar100(site.data, options) == site.data / "cifar-100-binary");
  require_cifar(site.data, mini);
  // The archive is kept for a re-unpack without network; no partial file, no temporary folder.
  REQUIRE(listing(site.data) == unpacked_and_archive);
  REQUIRE(read_bytes(site.data / "cifar-100-binary.tar.gz") == archive);
  REQUIRE(site.server.requests() == std::vector<std::string>{"GET /cifar-100-binary.tar.gz -"});

  // Progress: one request from its first byte to its last, never going back.
  REQUIRE(events.size() >= 2);
  CHECK(events.front().first);
  CHECK(events.front().received < archive.size());
  CHECK(events.back().last);
  CHECK(events.back().received == archive.size());
  bool monotone = true, sized = true;
  for (std::size_t i = 0; i < events.size(); ++i) {
    sized = sized && events[i].total == archive.size() && events[i].url == options.url;
    if (i > 0) monotone = monotone && events[i].received >= events[i - 1].received && !events[i].first;
  }
  CHECK(monotone);
  CHECK(sized);

  // Idempotent: no request, nothing changed, even when the server has gone wrong since.
  write_bytes(site.www / "cifar-100-binary.tar.gz", bytes_of("not an archive"));
  events.clear();
  REQUIRE(download_cifar100(site.data, options) == site.data / "cifar-100-binary");
  CHECK(site.server.requests().size() == 1);
  CHECK(events.empty());
  require_cifar(site.data, mini);
}

TEST_CASE("a download whose md5 differs is removed, and the error names the file and both digests") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Bytes damaged = archive;
  damaged[damaged.size() / 2] ^= 0x01;
  Site site(damaged);
  const std::string expected = md5_hex(archive), actual = md5_hex(damaged);
  REQUIRE(expected != actual);

  const std::string error =
      runtime_error_of([&] { (void)download_cifar100(site.data, site.options("cifar-100-binary.tar.gz", expected)); });
  CHECK_THAT(error, Contains("md5 mismatch"));
  CHECK_THAT(error, Contains(expected));
  CHECK_THAT(error, Contains(actual));
  CHECK_THAT(error, Contains((site.data / "cifar-100-binary.tar.gz.part").string()));
  CHECK(listing(site.data).empty());

  // Once the server has it right, the next call succeeds; the digest may be given in capitals.
  write_bytes(site.www / "cifar-100-binary.tar.gz", archive);
  std::string upper = expected;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  REQUIRE(download_cifar100(site.data, site.options("cifar-100-binary.tar.gz", upper)) ==
          site.data / "cifar-100-binary");
}

TEST_CASE("an interrupted download is kept and resumed with a Range request") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Site site(archive);
  const std::string md5 = md5_hex(archive);
  const std::size_t cut = archive.size() / 3;
  REQUIRE(cut > 0);

  const std::string error = runtime_error_of(
      [&] { (void)download_cifar100(site.data, site.options(message("cut/", cut, "/cifar-100-binary.tar.gz"), md5)); });
  CHECK_THAT(error, Contains(site.server.url(message("cut/", cut, "/cifar-100-binary.tar.gz"))));
  CHECK_THAT(error, Contains(message("The ", cut, " bytes received are kept")));
  const fs::path part = site.data / "cifar-100-binary.tar.gz.part";
  REQUIRE(listing(site.data) == std::vector<std::string>{"cifar-100-binary.tar.gz.part"});
  REQUIRE(read_bytes(part) == Bytes(archive.begin(), archive.begin() + static_cast<std::ptrdiff_t>(cut)));

  REQUIRE(download_cifar100(site.data, site.options("cifar-100-binary.tar.gz", md5)) ==
          site.data / "cifar-100-binary");
  REQUIRE(site.server.requests().back() == message("GET /cifar-100-binary.tar.gz bytes=", cut, "-"));
  REQUIRE(listing(site.data) == unpacked_and_archive);
  REQUIRE(read_bytes(site.data / "cifar-100-binary.tar.gz") == archive);
  require_cifar(site.data, mini);
}

TEST_CASE("a download that breaks off is resumed within the same call while retries remain") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Site site(archive);
  const std::size_t cut = archive.size() / 3 + 1;  // three requests make the whole
  DownloadOptions options = site.options(message("cut/", cut, "/cifar-100-binary.tar.gz"), md5_hex(archive));
  options.retries = 2;

  REQUIRE(download_cifar100(site.data, options) == site.data / "cifar-100-binary");
  const std::string path = message("GET /cut/", cut, "/cifar-100-binary.tar.gz ");
  REQUIRE(site.server.requests() ==
          std::vector<std::string>{path + "-", message(path, "bytes=", cut, "-"), message(path, "bytes=", 2 * cut, "-")});
  REQUIRE(read_bytes(site.data / "cifar-100-binary.tar.gz") == archive);
}

TEST_CASE("a server that ignores Range still yields the right archive") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Site site(archive);
  // Bytes that are not the archive's beginning: appending the full answer to them would be caught
  // by the md5, but starting over must not even get there.
  const std::size_t kept = archive.size() / 2;
  fs::create_directories(site.data);
  write_bytes(site.data / "cifar-100-binary.tar.gz.part", Bytes(kept, 0xEE));

  REQUIRE(download_cifar100(site.data, site.options("norange/cifar-100-binary.tar.gz", md5_hex(archive))) ==
          site.data / "cifar-100-binary");
  // The range is asked for; libcurl refuses the whole file in answer, and the download starts over.
  REQUIRE(site.server.requests() == std::vector<std::string>{message("GET /norange/cifar-100-binary.tar.gz bytes=", kept, "-"),
                                                             "GET /norange/cifar-100-binary.tar.gz -"});
  REQUIRE(read_bytes(site.data / "cifar-100-binary.tar.gz") == archive);
  REQUIRE(listing(site.data) == unpacked_and_archive);
  require_cifar(site.data, mini);
}

TEST_CASE("a partial file that already holds the whole archive is checked, not fetched again") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Site site(archive);
  fs::create_directories(site.data);
  write_bytes(site.data / "cifar-100-binary.tar.gz.part", archive);

  REQUIRE(download_cifar100(site.data, site.options("cifar-100-binary.tar.gz", md5_hex(archive))) ==
          site.data / "cifar-100-binary");
  // The server answers 416 Range Not Satisfiable; the md5 shows the file is whole.
  REQUIRE(site.server.requests() == std::vector<std::string>{message("GET /cifar-100-binary.tar.gz bytes=", archive.size(), "-")});
  REQUIRE(listing(site.data) == unpacked_and_archive);
}

TEST_CASE("redirects are followed") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Site site(archive);
  REQUIRE(download_cifar100(site.data, site.options("redirect/cifar-100-binary.tar.gz", md5_hex(archive))) ==
          site.data / "cifar-100-binary");
  REQUIRE(site.server.requests() ==
          std::vector<std::string>{"GET /redirect/cifar-100-binary.tar.gz -", "GET /cifar-100-binary.tar.gz -"});
  require_cifar(site.data, mini);
}

TEST_CASE("an unreachable server gives an error that says where to put the archive by hand") {
  const TempDir root("download");
  const fs::path data = root / "data";
  const std::string url = message("http://127.0.0.1:", closed_port(), "/cifar-100-binary.tar.gz");
  const std::string error = runtime_error_of([&] {
    (void)download_cifar100(data, {.url = url, .progress = nullptr});
  });
  CHECK_THAT(error, Contains(url));
  CHECK_THAT(error, Contains("connect"));
  CHECK_THAT(error, Contains((data / "cifar-100-binary.tar.gz").string()));
  CHECK_THAT(error, Contains((data / "cifar-100-binary").string() + "/"));
  CHECK(listing(data).empty());
}

TEST_CASE("HTTP 404 gives an error with the status, the URL and where to put the archive by hand") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Site site(archive);
  const DownloadOptions options = site.options("missing.tar.gz", md5_hex(archive));
  const std::string error = runtime_error_of([&] { (void)download_cifar100(site.data, options); });
  CHECK_THAT(error, Contains("HTTP status 404"));
  CHECK_THAT(error, Contains(options.url));
  CHECK_THAT(error, Contains((site.data / "cifar-100-binary.tar.gz").string()));
  CHECK(listing(site.data).empty());
}

TEST_CASE("a server that stops sending is given up after low_speed_time, keeping what came") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Site site(archive);
  const std::size_t sent = archive.size() / 4;
  DownloadOptions options = site.options(message("stall/", sent, "/cifar-100-binary.tar.gz"), md5_hex(archive));
  // libcurl measures the speed over the last few seconds: a limit far above the burst that came
  // makes the stall count from its first second.
  options.low_speed_limit = 100'000'000;
  options.low_speed_time = 1s;
  const auto start = std::chrono::steady_clock::now();
  const std::string error = runtime_error_of([&] { (void)download_cifar100(site.data, options); });
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK_THAT(error, Contains("Timeout"));
  CHECK(seconds < 10);
  REQUIRE(fs::file_size(site.data / "cifar-100-binary.tar.gz.part") == sent);
}

TEST_CASE("an archive placed by hand is used without the network, and kept even if it is wrong") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  const TempDir root("download");
  const fs::path data = root / "data";
  fs::create_directories(data);
  const DownloadOptions offline{.url = message("http://127.0.0.1:", closed_port(), "/cifar-100-binary.tar.gz"),
                                .md5 = md5_hex(archive),
                                .progress = nullptr};

  SECTION("the right archive") {
    write_bytes(data / "cifar-100-binary.tar.gz", archive);
    REQUIRE(download_cifar100(data, offline) == data / "cifar-100-binary");
    REQUIRE(listing(data) == unpacked_and_archive);
    require_cifar(data, mini);
  }
  SECTION("a damaged archive: an error naming it, and the user's file left alone") {
    Bytes damaged = archive;
    damaged.back() ^= 0x80;
    write_bytes(data / "cifar-100-binary.tar.gz", damaged);
    const std::string error = runtime_error_of([&] { (void)download_cifar100(data, offline); });
    CHECK_THAT(error, Contains((data / "cifar-100-binary.tar.gz").string()));
    CHECK_THAT(error, Contains(md5_hex(archive)));
    CHECK_THAT(error, Contains(md5_hex(damaged)));
    CHECK(listing(data) == std::vector<std::string>{"cifar-100-binary.tar.gz"});
  }
}

TEST_CASE("an unpacked folder placed by hand is used as it is, an incomplete one is refused") {
  const MiniCifar mini;
  const TempDir root("download");
  const fs::path data = root / "data";
  fs::create_directories(data / "cifar-100-binary");
  for (const Entry& file : mini.files)
    if (file.name != "cifar-100-binary/test.bin") write_bytes(data / file.name, file.data);
  const DownloadOptions offline{.url = message("http://127.0.0.1:", closed_port(), "/cifar-100-binary.tar.gz"),
                                .progress = nullptr};

  const std::string error = runtime_error_of([&] { (void)download_cifar100(data, offline); });
  CHECK_THAT(error, Contains((data / "cifar-100-binary").string()));
  CHECK_THAT(error, Contains("lacks test.bin"));

  write_bytes(data / "cifar-100-binary/test.bin", mini.files[1].data);
  REQUIRE(download_cifar100(data, offline) == data / "cifar-100-binary");
  REQUIRE(listing(data) == std::vector<std::string>{"cifar-100-binary"});
  require_cifar(data, mini);
}

TEST_CASE("archives with entries outside their folder, links, devices or a missing file are refused") {
  const MiniCifar mini;
  struct Case {
    std::string label;
    Bytes archive;
    std::string says;
  };
  const Bytes evil = test_support::Bytes{'e', 'v', 'i', 'l'};
  const std::vector<Case> cases{
      {"a ../ entry", mini.archive({{.name = "../evil", .data = evil}}), "entry '../evil' has a '..' component"},
      {"a nested ../ entry", mini.archive({{.name = "cifar-100-binary/../../evil", .data = evil}}),
       "has a '..' component"},
      {"an absolute path", mini.archive({{.name = "/tmp/distopt-evil", .data = evil}}),
       "entry '/tmp/distopt-evil' is an absolute path"},
      {"a symbolic link", mini.archive({{.name = "cifar-100-binary/link", .type = AE_IFLNK, .symlink = "/etc/passwd"}}),
       "entry 'cifar-100-binary/link' is a symbolic link"},
      {"a hard link",
       mini.archive({{.name = "cifar-100-binary/extra.bin", .hardlink = "cifar-100-binary/train.bin"}}),
       "entry 'cifar-100-binary/extra.bin' is a hard link to 'cifar-100-binary/train.bin'"},
      {"a device", mini.archive({{.name = "cifar-100-binary/tty", .type = AE_IFCHR}}),
       "entry 'cifar-100-binary/tty' is a character device"},
      {"no test.bin", mini.archive({}, "cifar-100-binary/test.bin"), "does not contain cifar-100-binary/test.bin"},
      {"not a gzip file", Bytes(3000, 'x'), "cannot unpack"},
  };
  for (const Case& c : cases) {
    INFO(c.label);
    Site site(c.archive);
    const std::string error = runtime_error_of(
        [&] { (void)download_cifar100(site.data, site.options("cifar-100-binary.tar.gz", md5_hex(c.archive))); });
    CHECK_THAT(error, Contains(c.says));
    CHECK_THAT(error, Contains((site.data / "cifar-100-binary.tar.gz").string()));
    CHECK_THAT(error, Contains("the downloaded archive was removed"));
    // Nothing left: no unpacked folder, no archive, no temporary folder, no escaped file.
    CHECK(listing(site.data).empty());
    CHECK(!fs::exists(site.root / "evil"));
    CHECK(!fs::exists("/tmp/distopt-evil"));

    // The same archive placed by hand is refused too, and left where the user put it.
    write_bytes(site.data / "cifar-100-binary.tar.gz", c.archive);
    const std::string by_hand = runtime_error_of(
        [&] { (void)download_cifar100(site.data, site.options("cifar-100-binary.tar.gz", md5_hex(c.archive))); });
    CHECK_THAT(by_hand, Contains(c.says));
    CHECK_THAT(by_hand, Contains("was left in place"));
    CHECK(listing(site.data) == std::vector<std::string>{"cifar-100-binary.tar.gz"});
    CHECK(site.server.requests().size() == 1);
  }
}

TEST_CASE("two threads downloading into one folder share a single download") {
  const MiniCifar mini;
  const Bytes archive = mini.archive();
  Site site(archive);
  const DownloadOptions options = site.options("cifar-100-binary.tar.gz", md5_hex(archive));
  std::array<std::string, 2> outcome;
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < 2; ++i)
    threads.emplace_back([&, i] {
      try {
        outcome[i] = download_cifar100(site.data, options).string();
      } catch (const std::exception& e) {
        outcome[i] = message("error: ", e.what());
      }
    });
  for (auto& thread : threads) thread.join();
  CHECK(outcome[0] == (site.data / "cifar-100-binary").string());
  CHECK(outcome[1] == (site.data / "cifar-100-binary").string());
  CHECK(site.server.requests().size() == 1);
  REQUIRE(listing(site.data) == unpacked_and_archive);
  require_cifar(site.data, mini);
}

TEST_CASE("bad DownloadOptions are refused, naming the field, before anything is touched") {
  const TempDir root("download");
  const fs::path data = root / "data";
  REQUIRE_THROWS_WITH(download_cifar100(data, {.md5 = "03b5dce0", .progress = nullptr}),
                      Contains("DownloadOptions::md5"));
  REQUIRE_THROWS_WITH(download_cifar100(data, {.md5 = std::string(32, 'g'), .progress = nullptr}),
                      Contains("DownloadOptions::md5"));
  REQUIRE_THROWS_WITH(download_cifar100(data, {.url = "", .progress = nullptr}), Contains("DownloadOptions::url"));
  REQUIRE_THROWS_WITH(download_cifar100(data, {.progress = nullptr, .connect_timeout = 0s}),
                      Contains("DownloadOptions::connect_timeout"));
  REQUIRE_THROWS_WITH(download_cifar100(data, {.progress = nullptr, .low_speed_limit = 0}),
                      Contains("DownloadOptions::low_speed_limit"));
  REQUIRE_THROWS_WITH(download_cifar100(data, {.progress = nullptr, .low_speed_time = 0s}),
                      Contains("DownloadOptions::low_speed_time"));
  REQUIRE_THROWS_AS(download_cifar100(data, {.md5 = "", .progress = nullptr}), std::invalid_argument);
  CHECK(!fs::exists(data));
}

TEST_CASE("ProgressPrinter: a dozen lines in a log, one redrawn line on a terminal") {
  const auto print = [](bool live) {
    char* text = nullptr;
    std::size_t size = 0;
    std::FILE* out = ::open_memstream(&text, &size);
    REQUIRE(out != nullptr);
    distopt::data::ProgressPrinter printer(out, live);
    const std::uint64_t total = 160'000'000;
    printer({.url = "http://x/a.tar.gz", .received = 0, .total = total, .first = true});
    for (std::uint64_t received = 0; received <= total; received += total / 1000)
      printer({.url = "http://x/a.tar.gz", .received = received, .total = total});
    printer({.url = "http://x/a.tar.gz", .received = total, .total = total, .last = true});
    std::fclose(out);
    std::string result(text, size);
    std::free(text);
    return result;
  };
  const std::string log = print(false);
  CHECK(log.find('\r') == std::string::npos);
  CHECK(std::count(log.begin(), log.end(), '\n') == 12);  // the URL, then 0%, 10%, ..., 100%
  CHECK_THAT(log, Contains("distopt: downloading http://x/a.tar.gz\n"));
  CHECK_THAT(log, Contains("50%"));
  CHECK_THAT(log, Contains("160.0 of 160.0 MB (100%)\n"));

  const std::string terminal = print(true);
  CHECK(std::count(terminal.begin(), terminal.end(), '\n') == 2);  // the URL, and the end of the redrawn line
  CHECK(std::count(terminal.begin(), terminal.end(), '\r') >= 2);
  CHECK(terminal.ends_with("160.0 of 160.0 MB (100%)\n"));
}
