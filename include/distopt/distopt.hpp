// distopt: large-batch and communication-efficient training, one header per concept.
// Including this umbrella brings in every public header of the library.
#pragma once

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/core/archive.hpp"
#include "distopt/core/block.hpp"
#include "distopt/core/concepts.hpp"
#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/parameter_set.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/optim/accumulation.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/lamb.hpp"
#include "distopt/optim/lars.hpp"
#include "distopt/optim/optimizer.hpp"
#include "distopt/optim/schedule.hpp"
#include "distopt/optim/sgdm.hpp"
#include "distopt/optim/state.hpp"
#include "distopt/version.hpp"
