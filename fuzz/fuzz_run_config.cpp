// libFuzzer target for the reader of a run folder's config.json (train::RunConfig::parse, what
// RunConfig::read does after reading the file): a file another process or a user may have left
// damaged. See fuzz/README.md.
//
// The reader may throw only std::invalid_argument naming the source; anything else escapes to
// libFuzzer and is reported. When it succeeds, writing the configuration and parsing it again
// must give the same configuration, and a violation traps.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include "distopt/train/run_folder.hpp"

namespace {

constexpr std::string_view source_name = "<fuzz input>";

// Not assert(): the release build defines NDEBUG, and a broken invariant must always stop the run.
void check(bool invariant) {
  if (!invariant) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const distopt::train::RunConfig config = distopt::train::RunConfig::parse(text, source_name);
    check(distopt::train::RunConfig::parse(config.json(), source_name) == config);
  } catch (const std::invalid_argument& e) {
    check(std::string_view(e.what()).find(source_name) != std::string_view::npos);
  }
  return 0;
}
