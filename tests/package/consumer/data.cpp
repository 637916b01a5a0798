// A consumer of distopt::data: the checkpoint format and the data pipeline (xtensor, zlib).
#include <distopt/core/archive.hpp>
#include <distopt/data/loader.hpp>
#include <distopt/data/statistics.hpp>

#include <cstdio>
#include <vector>

int main() {
  distopt::Archive archive;
  archive.put("x", std::vector<double>{1.0, 2.0, 3.0});
  const auto back = distopt::Archive::from_bytes(archive.to_bytes(), "memory.npz");
  distopt::data::LabelledImages set = distopt::data::allocate_images(4, {1, 8, 8}, false);
  for (std::size_t i = 0; i < set.images.size(); ++i) set.images.data()[i] = static_cast<std::uint8_t>(i % 251);
  set.fine = {0, 1, 2, 3};
  distopt::data::Loader loader(set, distopt::data::Normalizer(distopt::data::channel_statistics(set)),
                               {.batch_size = 2, .shuffle = false});
  std::size_t batches = 0;
  while (loader.next() != nullptr) ++batches;
  const bool ok = back == archive && batches == 2;
  std::printf("%s (distopt::data)\n", ok ? "consumer ok" : "consumer FAILED");
  return ok ? 0 : 1;
}
