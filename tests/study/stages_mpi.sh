#!/usr/bin/env bash
# Stages 5 (LocalSGD) and 6 (SlowMo), launched unchanged by `mpirun -np 2`, reach the numbers the
# same stages reach in one process: every accuracy, loss, step and round count of their summaries.
#
#   stages_mpi.sh BIN_DIR MPIEXEC WORK_DIR COMPARE_SCRIPT
set -euo pipefail
bin=$1 mpiexec=$2 work=$3 compare=$4
rm -rf "$work"
mkdir -p "$work"
common=(--smoke --threads 1 --seed 3)
for stage in stage5_localsgd stage6_slowmo; do
  "$bin/$stage" "${common[@]}" --results "$work/one/results" --work "$work/one/work" >"$work/one-$stage.log"
  "$mpiexec" -np 2 --oversubscribe --mca btl self,vader "$bin/$stage" "${common[@]}" \
    --results "$work/mpi/results" --work "$work/mpi/work" >"$work/mpi-$stage.log"
  grep -q "2 MPI ranks" "$work/mpi-$stage.log" || { echo "$stage did not run on 2 MPI ranks:"; cat "$work/mpi-$stage.log"; exit 1; }
done
# The rank count is recorded with each run: MPI runs say 2, and their all-reduce time is measured.
grep -q ",2," "$work/mpi/results/stage5_localsgd/summary.csv" || { echo "no run recorded 2 ranks"; exit 1; }
/usr/bin/python3 "$compare" "$work/one/results" "$work/mpi/results" stage5_localsgd stage6_slowmo
