// A consumer of the installed package: uses the umbrella header as a user would.
#include <distopt/distopt.hpp>
#ifdef CONSUMER_USES_DOWNLOAD
#include <distopt/data/download.hpp>

#include <stdexcept>
#endif

#include <cstdio>

int main() {
  distopt::ParameterSet params;
  params.add("fc.weight", {4, 3});
  params.add("fc.bias", {4});
  distopt::Rng rng(1);
  for (auto& w : params.value("fc.weight")) w = rng.uniform();
  const distopt::ParameterSet replica = params;
  bool ok = replica.same_layout(params) && replica.values() == params.values() &&
                  params.num_parameters() == 16 && distopt::version.major == DISTOPT_VERSION_MAJOR;
#ifdef CONSUMER_USES_DOWNLOAD
  // Options are checked before any file or network access; linking needs libcurl and libarchive.
  bool refused = false;
  try {
    (void)distopt::data::download_cifar100("unused", {.md5 = "not an md5", .progress = nullptr});
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  ok = ok && refused;
  const char* with = " (with distopt::download)";
#else
  const char* with = "";
#endif
  std::printf("%s%s\n", ok ? "consumer ok" : "consumer FAILED", with);
  return ok ? 0 : 1;
}
