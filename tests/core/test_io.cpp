#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "distopt/core/io.hpp"
#include "../support/files.hpp"

namespace io = distopt::io;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

std::size_t entries(const fs::path& folder) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(folder)) ++n;
  return n;
}

}  // namespace

TEST_CASE("write_text replaces a file whole and leaves no temporary file", "[core][io]") {
  const test_support::TempDir dir("io");
  io::write_text(dir / "deep" / "a.txt", "first");
  CHECK(io::read_text(dir / "deep" / "a.txt") == "first");
  io::write_text(dir / "deep" / "a.txt", "second, longer than the first");
  CHECK(io::read_text(dir / "deep" / "a.txt") == "second, longer than the first");
  CHECK(entries(dir / "deep") == 1);
}

TEST_CASE("An AtomicFile destroyed before commit leaves the old file and no temporary", "[core][io]") {
  const test_support::TempDir dir("io");
  io::write_text(dir / "a.txt", "old");
  {
    io::AtomicFile file(dir / "a.txt", "test");
    file.write(std::string_view("new bytes that never land"));
  }
  CHECK(io::read_text(dir / "a.txt") == "old");
  CHECK(entries(dir.path()) == 1);
}

TEST_CASE("I/O errors name the context, the path and the reason", "[core][io]") {
  const test_support::TempDir dir("io");
  CHECK_THROWS_AS(io::read_text(dir / "absent.txt", "loader"), std::runtime_error);
  CHECK_THROWS_WITH(io::read_text(dir / "absent.txt", "loader"), Contains("loader") && Contains("absent.txt"));
  CHECK_THROWS_WITH(io::read_file(dir.path()), Contains(dir.path().string()));
  CHECK_FALSE(io::read_text_if_exists(dir / "absent.txt"));
  io::write_text(dir / "file", "x");
  // A folder cannot be made below a file.
  CHECK_THROWS_WITH(io::write_text(dir / "file" / "below.txt", "y", "stamp"), Contains("stamp") && Contains("file"));
}

TEST_CASE("AppendFile appends whole lines, and truncates when asked", "[core][io]") {
  const test_support::TempDir dir("io");
  {
    io::AppendFile log(dir / "log" / "a.jsonl", false, "test");
    log.append_line("{\"a\": 1}");
    log.append_line("{\"b\": 2}");
    log.sync();
  }
  {
    io::AppendFile log(dir / "log" / "a.jsonl", false, "test");
    log.append_line("third");
  }
  CHECK(io::read_text(dir / "log" / "a.jsonl") == "{\"a\": 1}\n{\"b\": 2}\nthird\n");
  {
    io::AppendFile log(dir / "log" / "a.jsonl", true, "test");
    log.append_line("only");
  }
  CHECK(io::read_text(dir / "log" / "a.jsonl") == "only\n");
}

TEST_CASE("replace_directory swaps a complete folder in and removes the old one", "[core][io]") {
  const test_support::TempDir dir("io");
  io::write_text(dir / "cache" / "old.npy", "old");
  io::write_text(dir / ".staging" / "new.npz", "new");
  io::replace_directory(dir / ".staging", dir / "cache", "test");
  CHECK(io::read_text(dir / "cache" / "new.npz") == "new");
  CHECK_FALSE(fs::exists(dir / "cache" / "old.npy"));
  CHECK(entries(dir.path()) == 1);
  CHECK_THROWS_WITH(io::replace_directory(dir / ".absent", dir / "cache", "save_data"), Contains("save_data") && Contains(".absent"));
  CHECK(io::read_text(dir / "cache" / "new.npz") == "new");  // a failed swap puts the old folder back
}

TEST_CASE("CSV: written with RFC 4180 quoting, parsed back to the same fields", "[core][io]") {
  const test_support::TempDir dir("io");
  const std::vector<std::string> header{"run", "message", "empty"};
  const std::vector<std::vector<std::string>> rows{{"a", "diverged, \"nan\" loss\nat step 3", ""}, {"b,c", "ok", "x"}};
  io::write_csv(dir / "t.csv", header, rows);
  const auto records = io::parse_csv(io::read_text(dir / "t.csv"));
  REQUIRE(records.size() == 3);
  CHECK(records[0] == header);
  CHECK(records[1] == rows[0]);
  CHECK(records[2] == rows[1]);
  CHECK(io::parse_csv("a,\"b\"\"c\"\r\n") == std::vector<std::vector<std::string>>{{"a", "b\"c"}});
  CHECK_THROWS_WITH(io::write_csv(dir / "bad.csv", header, {{"one"}}), Contains("bad.csv") && Contains("row 1"));
  CHECK_FALSE(fs::exists(dir / "bad.csv"));
}

TEST_CASE("format_number writes what an ostream with that precision writes", "[core][io]") {
  std::mt19937_64 engine(3);
  std::vector<double> values{0.0, -0.0, 1.0, 0.1, 1e-5, 123456789.0, 5e-324, 1.7976931348623157e308, 0.05, 4e-4,
                             2.0 / 3.0, std::numeric_limits<double>::infinity(), -1e300};
  for (int i = 0; i < 2000; ++i) {
    values.push_back(std::ldexp(std::uniform_real_distribution<double>(-1, 1)(engine), static_cast<int>(engine() % 200) - 100));
  }
  for (const int digits : {1, 4, 6, 10, 12, 17}) {
    for (const double v : values) {
      std::ostringstream expected;
      expected << std::setprecision(digits) << v;
      INFO(digits << " digits, " << expected.str());
      CHECK(io::format_number(v, digits) == expected.str());
    }
  }
  CHECK(io::format_number(std::nan("")) == "nan");
}

TEST_CASE("printable escapes control bytes and bytes of malformed UTF-8", "[core][io]") {
  CHECK(io::printable("plain") == "plain");
  CHECK(io::printable(std::string_view("a\0b", 3)) == "a\\x00b");
  CHECK(io::printable("temp\xc3\xa9rature") == "temp\xc3\xa9rature");
  CHECK(io::printable("\xff\x1b[2J") == "\\xff\\x1b[2J");
  CHECK(io::hex(0xABCDEF, 8) == "00abcdef");
}
