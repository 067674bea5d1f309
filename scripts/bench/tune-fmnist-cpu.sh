#!/usr/bin/env bash
# Protocol v2 for one method on this 2-core CPU (benchmarks/README.md): screen a grid on the val split in two
# 1-thread processes, confirm the best cells at full length and name the winner (results/tune/fmnist-cpu/).
# Every stage resumes where it stopped (re-run the same command).
#   scripts/bench/tune-fmnist-cpu.sh METHOD "GRID ARGS" [SCREEN_EPOCHS]
# e.g. scripts/bench/tune-fmnist-cpu.sh mae "--grid optim.blr=5e-4,1.5e-3 --grid-file configs/tune/aug.yaml"
set -euo pipefail
BYON=${BYON:-byon}
METHOD=$1
GRID=$2
SCREEN=${3:-2}
RESULTS=${RESULTS:-benchmarks/results}
SET=${SET:-}
common=(bench tune --protocol fmnist-cpu --methods "$METHOD" --epochs "$SCREEN" --confirm 2 --results "$RESULTS")
# shellcheck disable=SC2086
for stage in screen confirm; do
  $BYON "${common[@]}" $GRID --stage $stage --shard 0/2 --set train.num_threads=1 $SET &
  p0=$!
  $BYON "${common[@]}" $GRID --stage $stage --shard 1/2 --set train.num_threads=1 $SET &
  p1=$!
  wait $p0
  wait $p1
done
# shellcheck disable=SC2086
$BYON "${common[@]}" $GRID --stage confirm --set train.num_threads=1 $SET  # renders the table, names the winner
winner="$RESULTS/tune/fmnist-cpu/$METHOD-winner.json"
[ -f "$winner" ] || { echo "no winner yet: $winner"; exit 1; }
cat "$winner"
# Next (by hand, so the recipe is reviewed and committed): put the winner's settings into configs/$METHOD.yaml with
# a comment citing results/tune/fmnist-cpu/$METHOD.md, then report on test with that recipe:
#   byon bench quality --protocol fmnist-cpu --methods $METHOD --seeds 0,1,2 --set train.num_threads=1
