#!/usr/bin/env bash
# The smoke study over MPI rank groups reaches the numbers of one process, cell for cell:
#   1. `mpirun -np 3 reproduce` (3 groups of 1 rank, each taking the next run of a stage's work
#      list) loses rank 2 (SIGKILL) in the middle of stage 5: mpirun ends the job naming the rank,
#      the stage is not marked done, and the same command launched again finishes the study;
#   2. `mpirun -np 2 reproduce --ranks-per-run 2` spreads every LocalSGD cell's workers over 2 ranks;
#   3. with no disk shared between rank 0 and the other groups (their own --work: an MPMD launch),
#      every run the others train reaches rank 0's work folder with its result and checkpoint;
#   4. two jobs of 2 groups started together on one --shared-work folder (each with its own
#      results) train every run once between them (every run folder's attempts.txt has one line),
#      and both train some of them.
# Every summary cell of every stage equals the one-process run's (compare_results.py).
#
#   study_mpi.sh BIN_DIR MPIEXEC WORK_DIR COMPARE_SCRIPT LAST_STAGE
set -euo pipefail
bin=$1 mpiexec=$2 work=$3 compare=$4 last=$5
rm -rf "$work"
mkdir -p "$work"
common=(--smoke --threads 1 --seed 3 --through "$last")
mpi=("$mpiexec" --oversubscribe --mca btl self,vader)
stages=()
for s in stage2_lenet stage3_centralized stage4_large_batch stage5_localsgd stage6_slowmo stage7_diloco; do
  stages+=("$s")
  [[ $s == "$last" ]] && break
done
fail() { echo "$1"; [[ -n ${2:-} ]] && cat "$2"; exit 1; }

"$bin/reproduce" "${common[@]}" --results "$work/one/results" --work "$work/one/work" >"$work/one.log" 2>&1 ||
  fail "the one-process study failed:" "$work/one.log"

# 1. Three groups; rank 2 dies once the stage it works in has written a checkpoint.
victim_stage=stage3_centralized
[[ " ${stages[*]} " == *" stage5_localsgd "* ]] && victim_stage=stage5_localsgd
groups=("${mpi[@]}" -np 3 "$bin/reproduce" "${common[@]}" --results "$work/groups/results" --work "$work/groups/work")
setsid "${groups[@]}" >"$work/groups-dies.log" 2>&1 &
launcher=$!
until find "$work/groups/work/$victim_stage" -name '*.npz' 2>/dev/null | grep -q .; do
  kill -0 "$launcher" 2>/dev/null || fail "the job ended before $victim_stage's first checkpoint:" "$work/groups-dies.log"
  sleep 0.02
done
killed=0
for p in $(pgrep -f "$bin/reproduce" || true); do
  if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=2"; then kill -KILL "$p" && killed=1; fi
done
[[ $killed == 1 ]] || fail "rank 2 was not found to kill" "$work/groups-dies.log"
status=0
wait "$launcher" || status=$?
[[ $status != 0 ]] || fail "mpirun succeeded although rank 2 died" "$work/groups-dies.log"
grep -q "rank 2" "$work/groups-dies.log" || fail "mpirun's report does not name rank 2:" "$work/groups-dies.log"
[[ ! -e "$work/groups/results/$victim_stage/result.csv" ]] || fail "$victim_stage was marked done although rank 2 died"
"${groups[@]}" >"$work/groups.log" 2>&1 || fail "the relaunched job failed:" "$work/groups.log"
grep -q "3 MPI ranks in 3 group(s) of 1" "$work/groups.log" || fail "the job did not run in 3 groups:" "$work/groups.log"
# The relaunch took up the killed job's work: some run was finished before or resumed.
grep -Eq "done before|\(resuming\)" "$work/groups.log" || fail "the relaunch started everything again:" "$work/groups.log"
/usr/bin/python3 "$compare" "$work/one/results" "$work/groups/results" "${stages[@]}"

# 2. One group of two ranks: a LocalSGD cell's workers on both.
"${mpi[@]}" -np 2 "$bin/reproduce" "${common[@]}" --ranks-per-run 2 --results "$work/spread/results" --work "$work/spread/work" \
  >"$work/spread.log" 2>&1 || fail "the job of one 2-rank group failed:" "$work/spread.log"
grep -q "2 MPI ranks in 1 group(s) of 2" "$work/spread.log" || fail "the job did not run in one group of 2:" "$work/spread.log"
if [[ " ${stages[*]} " == *" stage5_localsgd "* ]]; then
  grep -q "(2 MPI ranks)" "$work/spread.log" || fail "no LocalSGD cell ran over 2 ranks:" "$work/spread.log"
fi
/usr/bin/python3 "$compare" "$work/one/results" "$work/spread/results" "${stages[@]}"

# 3. Rank 0 and the two other groups on different work folders, as on hosts without a shared disk.
"${mpi[@]}" -np 1 "$bin/reproduce" "${common[@]}" --results "$work/apart/results" --work "$work/apart/rank0" : \
  -np 2 "$bin/reproduce" "${common[@]}" --results "$work/apart/results" --work "$work/apart/others" \
  >"$work/apart.log" 2>&1 || fail "the job without a shared disk failed:" "$work/apart.log"
/usr/bin/python3 "$compare" "$work/one/results" "$work/apart/results" "${stages[@]}"
travelled=0
while IFS= read -r result; do
  run=${result%/result.csv}
  mine=$work/apart/rank0/${run#"$work/apart/others/"}
  cmp -s "$result" "$mine/result.csv" || fail "$run: its result did not reach rank 0's work folder"
  checkpoint=$(cd "$run" && find . -name '*.npz' | sort | tail -1)
  [[ -z $checkpoint ]] || cmp -s "$run/$checkpoint" "$mine/$checkpoint" || fail "$run: its checkpoint $checkpoint did not reach rank 0"
  travelled=$((travelled + 1))
done < <(find "$work/apart/others" -mindepth 3 -maxdepth 3 -name result.csv)
((travelled > 0)) || fail "the other groups trained nothing" "$work/apart.log"
echo "without a shared disk: $travelled runs trained by the other groups reached rank 0 with their checkpoints"

# 4. Two jobs of 2 groups each, started together on one shared work folder.
shared=("${mpi[@]}" -np 2 "$bin/reproduce" "${common[@]}" --shared-work --work "$work/shared/work")
"${shared[@]}" --results "$work/shared/a" >"$work/shared-a.log" 2>&1 &
job_a=$!
"${shared[@]}" --results "$work/shared/b" >"$work/shared-b.log" 2>&1 &
job_b=$!
wait "$job_a" || fail "the first shared job failed:" "$work/shared-a.log"
wait "$job_b" || fail "the second shared job failed:" "$work/shared-b.log"
runs=0 twice=0
declare -A by_job=()
while IFS= read -r file; do
  runs=$((runs + 1))
  lines=$(wc -l <"$file")
  [[ $lines == 1 ]] || { echo "$file: $lines attempts"; cat "$file"; twice=1; }
  parent=$(sed -n 's/.* parent \([0-9]*\)$/\1/p' "$file" | head -1)
  by_job[$parent]=$((${by_job[$parent]:-0} + 1))
done < <(find "$work/shared/work" -mindepth 3 -name attempts.txt)
[[ $twice == 0 ]] || fail "a run was trained more than once"
((runs > 0)) || fail "no run folder in the shared work folder"
echo "shared work folder: $runs runs, each trained once: ${by_job[$job_a]:-0} by the first job, ${by_job[$job_b]:-0} by the second"
# Both jobs worked: a job that finds a run locked takes the next one, so neither waits out the other.
((${by_job[$job_a]:-0} > 0 && ${by_job[$job_b]:-0} > 0)) || fail "one job trained nothing: the runs were not shared"
for job in a b; do
  /usr/bin/python3 "$compare" "$work/one/results" "$work/shared/$job" "${stages[@]}"
done
