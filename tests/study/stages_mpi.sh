#!/usr/bin/env bash
# Stages 5 (LocalSGD), 6 (SlowMo) and 7 (DiLoCo, compressed messages), launched unchanged by `mpirun -np 2`, reach the numbers the
# same stages reach in one process: every accuracy, loss, step and round count of their summaries.
# Stage 5's first MPI launch loses rank 1 (SIGKILL) after the first checkpoint: mpirun must end
# the job naming the rank, and the next launch must resume from rank 0's checkpoints.
#
#   stages_mpi.sh BIN_DIR MPIEXEC WORK_DIR COMPARE_SCRIPT
set -euo pipefail
bin=$1 mpiexec=$2 work=$3 compare=$4
rm -rf "$work"
mkdir -p "$work"
common=(--smoke --threads 1 --seed 3)
mpi=("$mpiexec" -np 2 --oversubscribe --mca btl self,vader)
for stage in stage5_localsgd stage6_slowmo stage7_diloco; do
  "$bin/$stage" "${common[@]}" --results "$work/one/results" --work "$work/one/work" >"$work/one-$stage.log"
done

# Rank 1 dies: the job ends (the ctest timeout catches a hang) and names it.
setsid "${mpi[@]}" "$bin/stage5_localsgd" "${common[@]}" --results "$work/mpi/results" --work "$work/mpi/work" \
  >"$work/mpi-dies.log" 2>&1 &
launcher=$!
until find "$work/mpi/work/stage5_localsgd" -name '*.npz' 2>/dev/null | grep -q .; do
  kill -0 "$launcher" 2>/dev/null || { echo "stage 5 ended before its first checkpoint:"; cat "$work/mpi-dies.log"; exit 1; }
  sleep 0.05
done
killed=0
for p in $(pgrep -f "$bin/stage5_localsgd" || true); do
  if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then kill -KILL "$p" && killed=1; fi
done
[[ $killed == 1 ]] || { echo "rank 1 was not found to kill"; cat "$work/mpi-dies.log"; exit 1; }
status=0
wait "$launcher" || status=$?
[[ $status != 0 ]] || { echo "mpirun succeeded although rank 1 died"; exit 1; }
grep -q "rank 1" "$work/mpi-dies.log" || { echo "mpirun's report does not name rank 1:"; cat "$work/mpi-dies.log"; exit 1; }
[[ ! -e "$work/mpi/results/stage5_localsgd/result.csv" ]] || { echo "stage 5 was marked done although rank 1 died"; exit 1; }

for stage in stage5_localsgd stage6_slowmo stage7_diloco; do
  "${mpi[@]}" "$bin/$stage" "${common[@]}" --results "$work/mpi/results" --work "$work/mpi/work" >"$work/mpi-$stage.log"
  grep -q "2 MPI ranks" "$work/mpi-$stage.log" || { echo "$stage did not run on 2 MPI ranks:"; cat "$work/mpi-$stage.log"; exit 1; }
done
# The relaunch picked up the killed job's work: its first run resumed (or had just finished).
grep -Eq "K2_H2 .*\(resuming\)|K2_H2 +done before" "$work/mpi-stage5_localsgd.log" ||
  { echo "stage 5 started again from scratch:"; cat "$work/mpi-stage5_localsgd.log"; exit 1; }
# The rank count is recorded with each run that ran over MPI.
grep -q ",2," "$work/mpi/results/stage5_localsgd/summary.csv" || { echo "no run recorded 2 ranks"; exit 1; }
/usr/bin/python3 "$compare" "$work/one/results" "$work/mpi/results" stage5_localsgd stage6_slowmo stage7_diloco
