#!/usr/bin/env bash
# An interrupted `reproduce` resumes where it stopped: a smoke-scale study killed (SIGKILL, stage
# program and all) once stage 4 has written its first checkpoint, then run again, skips the
# stages it completed, finishes the report, and reaches the numbers of an uninterrupted study.
#
#   reproduce_resume.sh BIN_DIR WORK_DIR COMPARE_SCRIPT
set -euo pipefail
bin=$1 work=$2 compare=$3
rm -rf "$work"
mkdir -p "$work"
common=(--smoke --threads 1 --seed 4)
"$bin/reproduce" "${common[@]}" --results "$work/whole/results" --work "$work/whole/work" >"$work/whole.log" 2>&1

# setsid: the study in its own process group, so one kill reaches the stage it is running.
setsid "$bin/reproduce" "${common[@]}" --results "$work/cut/results" --work "$work/cut/work" >"$work/cut-1.log" 2>&1 &
pid=$!
# As long as it takes (the sanitizers slow it down 20 times): the ctest timeout bounds the wait.
until find "$work/cut/work/stage4_large_batch" -name '*.npz' 2>/dev/null | grep -q .; do
  kill -0 "$pid" 2>/dev/null || { echo "the study ended before stage 4 wrote a checkpoint:"; cat "$work/cut-1.log"; exit 1; }
  sleep 0.05
done
kill -KILL -- "-$pid" 2>/dev/null || { echo "the study ended before it could be interrupted"; exit 1; }
wait "$pid" 2>/dev/null || true
if [[ -e "$work/cut/results/REPORT.md" || -e "$work/cut/results/stage4_large_batch/result.csv" ]]; then
  echo "the study was not interrupted in stage 4"
  exit 1
fi

"$bin/reproduce" "${common[@]}" --results "$work/cut/results" --work "$work/cut/work" >"$work/cut-2.log" 2>&1 ||
  { cat "$work/cut-2.log"; exit 1; }
for stage in stage1_data stage2_lenet stage3_centralized; do
  grep -q "$stage: already completed" "$work/cut-2.log" || { echo "$stage was not skipped:"; cat "$work/cut-2.log"; exit 1; }
done
test -s "$work/cut/results/REPORT.md"
/usr/bin/python3 "$compare" "$work/whole/results" "$work/cut/results" stage2_lenet stage3_centralized stage4_large_batch \
  stage5_localsgd stage6_slowmo stage7_diloco
