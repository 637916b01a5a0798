// One stage of the study as a program of its own: CMake compiles this file once per stage with
// DISTOPT_STAGE naming its entry point (stages.hpp).
#include "stages.hpp"

int main(int argc, char** argv) { return study_stages::DISTOPT_STAGE(argc, argv); }
