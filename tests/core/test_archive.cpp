#include "distopt/core/archive.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <sys/resource.h>
#include <zlib.h>
#include <unistd.h>

#include "../support/files.hpp"

using distopt::Archive;
using distopt::npy_dtype;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
namespace fs = std::filesystem;
namespace npz = distopt::detail::npz;

namespace {

using test_support::Bytes;
using test_support::read_bytes;
using test_support::write_bytes;
using TempDir = test_support::TempDir;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Everything in `dir` whose name says it is one of save's temporary files.
std::vector<std::string> temporaries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().find(".tmp") != std::string::npos) out.push_back(entry.path().string());
  return out;
}

std::string hex_of(std::span<const std::uint8_t> bytes) {
  std::string out;
  for (const std::uint8_t b : bytes) out += npz::hex(b, 2);
  return out;
}
template <class T>
std::string hex_of(std::span<const T> values) {
  return hex_of(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(values.data()), values.size_bytes()));
}

std::vector<std::size_t> find_all(const Bytes& bytes, std::string_view pattern) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i + pattern.size() <= bytes.size(); ++i)
    if (std::equal(pattern.begin(), pattern.end(), bytes.begin() + static_cast<std::ptrdiff_t>(i),
                   [](char p, std::uint8_t b) { return static_cast<std::uint8_t>(p) == b; }))
      out.push_back(i);
  return out;
}
constexpr std::string_view npy_magic = "\x93NUMPY";
constexpr std::string_view central_signature{"PK\x01\x02", 4};
constexpr std::string_view end_signature{"PK\x05\x06", 4};

bool aligned64(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

// Distinct values of every type, using all bytes of wide ones (so byte order mistakes show).
template <class T>
std::vector<T> sample(std::size_t n) {
  std::vector<T> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (std::is_floating_point_v<T>) {
      out[i] = static_cast<T>((static_cast<double>(i) - 7.25) / 3.0);
    } else if constexpr (std::is_same_v<T, std::uint8_t>) {
      out[i] = static_cast<T>(i * 37 + 11);
    } else {
      const auto spread = static_cast<T>(std::numeric_limits<T>::max() / 97);
      out[i] = static_cast<T>(static_cast<T>(i) * spread - (std::is_signed_v<T> ? static_cast<T>(3 * spread) : T{0}));
    }
  }
  return out;
}

template <class T>
bool same_bits(std::span<const T> a, std::span<const T> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size_bytes()) == 0);
}

// The archive the error and layout tests take apart: a 10x10 float matrix, a 0-d step, a string.
Archive small_archive() {
  Archive archive;
  archive.put("w", sample<float>(100), {10, 10});
  archive.put_scalar<std::int64_t>("step", 7);
  archive.put_string("note", "hello");
  return archive;
}

// Python with NumPy: /usr/bin/python3, whatever python3 comes first on PATH (a virtualenv may
// lack NumPy). Missing NumPy is a failure, not a skip: scripts/setup-deps installs it.
constexpr std::string_view python = "/usr/bin/python3";

void require_numpy() {
  const int status = std::system("/usr/bin/python3 -c \"import numpy\" > /dev/null 2>&1");
  if (status != 0)
    FAIL("NumPy is missing: `/usr/bin/python3 -c \"import numpy\"` exited with status "
         << status << ". These interoperability tests need it; run scripts/setup-deps (python3-numpy).");
}

// Runs `script` with Python in `dir` (arguments appended), returns its standard output; fails
// the test with its standard error if it exits non-zero.
std::string run_python(const TempDir& dir, std::string_view script, const std::string& arguments = "") {
  const fs::path file = dir / "script.py";
  write_bytes(file, npz::as_bytes(script));
  const std::string command = distopt::message("cd '", dir.path().string(), "' && ", python, " script.py ", arguments,
                                               " > python.out 2> python.err");
  const int status = std::system(command.c_str());
  if (status != 0) FAIL("Python failed (status " << status << "):\n" << read_text(dir / "python.err"));
  return read_text(dir / "python.out");
}

// "a;b;c" lines keyed by their first field (';' appears in no dtype, unlike '|').
std::map<std::string, std::vector<std::string>> rows(const std::string& text) {
  std::map<std::string, std::vector<std::string>> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::size_t start = 0;
    while (true) {
      const std::size_t bar = line.find(';', start);
      fields.push_back(line.substr(start, bar - start));
      if (bar == std::string::npos) break;
      start = bar + 1;
    }
    const std::string key = fields.front();
    fields.erase(fields.begin());
    out[key] = fields;
  }
  return out;
}

std::string joined(const std::vector<std::ptrdiff_t>& shape) {
  std::string out;
  for (std::size_t i = 0; i < shape.size(); ++i) out += distopt::message(i ? "," : "", shape[i]);
  return out;
}

}  // namespace

TEST_CASE("CRC-32 (zlib) matches the standard check value and a bitwise reference", "[core][archive]") {
  constexpr std::array<std::uint8_t, 9> digits{'1', '2', '3', '4', '5', '6', '7', '8', '9'};
  CHECK(npz::crc32(digits) == 0xCBF43926u);  // the catalogue's check value for CRC-32/ISO-HDLC
  CHECK(npz::crc32({}) == 0u);
  CHECK(npz::crc32(npz::as_bytes("The quick brown fox jumps over the lazy dog")) == 0x414FA339u);

  const auto reference = [](std::span<const std::uint8_t> bytes) {
    std::uint32_t crc = 0xFFFFFFFFu;
    for (const std::uint8_t b : bytes) {
      crc ^= b;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
  };
  std::mt19937 engine(42);
  Bytes data(300);
  for (auto& b : data) b = static_cast<std::uint8_t>(engine());
  for (std::size_t offset = 0; offset < 9; ++offset) {
    for (std::size_t length = 0; offset + length <= 120; ++length) {
      const std::span<const std::uint8_t> piece(data.data() + offset, length);
      REQUIRE(npz::crc32(piece) == reference(piece));
      // Continuing a CRC over a split gives the CRC of the whole.
      const std::size_t half = length / 3;
      REQUIRE(npz::crc32(piece.subspan(half), npz::crc32(piece.first(half))) == reference(piece));
    }
  }
}

TEST_CASE("Archive element types and their NumPy dtypes", "[core][archive]") {
  STATIC_REQUIRE(npy_dtype<float> == "<f4");
  STATIC_REQUIRE(npy_dtype<double> == "<f8");
  STATIC_REQUIRE(npy_dtype<std::int32_t> == "<i4");
  STATIC_REQUIRE(npy_dtype<std::int64_t> == "<i8");
  STATIC_REQUIRE(npy_dtype<std::uint8_t> == "|u1");
  STATIC_REQUIRE(npy_dtype<std::uint32_t> == "<u4");
  STATIC_REQUIRE(npy_dtype<std::uint64_t> == "<u8");
  STATIC_REQUIRE_FALSE(distopt::ArchiveElement<std::int16_t>);
  STATIC_REQUIRE_FALSE(distopt::ArchiveElement<char>);
  STATIC_REQUIRE_FALSE(distopt::ArchiveElement<bool>);
  STATIC_REQUIRE_FALSE(distopt::ArchiveElement<long double>);
  STATIC_REQUIRE_FALSE(distopt::ArchiveElement<const float>);
}

TEST_CASE("UTF-8 validation rejects what Python's decoder rejects", "[core][archive]") {
  STATIC_REQUIRE(npz::valid_utf8("exp_avg"));
  STATIC_REQUIRE(npz::valid_utf8("temp\xc3\xa9rature"));     // é
  STATIC_REQUIRE(npz::valid_utf8("\xe2\x82\xac"));           // €
  STATIC_REQUIRE(npz::valid_utf8("\xf0\x9f\x98\x80"));       // U+1F600
  STATIC_REQUIRE_FALSE(npz::valid_utf8("\xff"));
  STATIC_REQUIRE_FALSE(npz::valid_utf8("\xc0\xaf"));         // overlong '/'
  STATIC_REQUIRE_FALSE(npz::valid_utf8("\xed\xa0\x80"));     // surrogate
  STATIC_REQUIRE_FALSE(npz::valid_utf8("\xf4\x90\x80\x80")); // past U+10FFFF
  STATIC_REQUIRE_FALSE(npz::valid_utf8("\xe2\x82"));         // cut short
  STATIC_REQUIRE_FALSE(npz::valid_utf8("\xe2\x28\xa1"));     // bad continuation
}

TEMPLATE_TEST_CASE("Archive round-trips every dtype in memory and through a file", "[core][archive]", float, double,
                   std::int32_t, std::int64_t, std::uint8_t, std::uint32_t, std::uint64_t) {
  using T = TestType;
  const std::vector<T> values = sample<T>(24);
  Archive archive;
  archive.put("tensor", values, {2, 3, 4});
  archive.put("vector", std::span<const T>(values).first(5));
  archive.put_scalar<T>("scalar", values[5]);
  archive.put<T>("empty", std::span<const T>{}, {0});
  archive.put<T>("empty_matrix", std::span<const T>{}, {3, 0});
  archive.put("ones", std::vector<T>{values[7]}, {1, 1, 1});

  const auto check = [&](const Archive& loaded) {
    CHECK(loaded == archive);
    CHECK(loaded.names() == std::vector<std::string>{"tensor", "vector", "scalar", "empty", "empty_matrix", "ones"});
    for (const std::string& name : loaded.names()) CHECK(loaded.dtype(name) == npy_dtype<T>);
    CHECK(loaded.shape("tensor") == std::vector<std::ptrdiff_t>{2, 3, 4});
    CHECK(loaded.shape("vector") == std::vector<std::ptrdiff_t>{5});
    CHECK(loaded.shape("scalar").empty());
    CHECK(loaded.shape("empty") == std::vector<std::ptrdiff_t>{0});
    CHECK(loaded.shape("empty_matrix") == std::vector<std::ptrdiff_t>{3, 0});
    CHECK(same_bits(loaded.get<T>("tensor"), std::span<const T>(values)));
    CHECK(same_bits(loaded.get<T>("vector"), std::span<const T>(values).first(5)));
    CHECK(loaded.get_scalar<T>("scalar") == values[5]);
    CHECK(loaded.get_scalar<T>("ones") == values[7]);  // any one-element shape is a scalar
    CHECK(loaded.get<T>("empty").empty());
    CHECK(loaded.get<T>("empty_matrix").empty());
    CHECK(aligned64(loaded.get<T>("tensor").data()));
    CHECK(aligned64(loaded.get<T>("vector").data()));
    std::vector<T> out(24);
    loaded.get_into<T>("tensor", out);
    CHECK(out == values);
  };
  check(archive);

  const Bytes bytes = archive.to_bytes();
  const Archive from_memory = Archive::from_bytes(bytes, "memory.npz");
  check(from_memory);
  CHECK(from_memory.source() == "memory.npz");

  TempDir dir;
  const fs::path path = dir / "round_trip.npz";
  archive.save(path);
  const Archive from_file = Archive::load(path);
  check(from_file);
  CHECK(from_file.source() == path.string());
  CHECK(read_bytes(path) == bytes);
}

TEST_CASE("Archive keeps the exact bits of NaN payloads, infinities, -0.0 and subnormals", "[core][archive]") {
  const std::vector<std::uint32_t> float_bits{0x7fc00000u, 0x7fc12345u, 0xffc00001u, 0x7f800001u, 0x7f800000u,
                                              0xff800000u, 0x80000000u, 0x00000001u, 0x3f800000u};
  const std::vector<std::uint64_t> double_bits{0x7ff8000000000000ull, 0x7ff8000000abcdefull, 0xfff0000000000001ull,
                                               0x7ff0000000000000ull, 0xfff0000000000000ull, 0x8000000000000000ull,
                                               0x0000000000000001ull};
  std::vector<float> floats(float_bits.size());
  std::memcpy(floats.data(), float_bits.data(), float_bits.size() * sizeof(float));
  std::vector<double> doubles(double_bits.size());
  std::memcpy(doubles.data(), double_bits.data(), double_bits.size() * sizeof(double));

  Archive archive;
  archive.put("f", floats);
  archive.put("d", doubles);
  const Archive loaded = Archive::from_bytes(archive.to_bytes(), "bits.npz");
  std::vector<std::uint32_t> float_back(float_bits.size());
  std::memcpy(float_back.data(), loaded.get<float>("f").data(), float_back.size() * sizeof(float));
  std::vector<std::uint64_t> double_back(double_bits.size());
  std::memcpy(double_back.data(), loaded.get<double>("d").data(), double_back.size() * sizeof(double));
  CHECK(float_back == float_bits);
  CHECK(double_back == double_bits);
  CHECK(loaded == archive);  // equality compares bits: NaN equals itself here
}

TEST_CASE("Strings are stored as uint8 arrays and come back byte for byte", "[core][archive]") {
  constexpr char raw[] = "caf\xc3\xa9 \0 zero\n";
  const std::string text(raw, sizeof raw - 1);
  Archive archive;
  archive.put_string("note", text);
  archive.put_string("empty", "");
  CHECK(archive.dtype("note") == "|u1");
  CHECK(archive.shape("note") == std::vector<std::ptrdiff_t>{13});
  CHECK(archive.shape("empty") == std::vector<std::ptrdiff_t>{0});
  const Archive loaded = Archive::from_bytes(archive.to_bytes(), "strings.npz");
  CHECK(loaded.get_string("note") == text);
  CHECK(loaded.get_string("empty").empty());
}

TEST_CASE("Putting an existing name replaces the array in place", "[core][archive]") {
  Archive archive;
  archive.put("x", std::vector<float>{1, 2, 3});
  archive.put_scalar("y", 4.0);
  archive.put("x", std::vector<std::int64_t>{5, 6, 7, 8}, {2, 2});
  CHECK(archive.size() == 2);
  CHECK(archive.names() == std::vector<std::string>{"x", "y"});  // x keeps its place
  CHECK(archive.dtype("x") == "<i8");
  CHECK(archive.shape("x") == std::vector<std::ptrdiff_t>{2, 2});
  const Archive loaded = Archive::from_bytes(archive.to_bytes(), "replaced.npz");
  CHECK(loaded.names() == std::vector<std::string>{"x", "y"});
  const auto x = loaded.get<std::int64_t>("x");
  CHECK(std::vector<std::int64_t>(x.begin(), x.end()) == std::vector<std::int64_t>{5, 6, 7, 8});
  CHECK(loaded.get_scalar<double>("y") == 4.0);
}

TEST_CASE("The same archive always gives the same bytes", "[core][archive]") {
  const Bytes first = small_archive().to_bytes();
  const Bytes second = small_archive().to_bytes();
  CHECK(first == second);
  // Loading and writing again changes nothing either.
  CHECK(Archive::from_bytes(first, "a.npz").to_bytes() == first);

  TempDir dir;
  small_archive().save(dir / "a.npz");
  small_archive().save(dir / "b.npz");
  CHECK(read_bytes(dir / "a.npz") == first);
  CHECK(read_bytes(dir / "b.npz") == first);

  Archive empty;
  CHECK(empty.to_bytes().size() == 22);  // just the end-of-central-directory record
  CHECK(Archive::from_bytes(empty.to_bytes(), "empty.npz").empty());
}

TEST_CASE("Archive layout: NumPy-style headers, fixed timestamps, data on 64-byte boundaries", "[core][archive]") {
  Archive archive;
  archive.put("matrix", sample<float>(12), {3, 4});
  archive.put("vector", sample<double>(5));
  archive.put_scalar<std::int64_t>("step", 3);
  archive.put("a_name_long_enough_to_move_the_padding", sample<std::uint8_t>(7));
  const Bytes bytes = archive.to_bytes();

  // Local header of the first member: signature, version 2.0, no flags, stored, 1980-01-01 00:00.
  CHECK(std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 14) ==
        std::vector<std::uint8_t>{'P', 'K', 3, 4, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0});

  const std::vector<std::size_t> starts = find_all(bytes, npy_magic);
  REQUIRE(starts.size() == 4);
  const std::vector<std::string> dicts{"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }",
                                       "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }",
                                       "{'descr': '<i8', 'fortran_order': False, 'shape': (), }",
                                       "{'descr': '|u1', 'fortran_order': False, 'shape': (7,), }"};
  for (std::size_t i = 0; i < starts.size(); ++i) {
    const std::size_t at = starts[i];
    CHECK(at % 64 == 0);
    CHECK(bytes[at + 6] == 1);  // version 1.0
    CHECK(bytes[at + 7] == 0);
    const std::size_t header_length = bytes[at + 8] | (std::size_t{bytes[at + 9]} << 8);
    CHECK((10 + header_length) % 64 == 0);  // the array data is aligned too
    const std::string header(bytes.begin() + static_cast<std::ptrdiff_t>(at + 10),
                             bytes.begin() + static_cast<std::ptrdiff_t>(at + 10 + header_length));
    CHECK(header.starts_with(dicts[i]));
    CHECK(header.back() == '\n');
    CHECK(header.find_first_not_of(' ', dicts[i].size()) == header.size() - 1);
  }
  // In memory every array is 64-byte aligned as well.
  CHECK(aligned64(archive.get<double>("vector").data()));
  CHECK(aligned64(Archive::from_bytes(bytes, "x.npz").get<std::uint8_t>("a_name_long_enough_to_move_the_padding").data()));
}

TEST_CASE("NumPy reads what Archive writes", "[core][archive][numpy]") {
  require_numpy();
  TempDir dir;
  Archive archive;
  std::vector<float> weights = sample<float>(12);
  weights[1] = std::bit_cast<float>(0x7fc12345u);  // NaN with a payload
  weights[2] = -0.0f;
  weights[3] = std::numeric_limits<float>::infinity();
  archive.put("weights", weights, {3, 4});
  archive.put("moments", sample<double>(6), {2, 1, 3});
  archive.put("ids", sample<std::int64_t>(5));
  archive.put("pixels", sample<std::uint8_t>(16), {4, 4});
  archive.put("i32", sample<std::int32_t>(4));
  archive.put("u32", sample<std::uint32_t>(4));
  archive.put("u64", sample<std::uint64_t>(3));
  archive.put_scalar<std::int64_t>("step", 12345);
  archive.put_scalar("lr", 0.125);
  archive.put<float>("nothing", std::span<const float>{}, {0, 3});
  archive.put_string("text", "conv1.weight \xe2\x86\x92 fc3.bias");
  archive.put("temp\xc3\xa9rature", std::vector<float>{1.5f});  // a UTF-8 name
  const fs::path path = dir / "ours.npz";
  archive.save(path);

  const std::string output = run_python(dir, R"(
import sys, zipfile
import numpy as np
path = sys.argv[1]
with zipfile.ZipFile(path) as z:
    print("testzip;" + str(z.testzip()))
    print("methods;" + ",".join(sorted({str(i.compress_type) for i in z.infolist()})))
with np.load(path) as f:
    for key in f.files:
        a = f[key]
        print(";".join([key.encode().hex(), a.dtype.str, ",".join(str(n) for n in a.shape), a.tobytes().hex()]))
    print("text;" + bytes(f["text"]).decode().encode().hex())
    print("step;" + repr(f["step"].item()))
    print("order;" + ",".join(k.encode().hex() for k in f.files))
)",
                                        path.string());
  const auto found = rows(output);
  REQUIRE(found.count("testzip") == 1);
  CHECK(found.at("testzip") == std::vector<std::string>{"None"});  // every CRC checks out
  CHECK(found.at("methods") == std::vector<std::string>{"0"});     // stored
  std::string order;
  for (const std::string& name : archive.names()) {
    const std::string key = hex_of(npz::as_bytes(name));
    order += distopt::message(order.empty() ? "" : ",", key);
    INFO("array " << name);
    REQUIRE(found.count(key) == 1);
    const std::vector<std::string>& row = found.at(key);
    REQUIRE(row.size() == 3);
    CHECK(row[0] == archive.dtype(name));
    CHECK(row[1] == joined(archive.shape(name)));
    std::string expected;
    const std::string_view dtype = archive.dtype(name);
    if (dtype == "<f4") expected = hex_of(archive.get<float>(name));
    if (dtype == "<f8") expected = hex_of(archive.get<double>(name));
    if (dtype == "<i4") expected = hex_of(archive.get<std::int32_t>(name));
    if (dtype == "<i8") expected = hex_of(archive.get<std::int64_t>(name));
    if (dtype == "|u1") expected = hex_of(archive.get<std::uint8_t>(name));
    if (dtype == "<u4") expected = hex_of(archive.get<std::uint32_t>(name));
    if (dtype == "<u8") expected = hex_of(archive.get<std::uint64_t>(name));
    CHECK(row[2] == expected);
  }
  CHECK(found.at("order") == std::vector<std::string>{order});
  CHECK(found.at("text") == std::vector<std::string>{hex_of(npz::as_bytes(archive.get_string("text")))});
  CHECK(found.at("step") == std::vector<std::string>{"12345"});

  // An empty archive is a valid, empty .npz.
  Archive().save(dir / "empty.npz");
  CHECK(run_python(dir, "import numpy as np\nprint(len(np.load('empty.npz').files))\n") == "0\n");
}

TEST_CASE("Archive reads what NumPy writes: np.savez, ZIP64 records, data descriptors, .npy 2.0", "[core][archive][numpy]") {
  require_numpy();
  TempDir dir;
  run_python(dir, R"(
import io, zipfile
import numpy as np
a = (np.arange(12, dtype=np.float32) / 7).reshape(3, 4)
a[0, 1] = np.nan; a[1, 2] = -0.0; a[2, 3] = np.inf; a[2, 0] = -np.inf
arrays = dict(
    weights=a,
    b=np.arange(6, dtype=np.float64) * 0.1,
    c=np.array([-2**40, -1, 0, 1, 2**62], dtype=np.int64),
    d=np.arange(250, 256, dtype=np.uint8),
    scalar=np.array(2.5),
    i32=np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 12,
    u32=np.array([0, 1, 2**32 - 1], dtype=np.uint32),
    u64=np.array([0, 2**64 - 1], dtype=np.uint64),
    empty=np.zeros((0,), dtype=np.float32),
)
np.savez("numpy.npz", **arrays)

# A stream that cannot seek: zipfile then writes data descriptors after each member.
class Stream:
    def __init__(self, f): self.f = f
    def read(self, n=-1): raise OSError("write-only")
    def write(self, b): return self.f.write(b)
    def flush(self): self.f.flush()
with open("stream.npz", "wb") as raw:
    np.savez(Stream(raw), **arrays)

# .npy version 2.0 headers, placed in a zip by hand.
with zipfile.ZipFile("v2.npz", "w", zipfile.ZIP_STORED) as z:
    for key, value in arrays.items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, value, version=(2, 0))
        z.writestr(key + ".npy", buf.getvalue())

# ZIP64 everywhere: with the limit at 0, zipfile writes ZIP64 extra fields in the central
# directory and the ZIP64 end records, as it would for a file over 4 GiB.
zipfile.ZIP64_LIMIT = 0
np.savez("zip64.npz", **arrays)
with zipfile.ZipFile("zip64.npz") as z:
    assert z.testzip() is None
for name in ("numpy.npz", "stream.npz", "v2.npz", "zip64.npz"):
    with np.load(name) as f:
        assert np.array_equal(f["c"], arrays["c"])
)");

  std::vector<float> weights(12);
  for (std::size_t i = 0; i < 12; ++i) weights[i] = static_cast<float>(i) / 7.0f;
  weights[1] = std::numeric_limits<float>::quiet_NaN();
  weights[6] = -0.0f;
  weights[11] = std::numeric_limits<float>::infinity();
  weights[8] = -std::numeric_limits<float>::infinity();
  std::vector<double> b(6);
  for (std::size_t i = 0; i < 6; ++i) b[i] = static_cast<double>(i) * 0.1;
  std::vector<std::int32_t> i32(24);
  for (std::size_t i = 0; i < 24; ++i) i32[i] = static_cast<std::int32_t>(i) - 12;

  // Past 4 GiB the 32-bit fields of the end record hold only the 0xFFFF / 0xFFFFFFFF markers and
  // the ZIP64 record the real values: marking them so leaves the reader only the ZIP64 path.
  Bytes marked = read_bytes(dir / "zip64.npz");
  REQUIRE(find_all(marked, end_signature).back() == marked.size() - 22);
  for (std::size_t i = marked.size() - 22 + 8; i < marked.size() - 2; ++i) marked[i] = 0xFF;
  write_bytes(dir / "zip64_marked.npz", marked);

  for (const std::string file : {"numpy.npz", "stream.npz", "v2.npz", "zip64.npz", "zip64_marked.npz"}) {
    INFO("file " << file);
    const Archive loaded = Archive::load(dir / file);
    CHECK(loaded.names() ==
          std::vector<std::string>{"weights", "b", "c", "d", "scalar", "i32", "u32", "u64", "empty"});
    CHECK(loaded.shape("weights") == std::vector<std::ptrdiff_t>{3, 4});
    const auto w = loaded.get<float>("weights");
    for (std::size_t i = 0; i < 12; ++i) {
      INFO("weights[" << i << "]");
      if (i == 1) CHECK(std::isnan(w[i]));
      else CHECK(std::bit_cast<std::uint32_t>(w[i]) == std::bit_cast<std::uint32_t>(weights[i]));
    }
    CHECK(same_bits(loaded.get<double>("b"), std::span<const double>(b)));
    const auto c = loaded.get<std::int64_t>("c");
    CHECK(std::vector<std::int64_t>(c.begin(), c.end()) ==
          std::vector<std::int64_t>{-(std::int64_t{1} << 40), -1, 0, 1, std::int64_t{1} << 62});
    const auto d = loaded.get<std::uint8_t>("d");
    CHECK(std::vector<std::uint8_t>(d.begin(), d.end()) == std::vector<std::uint8_t>{250, 251, 252, 253, 254, 255});
    CHECK(loaded.shape("scalar").empty());
    CHECK(loaded.get_scalar<double>("scalar") == 2.5);
    CHECK(loaded.shape("i32") == std::vector<std::ptrdiff_t>{2, 3, 4});
    CHECK(same_bits(loaded.get<std::int32_t>("i32"), std::span<const std::int32_t>(i32)));
    const auto u32 = loaded.get<std::uint32_t>("u32");
    CHECK(std::vector<std::uint32_t>(u32.begin(), u32.end()) == std::vector<std::uint32_t>{0, 1, 0xFFFFFFFFu});
    const auto u64 = loaded.get<std::uint64_t>("u64");
    CHECK(std::vector<std::uint64_t>(u64.begin(), u64.end()) ==
          std::vector<std::uint64_t>{0, std::numeric_limits<std::uint64_t>::max()});
    CHECK(loaded.shape("empty") == std::vector<std::ptrdiff_t>{0});
    CHECK(loaded.get<float>("empty").empty());
    CHECK(aligned64(loaded.get<double>("b").data()));
  }
}

TEST_CASE("Archive rejects the .npz files NumPy can write but it does not support", "[core][archive][numpy]") {
  require_numpy();
  TempDir dir;
  run_python(dir, R"(
import io, zipfile
import numpy as np
a = np.arange(6, dtype=np.float32).reshape(2, 3)
np.savez_compressed("compressed.npz", w=a)
def zip_with(name, member, payload):
    with zipfile.ZipFile(name, "w", zipfile.ZIP_STORED) as z:
        z.writestr(member, payload)
def npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()
zip_with("fortran.npz", "f.npy", npy(np.asfortranarray(a)))
np.savez("int16.npz", x=np.arange(3, dtype=np.int16))
np.savez("bigendian.npz", x=np.arange(3, dtype=">f4"))
np.savez("structured.npz", x=np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))
zip_with("notnpy.npz", "x.npy", b"hello, not an array")
zip_with("text.npz", "notes.txt", b"hi")
np.savez("slash.npz", **{"a/b": a})
zip_with("short.npz", "s.npy", npy(a)[:-4])
)");
  const auto error_of = [&](const std::string& file) {
    try {
      (void)Archive::load(dir / file);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    FAIL("loading " << file << " did not throw std::runtime_error");
    return std::string();
  };
  const auto prefix = [&](const std::string& file) { return (dir / file).string() + ": "; };
  CHECK_THAT(error_of("compressed.npz"),
             StartsWith(prefix("compressed.npz")) &&
                 Contains("member 'w.npy' at byte 0 is compressed (method 8); only stored members are supported"));
  CHECK_THAT(error_of("fortran.npz"), StartsWith(prefix("fortran.npz")) && Contains("member 'f.npy' at byte ") &&
                                          Contains("is stored in Fortran order"));
  CHECK_THAT(error_of("int16.npz"), StartsWith(prefix("int16.npz")) && Contains("member 'x.npy' at byte") &&
                                        Contains("has dtype <i2, which is not supported"));
  CHECK_THAT(error_of("bigendian.npz"), Contains("has dtype >f4, which is not supported"));
  CHECK_THAT(error_of("structured.npz"), Contains("member 'x.npy' at byte") && Contains("structured dtype"));
  CHECK_THAT(error_of("notnpy.npz"), Contains("member 'x.npy' at byte") && Contains("is not a .npy array"));
  CHECK_THAT(error_of("text.npz"), Contains("member 'notes.txt' at byte 0 is not a .npy array"));
  CHECK_THAT(error_of("slash.npz"), Contains("member 'a/b.npy' at byte 0 gives the array name 'a/b', which contains '/'"));
  CHECK_THAT(error_of("short.npz"), Contains("member 's.npy' holds 20 bytes of array data at byte") &&
                                        Contains("shape [2, 3] of <f4 needs 24"));
}

TEST_CASE("Lookups name the file, the field, and what was expected", "[core][archive]") {
  TempDir dir;
  const fs::path path = dir / "checkpoint.npz";
  Archive saved;
  saved.put("exp_avg", sample<double>(6), {2, 3});
  saved.put_scalar<std::int64_t>("step", 10);
  saved.save(path);
  const Archive loaded = Archive::load(path);

  REQUIRE_THROWS_MATCHES(loaded.get<float>("exp_avg"), std::invalid_argument,
                         Catch::Matchers::Message(path.string() + ": field 'exp_avg' has dtype <f8, expected <f4"));
  REQUIRE_THROWS_MATCHES(loaded.get<double>("exp_avg_sq"), std::invalid_argument,
                         Catch::Matchers::Message(path.string() + ": no field 'exp_avg_sq' (fields: exp_avg, step)"));
  std::vector<double> small(5);
  REQUIRE_THROWS_MATCHES(loaded.get_into<double>("exp_avg", small), std::invalid_argument,
                         Catch::Matchers::Message(path.string() +
                                                  ": field 'exp_avg' holds 6 elements (shape [2, 3]), expected 5"));
  REQUIRE_THROWS_WITH(loaded.get_scalar<double>("exp_avg"), Contains("field 'exp_avg' holds 6 elements (shape [2, 3]), expected a single value"));
  REQUIRE_THROWS_WITH(loaded.get_string("step"), Contains("field 'step' has dtype <i8, expected |u1"));
  REQUIRE_THROWS_AS(loaded.shape("missing"), std::invalid_argument);
  REQUIRE_THROWS_AS(loaded.dtype("missing"), std::invalid_argument);
  CHECK(loaded.contains("exp_avg"));
  CHECK_FALSE(loaded.contains("exp_avg_sq"));
  CHECK(loaded.get_scalar<std::int64_t>("step") == 10);

  // An archive built in memory has no file to name.
  Archive memory;
  REQUIRE_THROWS_MATCHES(memory.get<float>("w"), std::invalid_argument,
                         Catch::Matchers::Message("Archive: no field 'w' (fields: none)"));
}

TEST_CASE("Bad names and shapes are refused and leave the archive unchanged", "[core][archive]") {
  Archive archive;
  archive.put("kept", std::vector<float>{1, 2});
  const std::vector<float> five(5, 1.0f);
  REQUIRE_THROWS_MATCHES(archive.put("", five), std::invalid_argument,
                         Catch::Matchers::Message("Archive::put: name '' is empty"));
  REQUIRE_THROWS_WITH(archive.put("conv1/weight", five), Contains("name 'conv1/weight' contains '/'"));
  REQUIRE_THROWS_WITH(archive.put(std::string("a\0b", 3), five), Contains("name 'a\\x00b' contains a NUL byte"));
  REQUIRE_THROWS_WITH(archive.put_scalar("bad\xff", 1.0f), Contains("name 'bad\\xff' is not valid UTF-8"));
  REQUIRE_THROWS_WITH(archive.put_string("x/y", "text"), Contains("name 'x/y' contains '/'"));
  REQUIRE_THROWS_WITH(archive.put(std::string(65532, 'n'), five), Contains("is 65532 bytes long"));
  REQUIRE_THROWS_WITH(archive.put("kept", five, {2, 3}),
                      Contains("array 'kept' has shape [2, 3] (6 elements) but 5 values were given"));
  REQUIRE_THROWS_WITH(archive.put("kept", five, {-1, -5}), Contains("array 'kept' has dimension -1 at axis 0"));
  REQUIRE_THROWS_WITH(archive.put("kept", five, std::vector<std::ptrdiff_t>(33, 1)),
                      Contains("has 33 dimensions; NumPy reads at most 32"));
  REQUIRE_THROWS_WITH(archive.put("kept", five, {std::ptrdiff_t{1} << 40, std::ptrdiff_t{1} << 40}),
                      Contains("too many elements"));
  CHECK(archive.names() == std::vector<std::string>{"kept"});
  CHECK(archive.shape("kept") == std::vector<std::ptrdiff_t>{2});
  CHECK(archive.get<float>("kept")[1] == 2.0f);

  // The longest name that fits the ZIP name field, and a UTF-8 one, round-trip.
  archive.put(std::string(65531, 'n'), five);
  archive.put("\xce\xb2_1", five);  // β_1
  const Archive loaded = Archive::from_bytes(archive.to_bytes(), "names.npz");
  CHECK(loaded == archive);
}

TEST_CASE("More arrays than a zip archive without ZIP64 holds is an error before any output", "[core][archive]") {
  Archive archive;
  for (int i = 0; i < 65535; ++i) archive.put_scalar(std::to_string(i), static_cast<std::uint8_t>(i));
  REQUIRE_THROWS_MATCHES(archive.to_bytes(), std::runtime_error,
                         Catch::Matchers::Message("Archive::to_bytes: 65535 arrays; an archive written without ZIP64 "
                                                  "holds at most 65534"));
  TempDir dir;
  REQUIRE_THROWS_WITH(archive.save(dir / "many.npz"), Contains("many.npz") && Contains("holds at most 65534"));
  CHECK(fs::is_empty(dir.path()));
}

TEST_CASE("Truncated archives fail with the file name and the byte where they end", "[core][archive]") {
  const Bytes bytes = small_archive().to_bytes();
  const std::vector<std::size_t> starts = find_all(bytes, npy_magic);  // w, step, note
  REQUIRE(starts.size() == 3);
  const std::vector<std::size_t> directories = find_all(bytes, central_signature);
  REQUIRE(directories.size() == 3);
  const std::size_t directory = directories.front();
  const std::size_t end_record = find_all(bytes, end_signature).back();
  const std::size_t w_header = 10 + (bytes[starts[0] + 8] | (std::size_t{bytes[starts[0] + 9]} << 8));
  const std::size_t w_size = w_header + 100 * sizeof(float);

  const auto error_at = [&](std::size_t cut) {
    try {
      (void)Archive::from_bytes(std::span<const std::uint8_t>(bytes).first(cut), "test.npz");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    FAIL("a copy cut at byte " << cut << " loaded without error");
    return std::string();
  };
  // Every proper prefix fails, naming the file and a byte.
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    INFO("cut at byte " << cut);
    const std::string error = error_at(cut);
    CHECK_THAT(error, StartsWith("test.npz: ") && Contains("byte"));
  }
  CHECK(error_at(starts[0] + 200) == distopt::message("test.npz: truncated at byte ", starts[0] + 200,
                                                      " (member 'w.npy' needs ", w_size, " bytes of data from byte ",
                                                      starts[0], ")"));
  CHECK(error_at(20) == "test.npz: truncated at byte 20 (inside the local header at byte 0)");
  CHECK(error_at(directory) == distopt::message("test.npz: truncated at byte ", directory,
                                                " (after member 'note.npy'; the central directory that should "
                                                "follow is missing)"));
  CHECK(error_at(directory + 50) == distopt::message("test.npz: truncated at byte ", directory + 50,
                                                     " (inside the central directory, which starts at byte ",
                                                     directory, ")"));
  CHECK(error_at(end_record + 10) == distopt::message("test.npz: truncated at byte ", end_record + 10,
                                                      " (inside the end-of-central-directory records at byte ",
                                                      end_record, ")"));
  CHECK(error_at(0) == "test.npz: not a zip archive (no end-of-central-directory record in its 0 bytes)");

  // The same through a file on disk.
  TempDir dir;
  const fs::path path = dir / "state.npz";
  write_bytes(path, bytes);
  fs::resize_file(path, directory + 10);
  REQUIRE_THROWS_MATCHES(Archive::load(path), std::runtime_error,
                         Catch::Matchers::Message(distopt::message(path.string(), ": truncated at byte ", directory + 10,
                                                                   " (inside the central directory, which starts at byte ",
                                                                   directory, ")")));
}

TEST_CASE("A flipped data byte is a CRC-32 error naming the member and its offset", "[core][archive]") {
  const Bytes good = small_archive().to_bytes();
  const std::size_t w = find_all(good, npy_magic).front();
  for (const std::size_t offset : {std::size_t{3}, std::size_t{20}, std::size_t{128 + 17}}) {
    Bytes bad = good;
    bad[w + offset] ^= 0x10;
    REQUIRE_THROWS_MATCHES(Archive::from_bytes(bad, "state.npz"), std::runtime_error,
                           Catch::Matchers::Predicate<std::runtime_error>(
                               [&](const std::runtime_error& e) {
                                 return std::string(e.what()).starts_with(
                                     distopt::message("state.npz: CRC-32 mismatch in member 'w.npy' at byte ", w,
                                                      " (stored 0x"));
                               },
                               "a CRC-32 error for w.npy"));
  }
}

TEST_CASE("Files that are not zip archives are named as such", "[core][archive]") {
  TempDir dir;
  const fs::path path = dir / "notes.npz";
  const std::string text = "this is plain text, long enough to hold an end record, but it has none";
  write_bytes(path, npz::as_bytes(text));
  REQUIRE_THROWS_MATCHES(Archive::load(path), std::runtime_error,
                         Catch::Matchers::Message(distopt::message(path.string(), ": not a zip archive (no "
                                                                   "end-of-central-directory record in its ",
                                                                   text.size(), " bytes)")));
  REQUIRE_THROWS_WITH(Archive::load(dir / "missing.npz"),
                      Contains((dir / "missing.npz").string()) && Contains("No such file or directory"));
  REQUIRE_THROWS_WITH(Archive::load(dir.path()), Contains(distopt::message("cannot read '", dir.path().string(), "'")));
}

TEST_CASE("Corrupted archives fail with std::runtime_error and never read out of bounds", "[core][archive]") {
  // Under the sanitize preset this doubles as a fuzz test of the reader.
  const Bytes good = small_archive().to_bytes();
  const Archive original = small_archive();
  const auto attempt = [&](const Bytes& bytes) {
    try {
      return Archive::from_bytes(bytes, "fuzz.npz") == original;
    } catch (const std::runtime_error& e) {
      REQUIRE_THAT(std::string(e.what()), StartsWith("fuzz.npz: "));
      return false;
    }
  };
  // The .npy bytes of every member (header and data): a change there must never go unnoticed.
  std::vector<bool> guarded(good.size(), false);
  for (const std::size_t start : find_all(good, npy_magic)) {
    const std::size_t header = 10 + (good[start + 8] | (std::size_t{good[start + 9]} << 8));
    const std::string dict(good.begin() + static_cast<std::ptrdiff_t>(start + 10),
                           good.begin() + static_cast<std::ptrdiff_t>(start + header));
    // w is 10x10 float, step one int64, note the 5 bytes of "hello".
    const std::size_t data = dict.find("(10, 10)") != std::string::npos ? 400
                             : dict.find("'<i8'") != std::string::npos ? 8
                                                                       : 5;
    const std::size_t extent = header + data;
    for (std::size_t i = start; i < start + extent; ++i) guarded[i] = true;
  }
  for (std::size_t at = 0; at < good.size(); ++at) {
    for (const std::uint8_t mask : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xFF}}) {
      Bytes bad = good;
      bad[at] ^= mask;
      const bool unnoticed = attempt(bad);
      if (guarded[at]) {
        INFO("flip of byte " << at << " by " << int{mask});
        CHECK_FALSE(unnoticed);
      }
    }
  }
  std::mt19937_64 engine(7);
  for (int round = 0; round < 3000; ++round) {
    Bytes bad = good;
    const int edits = 1 + static_cast<int>(engine() % 8);
    for (int e = 0; e < edits; ++e) bad[engine() % bad.size()] = static_cast<std::uint8_t>(engine());
    if (engine() % 4 == 0) bad.resize(engine() % bad.size());
    attempt(bad);
  }
}

TEST_CASE("save into a directory that does not exist names the path and leaves nothing behind", "[core][archive]") {
  TempDir dir;
  const fs::path path = dir / "missing" / "state.npz";
  REQUIRE_THROWS_MATCHES(small_archive().save(path), std::runtime_error,
                         Catch::Matchers::Predicate<std::runtime_error>(
                             [&](const std::runtime_error& e) {
                               const std::string what = e.what();
                               return what.find(distopt::message("'", path.string(), "'")) != std::string::npos &&
                                      what.find("No such file or directory") != std::string::npos;
                             },
                             "names the path and ENOENT"));
  CHECK(fs::is_empty(dir.path()));
  REQUIRE_THROWS_WITH(small_archive().save(dir.path() / ""), Contains("names a directory, not a file"));
}

TEST_CASE("save replaces an existing file whole, and a failed save leaves the old one intact", "[core][archive]") {
  TempDir dir;
  const fs::path path = dir / "state.npz";
  small_archive().save(path);
  const Bytes old_bytes = read_bytes(path);

  Archive bigger = small_archive();
  bigger.put("m", sample<float>(50000));
  bigger.save(path);
  CHECK(Archive::load(path) == bigger);
  CHECK(temporaries(dir.path()).empty());
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);

  small_archive().save(path);
  REQUIRE(read_bytes(path) == old_bytes);

  SECTION("a write that fails half way (file size limit) keeps the old file") {
    // RLIMIT_FSIZE makes write() fail with EFBIG once the temporary file passes 64 KiB, even as
    // root; SIGXFSZ would otherwise end the process.
    struct Limit {
      rlimit saved{};
      void (*handler)(int) = SIG_DFL;
      Limit() {
        REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
        handler = std::signal(SIGXFSZ, SIG_IGN);
        rlimit lowered = saved;
        lowered.rlim_cur = 64 * 1024;
        REQUIRE(::setrlimit(RLIMIT_FSIZE, &lowered) == 0);
      }
      ~Limit() {
        ::setrlimit(RLIMIT_FSIZE, &saved);
        std::signal(SIGXFSZ, handler);
      }
    };
    {
      Limit limit;
      REQUIRE_THROWS_MATCHES(bigger.save(path), std::runtime_error,
                             Catch::Matchers::Predicate<std::runtime_error>(
                                 [&](const std::runtime_error& e) {
                                   const std::string what = e.what();
                                   return what.starts_with(distopt::message("Archive::save: cannot write '", path.string(), "'")) &&
                                          what.find("File too large") != std::string::npos;
                                 },
                                 "names the path and EFBIG"));
    }
    CHECK(read_bytes(path) == old_bytes);
    CHECK(temporaries(dir.path()).empty());
  }
  SECTION("a rename that fails (the target is a directory) keeps everything as it was") {
    const fs::path target = dir / "occupied";
    fs::create_directory(target);
    write_bytes(target / "inside", npz::as_bytes("keep me"));
    REQUIRE_THROWS_WITH(bigger.save(target),
                        StartsWith(distopt::message("Archive::save: cannot rename the temporary file over '", target.string(), "'")));
    CHECK(fs::is_directory(target));
    CHECK(read_text(target / "inside") == "keep me");
    CHECK(read_bytes(path) == old_bytes);
    CHECK(temporaries(dir.path()).empty());
  }
}

namespace {

// A .npz whose members nest: member i's array is member i + 1's local header and data (what the
// npz fuzzer's author built to show quadratic memory from a linear file). Every header, CRC and
// directory entry is valid; only the overlap is wrong.
Bytes nested_members(int n) {
  const auto le = [](Bytes& out, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  };
  const auto npy_u1 = [](const Bytes& payload) {
    const std::string dict = "{'descr':'|u1','fortran_order':False,'shape':(" + std::to_string(payload.size()) + ",)}";
    Bytes out{0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<std::uint8_t>(dict.size()), static_cast<std::uint8_t>(dict.size() >> 8)};
    out.insert(out.end(), dict.begin(), dict.end());
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
  };
  struct Entry {
    std::string name;
    std::uint32_t crc;
    std::size_t size, offset;
  };
  std::vector<Entry> entries;
  Bytes blob;
  for (int i = n - 1; i >= 0; --i) {  // innermost first
    const std::string name = distopt::message("a", i, ".npy");
    const Bytes data = npy_u1(blob);
    const auto crc = static_cast<std::uint32_t>(::crc32(0, data.data(), static_cast<uInt>(data.size())));
    Bytes head;
    le(head, 0x04034b50, 4), le(head, 20, 2), le(head, 0, 2), le(head, 0, 2), le(head, 0, 2), le(head, 0x21, 2);
    le(head, crc, 4), le(head, data.size(), 4), le(head, data.size(), 4), le(head, name.size(), 2), le(head, 0, 2);
    head.insert(head.end(), name.begin(), name.end());
    for (auto& e : entries) e.offset += head.size() + data.size() - blob.size();
    entries.insert(entries.begin(), {name, crc, data.size(), 0});
    head.insert(head.end(), data.begin(), data.end());
    blob = head;
  }
  Bytes central;
  for (const Entry& e : entries) {
    le(central, 0x02014b50, 4), le(central, 20, 2), le(central, 20, 2), le(central, 0, 2), le(central, 0, 2);
    le(central, 0, 2), le(central, 0x21, 2), le(central, e.crc, 4), le(central, e.size, 4), le(central, e.size, 4);
    le(central, e.name.size(), 2), le(central, 0, 2), le(central, 0, 2), le(central, 0, 2), le(central, 0, 2);
    le(central, 0, 4), le(central, e.offset, 4);
    central.insert(central.end(), e.name.begin(), e.name.end());
  }
  Bytes out = blob;
  out.insert(out.end(), central.begin(), central.end());
  le(out, 0x06054b50, 4), le(out, 0, 2), le(out, 0, 2), le(out, static_cast<std::uint64_t>(n), 2);
  le(out, static_cast<std::uint64_t>(n), 2), le(out, central.size(), 4), le(out, blob.size(), 4), le(out, 0, 2);
  return out;
}

}  // namespace

TEST_CASE("Members that share bytes are refused: a linear file cannot hold quadratic arrays", "[core][archive]") {
  const Bytes one = nested_members(1);
  CHECK(distopt::Archive::from_bytes(one, "one.npz").names().size() == 1);  // the builder makes valid files
  const Bytes nested = nested_members(4);
  CHECK_THROWS_AS(distopt::Archive::from_bytes(nested, "nested.npz"), std::runtime_error);
  CHECK_THROWS_WITH(distopt::Archive::from_bytes(nested, "nested.npz"),
                    Contains("nested.npz") && Contains("'a0.npy'") && Contains("overlaps member 'a1.npy'"));
}

TEST_CASE("Shapes with a zero extent and 63-bit extents save and load alike", "[core][archive]") {
  for (const std::vector<std::ptrdiff_t>& shape :
       {std::vector<std::ptrdiff_t>{std::ptrdiff_t{1} << 62, 0}, std::vector<std::ptrdiff_t>{0, std::ptrdiff_t{1} << 62},
        std::vector<std::ptrdiff_t>{0, std::numeric_limits<std::ptrdiff_t>::max()}}) {
    INFO("shape " << distopt::message(shape));
    distopt::Archive a;
    a.put<float>("x", std::vector<float>{}, shape);
    const auto b = distopt::Archive::from_bytes(a.to_bytes(), "written.npz");
    CHECK(b == a);
    CHECK(b.shape("x") == shape);
  }
  distopt::Archive a;
  CHECK_THROWS_WITH(a.put<float>("x", std::vector<float>{}, {std::ptrdiff_t{1} << 40, std::ptrdiff_t{1} << 40}),
                    Contains("too many elements"));
}
