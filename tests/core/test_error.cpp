#include "distopt/core/error.hpp"

#include <catch2/catch.hpp>

#include <stdexcept>
#include <vector>

TEST_CASE("message joins its parts and prints shapes as PyTorch does", "[core][error]") {
  CHECK(distopt::message("lr ", -0.5, " for block '", "fc1.weight", "'") == "lr -0.5 for block 'fc1.weight'");
  CHECK(distopt::message(std::vector<long>{384, 1600}) == "[384, 1600]");
  CHECK(distopt::message(std::vector<int>{}) == "[]");
  CHECK(distopt::message(0.1f) == "0.100000001");  // enough digits to tell floats apart
}

TEST_CASE("require throws the requested type only when the condition fails", "[core][error]") {
  CHECK_NOTHROW(distopt::require(true, "never"));
  REQUIRE_THROWS_MATCHES(distopt::require(false, "eps must be > 0, got ", 0), std::invalid_argument,
                         Catch::Matchers::Message("eps must be > 0, got 0"));
  REQUIRE_THROWS_AS(distopt::require<std::out_of_range>(false, "index"), std::out_of_range);
}
