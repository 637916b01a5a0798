// Runs the rest of a Catch test case once per path of the kernels this CPU runs (nn/isa.hpp),
// naming the path in every failure.
#pragma once

#include <catch2/catch.hpp>

#include "distopt/nn/isa.hpp"

#define DISTOPT_EACH_ISA()                                                                              \
  const ::distopt::nn::Isa distopt_isa_ = GENERATE(from_range(::distopt::nn::supported_isas()));       \
  const ::distopt::nn::ScopedIsa distopt_isa_scope_(distopt_isa_);                                     \
  INFO("kernels: " << ::distopt::nn::isa_name(distopt_isa_))
