#include "distopt/core/parameter_set.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

using distopt::BasicParameterSet;
using distopt::BlockOptions;
using distopt::ParameterSet;
using distopt::Toggle;
using Catch::Matchers::Contains;

namespace {

// A LeNet-5-like table: a 4-D conv weight, a bias, a 2-D weight, a scalar.
ParameterSet make_set() {
  ParameterSet params;
  params.add("conv1.weight", {6, 3, 5, 5});
  params.add("conv1.bias", {6});
  params.add("fc1.weight", {10, 7});
  params.add("scale", {});
  return params;
}

bool aligned64(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

}  // namespace

TEST_CASE("ParameterSet lays blocks out in order, each on a 64-byte boundary", "[core][parameter_set]") {
  const ParameterSet params = make_set();
  REQUIRE(params.num_blocks() == 4);
  REQUIRE(params.num_parameters() == 6 * 3 * 5 * 5 + 6 + 70 + 1);

  const auto blocks = params.blocks();
  CHECK(blocks[0].offset == 0);
  CHECK(blocks[0].size == 450);
  CHECK(blocks[1].offset == 464);  // 450 rounded up to 16 floats
  CHECK(blocks[2].offset == 480);
  CHECK(blocks[3].offset == 560);
  CHECK(blocks[3].size == 1);
  CHECK(blocks[3].rank() == 0);
  CHECK(params.size() == 576);
  for (const auto& b : blocks) {
    CHECK(b.offset % ParameterSet::block_alignment == 0);
    CHECK(b.end() <= params.size());
  }
  CHECK(blocks[2].rows() == 10);
  CHECK(blocks[2].cols() == 7);
  CHECK(blocks[0].cols() == 75);
  CHECK(blocks[0].shape == std::vector<std::ptrdiff_t>{6, 3, 5, 5});
}

TEST_CASE("ParameterSet buffers and every block view are 64-byte aligned", "[core][parameter_set]") {
  ParameterSet params = make_set();
  CHECK(aligned64(params.values().data()));
  CHECK(aligned64(params.grads().data()));
  for (std::size_t i = 0; i < params.num_blocks(); ++i) {
    CHECK(aligned64(params.value(i).data()));
    CHECK(aligned64(params.grad(i).data()));
  }
  BasicParameterSet<double> doubles;
  doubles.add("a", {3});
  doubles.add("b", {5});
  CHECK(doubles.block(1).offset == 8);  // 64 bytes hold 8 doubles
  CHECK(aligned64(doubles.value(1).data()));
}

TEST_CASE("ParameterSet starts at zero, and padding between blocks stays outside every view", "[core][parameter_set]") {
  ParameterSet params = make_set();
  CHECK(params.values().isZero(0));
  CHECK(params.grads().isZero(0));
  for (std::size_t i = 0; i < params.num_blocks(); ++i) {
    params.value(i).setConstant(1.0f);
    params.grad(i).setConstant(2.0f);
  }
  CHECK(params.values().sum() == static_cast<float>(params.num_parameters()));
  CHECK(params.grads().sum() == 2.0f * static_cast<float>(params.num_parameters()));
}

TEST_CASE("ParameterSet views alias the flat buffers", "[core][parameter_set]") {
  ParameterSet params = make_set();
  const auto& fc1 = params.block("fc1.weight");

  params.value("fc1.weight")(3) = 7.0f;
  CHECK(params.values()(fc1.offset + 3) == 7.0f);

  params.values()(fc1.offset + 9) = -2.0f;
  CHECK(params.value(2)(9) == -2.0f);

  // Row-major as PyTorch: element [r, c] of a [10, 7] weight is at r * 7 + c.
  params.value_matrix(2)(1, 2) = 5.0f;
  CHECK(params.value(2)(1 * 7 + 2) == 5.0f);
  params.grad_matrix(2)(4, 6) = 3.0f;
  CHECK(params.grads()(fc1.offset + 4 * 7 + 6) == 3.0f);
  CHECK(params.grad("fc1.weight")(34) == 3.0f);

  // A convolution weight [out, in, kh, kw] viewed as [out, in * kh * kw].
  params.value_matrix(0)(2, 74) = 9.0f;
  CHECK(params.value("conv1.weight")(2 * 75 + 74) == 9.0f);

  const ParameterSet& read_only = params;
  CHECK(read_only.value("fc1.weight")(3) == 7.0f);
  CHECK(read_only.value_matrix(2)(1, 2) == 5.0f);
}

TEST_CASE("zero_grad clears gradients and leaves values", "[core][parameter_set]") {
  ParameterSet params = make_set();
  params.values().setConstant(1.5f);
  params.grads().setConstant(-4.0f);
  params.zero_grad();
  CHECK(params.grads().isZero(0));
  CHECK((params.values().array() == 1.5f).all());
}

TEST_CASE("A copied ParameterSet is an independent replica with the same layout", "[core][parameter_set]") {
  ParameterSet original = make_set();
  original.values().setLinSpaced(0.0f, 1.0f);
  original.grads().setConstant(0.25f);

  ParameterSet replica = original;
  REQUIRE(replica.same_layout(original));
  CHECK(replica.values() == original.values());
  CHECK(replica.grads() == original.grads());
  CHECK(replica.values().data() != original.values().data());
  CHECK(replica.grads().data() != original.grads().data());
  CHECK(aligned64(replica.values().data()));

  replica.value("conv1.bias").setConstant(42.0f);
  replica.zero_grad();
  CHECK(original.value("conv1.bias")(0) != 42.0f);
  CHECK((original.grads().array() == 0.25f).all());

  ParameterSet assigned;
  assigned = original;  // copy assignment as well as construction
  original.values().setZero();
  CHECK(assigned.values().maxCoeff() == 1.0f);
  CHECK(assigned.index_of("fc1.weight") == 2);  // the name table is copied too

  ParameterSet moved = std::move(assigned);
  CHECK(moved.values().maxCoeff() == 1.0f);
  CHECK(moved.num_blocks() == 4);
}

TEST_CASE("assign_values copies values between sets of one layout, not gradients", "[core][parameter_set]") {
  ParameterSet source = make_set();
  ParameterSet target = make_set();
  source.values().setConstant(3.0f);
  source.grads().setConstant(1.0f);
  target.assign_values(source);
  CHECK((target.values().array() == 3.0f).all());
  CHECK(target.grads().isZero(0));
}

TEST_CASE("assign_values names the first layout difference", "[core][parameter_set]") {
  ParameterSet target = make_set();

  SECTION("a different shape") {
    ParameterSet other;
    other.add("conv1.weight", {6, 3, 5, 5});
    other.add("conv1.bias", {7});
    REQUIRE_THROWS_MATCHES(target.assign_values(other), std::invalid_argument,
                           Catch::Matchers::Message(
                               "ParameterSet::assign_values: layouts differ: block 1 is 'conv1.bias' of "
                               "shape [6] here and 'conv1.bias' of shape [7] in the other set"));
  }
  SECTION("a different name") {
    ParameterSet other = make_set();
    ParameterSet renamed;
    renamed.add("conv1.weight", {6, 3, 5, 5});
    renamed.add("conv1.bias", {6});
    renamed.add("fc2.weight", {10, 7});
    renamed.add("scale", {});
    REQUIRE_THROWS_WITH(target.assign_values(renamed), Contains("block 2 is 'fc1.weight'") &&
                                                           Contains("'fc2.weight'"));
  }
  SECTION("a missing block") {
    ParameterSet shorter;
    shorter.add("conv1.weight", {6, 3, 5, 5});
    REQUIRE_THROWS_WITH(target.assign_values(shorter), Contains("this set has 4 blocks and the other 1"));
  }
  CHECK(target.values().isZero(0));  // a failed assignment changes nothing
}

TEST_CASE("Lookup by name, with a clear error for an unknown name", "[core][parameter_set]") {
  ParameterSet params = make_set();
  CHECK(params.index_of("fc1.weight") == 2);
  CHECK(params.find("conv1.bias") == std::optional<std::size_t>{1});
  CHECK_FALSE(params.find("fc9.weight").has_value());
  CHECK(params.block("scale").size == 1);
  REQUIRE_THROWS_MATCHES(params.block("fc9.weight"), std::out_of_range,
                         Catch::Matchers::Message("ParameterSet: no block named 'fc9.weight' (blocks: "
                                                  "conv1.weight, conv1.bias, fc1.weight, scale)"));
  REQUIRE_THROWS_AS(params.value("nope"), std::out_of_range);
  REQUIRE_THROWS_WITH(params.block(std::size_t{9}), Contains("block index 9 out of range (4 blocks)"));
}

TEST_CASE("add rejects bad blocks with the name and the offending value", "[core][parameter_set]") {
  ParameterSet params = make_set();
  const auto size_before = params.size();

  REQUIRE_THROWS_MATCHES(params.add("fc2.weight", {3, 0}), std::invalid_argument,
                         Catch::Matchers::Message("ParameterSet::add: block 'fc2.weight' has dimension 0 at "
                                                  "axis 1 of shape [3, 0]; every dimension must be positive"));
  REQUIRE_THROWS_WITH(params.add("fc2.bias", {-4}), Contains("'fc2.bias' has dimension -4 at axis 0"));
  REQUIRE_THROWS_MATCHES(params.add("conv1.bias", {6}), std::invalid_argument,
                         Catch::Matchers::Message("ParameterSet::add: duplicate block name 'conv1.bias'"));
  REQUIRE_THROWS_AS(params.add("", {2}), std::invalid_argument);
  REQUIRE_THROWS_WITH(params.add("fc2.bias", {2}, {.lr_scale = -1.0f}), Contains("lr_scale -1"));
  REQUIRE_THROWS_WITH(params.add("fc2.bias", {2}, {.lr_scale = std::numeric_limits<float>::quiet_NaN()}),
                      Contains("'fc2.bias' has lr_scale nan"));

  // Nothing was added by the failed calls.
  CHECK(params.num_blocks() == 4);
  CHECK(params.size() == size_before);
  CHECK_FALSE(params.find("fc2.weight").has_value());
}

TEST_CASE("Block options: per-block overrides and their defaults", "[core][parameter_set]") {
  ParameterSet params;
  params.add("w", {4, 4});
  params.add("b", {4}, {.decay = Toggle::off});
  CHECK(params.block("w").options == BlockOptions{});
  CHECK(params.block("b").options.decay == Toggle::off);

  params.set_options("w", {.lr_scale = 0.1f, .adapt = Toggle::on});
  CHECK(params.block("w").options.lr_scale == 0.1f);
  CHECK(params.block("w").options.adapt == Toggle::on);
  REQUIRE_THROWS_WITH(params.set_options("w", {.lr_scale = -2.0f}), Contains("block 'w' has lr_scale -2"));
  REQUIRE_THROWS_AS(params.set_options("missing", {}), std::out_of_range);

  CHECK(distopt::resolve(Toggle::automatic, true));
  CHECK_FALSE(distopt::resolve(Toggle::automatic, false));
  CHECK(distopt::resolve(Toggle::on, false));
  CHECK_FALSE(distopt::resolve(Toggle::off, true));
}

namespace {

// A user's own container: one std::vector of weights, no padding.
struct UserParams {
  using scalar_type = float;
  std::vector<float> w, g;
  std::vector<distopt::Block> table;
  std::span<float> values() { return w; }
  std::span<float> grads() { return g; }
  [[nodiscard]] std::ptrdiff_t size() const { return static_cast<std::ptrdiff_t>(w.size()); }
  [[nodiscard]] std::span<const distopt::Block> blocks() const { return table; }
};
struct NoGradients {
  using scalar_type = float;
  std::span<float> values();
  [[nodiscard]] std::ptrdiff_t size() const;
  [[nodiscard]] std::span<const distopt::Block> blocks() const;
};
struct IntegerParams : UserParams {
  using scalar_type = int;
};

}  // namespace

TEST_CASE("The ParameterContainer concept accepts user containers and rejects incomplete ones", "[core][concepts]") {
  STATIC_REQUIRE(distopt::ParameterContainer<ParameterSet>);
  STATIC_REQUIRE(distopt::ParameterContainer<distopt::ParameterSetD>);
  STATIC_REQUIRE(distopt::ParameterContainer<UserParams>);
  STATIC_REQUIRE_FALSE(distopt::ParameterContainer<NoGradients>);
  STATIC_REQUIRE_FALSE(distopt::ParameterContainer<IntegerParams>);
  STATIC_REQUIRE_FALSE(distopt::ParameterContainer<std::vector<float>>);
}
