#!/usr/bin/env bash
# `reproduce --data DIR` on a folder in CIFAR-100's binary format: the whole smoke-scale study on
# the synthetic CIFAR-format files (written by stage 1 with --synthetic), read back through the
# CIFAR-100 reader as a user's CIFAR-100 would be, trained with the hsu LeNet-5.
#
#   cifar_smoke.sh BIN_DIR WORK_DIR [LAST_STAGE]
#
# LAST_STAGE (reproduce --through) ends the study early: the sanitize preset stops after stage 3,
# as the hsu LeNet-5 trains at about 10 images/s under ASan and stages 4-7 would add 10 minutes
# for code that reproduce_resume already runs there on Fashion-MNIST.
set -euo pipefail
bin=$1 work=$2 last=${3:-stage7_diloco}
rm -rf "$work"
mkdir -p "$work"
"$bin/stage1_data" --smoke --synthetic --threads 1 --results "$work/gen/results" --work "$work/gen/work" >"$work/gen.log" 2>&1 ||
  { cat "$work/gen.log"; exit 1; }
folder=$(find "$work/gen/work/data" -mindepth 1 -maxdepth 1 -type d -name 'synthetic-*' | head -n 1)
test -f "$folder/cifar-100-binary/train.bin" || { echo "no synthetic CIFAR-format files under $work/gen/work/data"; exit 1; }

"$bin/reproduce" --smoke --threads 1 --through "$last" --data "$folder" --results "$work/results" --work "$work/work" >"$work/study.log" 2>&1 ||
  { cat "$work/study.log"; exit 1; }
report="$work/results/REPORT.md"
test -s "$report"
grep -q 'data: \*\*CIFAR-100' "$report" || { echo "REPORT.md does not name CIFAR-100 as its data:"; head -5 "$report"; exit 1; }
grep -q 'hsu LeNet-5' "$work/results/stage2_lenet/table.md" || { echo "stage 2 did not train the hsu LeNet-5:"; cat "$work/results/stage2_lenet/table.md"; exit 1; }
grep -q '100 classes, 3 x 32 x 32 images' "$work/results/stage1_data/table.md" || { echo "stage 1's card is not CIFAR's:"; cat "$work/results/stage1_data/table.md"; exit 1; }
grep -q '^## Findings' "$report"
for stage in stage2_lenet stage3_centralized stage4_large_batch stage5_localsgd stage6_slowmo stage7_diloco; do
  test -s "$work/results/$stage/summary.csv" || { echo "$stage wrote no summary.csv"; exit 1; }
  [[ "$stage" == "$last" ]] && break
done
for stage in stage4_large_batch stage5_localsgd stage6_slowmo stage7_diloco; do  # nothing past the last stage ran
  [[ "$last" == stage3_centralized && -e "$work/results/$stage" ]] && { echo "$stage ran after --through $last"; exit 1; }
done
echo "cifar smoke: the study ran through $last on $folder with the hsu LeNet-5"
