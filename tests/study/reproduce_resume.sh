#!/usr/bin/env bash
# An interrupted `reproduce` resumes where it stopped: a smoke-scale study whose driver is killed
# (SIGKILL) once stage 4 has written its first checkpoint leaves no stage program running (it dies
# with its driver, after a checkpoint); run again, it skips the stages it completed, finishes the
# report, and reaches the numbers of an uninterrupted study. Then, with results/ deleted, a third
# run rebuilds every table, metrics file and curve from the work folder, and REPORT.md links only
# files that are there.
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
kill -KILL "$pid" 2>/dev/null || { echo "the study ended before it could be interrupted"; exit 1; }
wait "$pid" 2>/dev/null || true
# The stage program got SIGTERM when its driver died (PR_SET_PDEATHSIG): it checkpoints and ends.
for _ in $(seq 1 1200); do
  pgrep -f -- "--work $work/cut/work" >/dev/null || break
  sleep 0.1
done
if pgrep -f -- "--work $work/cut/work" >/dev/null; then
  echo "a stage program outlived its killed driver:"; pgrep -af -- "--work $work/cut/work"; exit 1
fi
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

# Results deleted: rebuilt from the work folder, runs and curves included, nothing trained again
# (each training attempt adds a line to its run folder's attempts.txt).
attempts() { find "$work/cut/work" -name attempts.txt -exec cat {} + | wc -l; }
attempts_before=$(attempts)
rm -rf "$work/cut/results"
"$bin/reproduce" "${common[@]}" --results "$work/cut/results" --work "$work/cut/work" >"$work/cut-3.log" 2>&1 ||
  { cat "$work/cut-3.log"; exit 1; }
for stage in stage2_lenet stage3_centralized stage4_large_batch; do
  files=(metrics.jsonl table.md)
  [[ $stage == stage4_large_batch ]] || files+=(curves.png)
  for file in "${files[@]}"; do
    test -s "$work/cut/results/$stage/$file" || { echo "rebuilt results lack $stage/$file:"; cat "$work/cut-3.log"; exit 1; }
  done
  # Every run of the stage is in its metrics, as in the uninterrupted study's.
  runs() { /usr/bin/python3 -c 'import json,sys; print(sorted({json.loads(l).get("run") for l in open(sys.argv[1]) if l.strip()}))' "$1"; }
  [[ "$(runs "$work/whole/results/$stage/metrics.jsonl")" == "$(runs "$work/cut/results/$stage/metrics.jsonl")" ]] ||
    { echo "$stage: the rebuilt metrics hold other runs"; exit 1; }
done
if [[ "$(attempts)" != "$attempts_before" ]]; then echo "runs were trained again:"; cat "$work/cut-3.log"; exit 1; fi
/usr/bin/python3 "$compare" "$work/whole/results" "$work/cut/results" stage2_lenet stage3_centralized stage4_large_batch \
  stage5_localsgd stage6_slowmo stage7_diloco
grep -o '](\([^)]*\))' "$work/cut/results/REPORT.md" | sed 's/^](//; s/)$//' | while read -r link; do
  test -e "$work/cut/results/$link" || { echo "REPORT.md links a missing file: $link"; exit 1; }
done
