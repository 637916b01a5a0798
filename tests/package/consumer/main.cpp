// A consumer of the installed package: uses the umbrella header as a user would.
#include <distopt/distopt.hpp>

#include <cstdio>

int main() {
  distopt::ParameterSet params;
  params.add("fc.weight", {4, 3});
  params.add("fc.bias", {4});
  distopt::Rng rng(1);
  for (auto& w : params.value("fc.weight")) w = rng.uniform();
  const distopt::ParameterSet replica = params;
  const bool ok = replica.same_layout(params) && replica.values() == params.values() &&
                  params.num_parameters() == 16 && distopt::version.major == DISTOPT_VERSION_MAJOR;
  std::printf("%s\n", ok ? "consumer ok" : "consumer FAILED");
  return ok ? 0 : 1;
}
