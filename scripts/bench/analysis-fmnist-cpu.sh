#!/usr/bin/env bash
# The analysis artefacts of the fmnist-cpu benchmark runs (seed 0) under benchmarks/analysis/fmnist-cpu/, from
# the run directories `byon bench quality` left in runs/bench/fmnist-cpu/. Usage:
#   scripts/bench/analysis-fmnist-cpu.sh METHOD...      (e.g. ijepa njepa ddae ldae; `make bench-analysis`)
# Per method: the attention-distance profile (BYON figure 1); for the JEPAs their context (online) encoder
# beside the target one the protocol evaluates; for DDAE the layer x t probe grid, alignment/uniformity per block,
# DDIM samples and the frozen evaluations at the grid's best (block, t) and at its best within the encoder half;
# for reconstruction methods the reconstruction grid. Minutes per method on one core; DDAE's is the longest (~20).
set -euo pipefail
cd "$(dirname "$0")/../.."
BYON=${BYON:-.venv/bin/byon}
RUNS=${RUNS:-runs/bench/fmnist-cpu}
OUT=${OUT:-benchmarks/analysis/fmnist-cpu}
mkdir -p "$OUT"

for m in "$@"; do
  run="$RUNS/$m-seed0"
  [ -f "$run/summary.json" ] || { echo "skip $m: $run has no finished run"; continue; }
  $BYON analyze attention-distance --run "$run" --n 256 --out "$OUT/$m-seed0-attention-distance.png"
  case "$m" in
    ijepa|njepa)  # the protocol evaluates the EMA target encoder; the context encoder beside it
      for kind in knn linear; do $BYON eval "$kind" --run "$run" --encoder online; done
      $BYON eval lowshot --run "$run" --encoder online --shots 10,100 --draws 3 --epochs 100
      for kind in knn linear lowshot; do
        cp "$run/eval/$kind-fashion-mnist-online.json" "$OUT/$m-seed0-online-$kind.json"
      done ;;
    ddae)
      $BYON eval probe-grid --run "$run" --subset 10000 --timesteps 1,10,25,50,100,200 --linear-epochs 30
      cp "$run/eval/probe-grid-fashion-mnist.json" "$OUT/ddae-seed0-probe-grid.json"
      cp "$run/eval/probe-grid-fashion-mnist.png" "$OUT/ddae-seed0-probe-grid.png"
      for t in 10 100; do
        $BYON analyze align-uniform --run "$run" --t "$t" --n 512 --out "$OUT/ddae-seed0-align-uniform-t$t.png"
      done
      $BYON sample --run "$run" --n 64 --sampler ddim --steps 50 --seed 0 --out "$OUT/ddae-seed0-samples-ddim50.png"
      # kNN / linear at the grid's best cell (selected on the test split, as DDAE's grid search is), and at the
      # best cell within the encoder half (blocks 1..encoder depth), the cut that also exports to timm
      enc_depth=$(python3 -c "import json; print(json.load(open('$run/summary.json'))['encoder']['depth'])")
      for which in grid encoder; do
        read -r block t < <(python3 -c "import json; g = json.load(open('$OUT/ddae-seed0-probe-grid.json')); \
d = $enc_depth if '$which' == 'encoder' else max(g['layers']); \
cells = [(v, l, t) for l, row in zip(g['layers'], g['top1']) if l <= d for t, v in zip(g['timesteps'], row)]; \
print(*max(cells, key=lambda c: c[0])[1:])")  # the first best in layer-then-t order, as probe-grid's own best
        for kind in knn linear; do
          $BYON eval "$kind" --run "$run" --set "ddae.feature_block=$block" "ddae.feature_t=$t"
          cp "$run/eval/$kind-fashion-mnist-feature_block=$block,feature_t=$t.json" "$OUT/ddae-seed0-$which-best-$kind.json"
        done
      done ;;
  esac
  case "$m" in
    mae|byon|simmim|diffmae|maskdit|fnmim|ldae)
      $BYON analyze reconstructions --run "$run" --n 6 --out "$OUT/$m-seed0-reconstructions.png" ;;
  esac
done
