// The entry points of the study's stage programs: each stage is a program of its own
// (examples/study/stage_main.cpp calls one of these) and reproduce calls them all in its own
// process, so that under mpirun one MPI job runs the whole study.
#pragma once

namespace study_stages {

int stage1_data(int argc, char** argv);
int stage2_lenet(int argc, char** argv);
int stage3_centralized(int argc, char** argv);
int stage4_large_batch(int argc, char** argv);
int stage5_localsgd(int argc, char** argv);
int stage6_slowmo(int argc, char** argv);
int stage7_diloco(int argc, char** argv);

}  // namespace study_stages
