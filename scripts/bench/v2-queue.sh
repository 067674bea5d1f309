#!/usr/bin/env bash
# The remaining protocol-v2 CPU queue on this 2-core machine, in priority order (benchmarks/README.md). Every
# command skips what is finished, so re-running this script resumes it; commit results/ after each step.
#   scripts/bench/v2-queue.sh            # all steps
#   scripts/bench/v2-queue.sh byon-test  # one step: mae-seed2 | byon | byon-test | knobs | optim | retest |
#                                        #           baselines | baselines-test | epochs3x | byon-ablations
# The order is the developers' guide's: protocol v2 for every method before BYON's ablations.
# Steps that need a person in between (a winner's settings into configs/<method>.yaml, reviewed) are not here: the
# `byon` step's winner went into configs/byon/default.yaml by hand before `byon-test` and `byon-ablations`, and
# `baselines-test` tests only the methods whose configs/<method>.yaml already carries its val winner.
# Test-split runs (bench quality / sweep) set only train.num_threads=1: a library call trains in one process anyway,
# and a result-changing --set (train.devices=1 counts as one) would give the records another name (run_name).
set -euo pipefail
BYON=${BYON:-byon}
ONE=(train.devices=1 train.num_threads=1)  # bench tune
TEST=(train.num_threads=1)                 # bench quality / sweep
# a test record whose recipe (configs/<method>.yaml, configs/byon/*) moved since it ran is re-run, the old one kept
# under superseded/ (--rerun-changed); an unchanged one is reused as it is
RERUN=(--rerun-changed)
# the val-tuned recipes the knob steps start from: MAE's (configs/mae.yaml), BYON's reading (configs/byon/)
MAE_SET=("${ONE[@]}" optim.blr=1.5e-3 model.pos_embed=sincos "data.crop_scale=[0.6,1.0]")
READING=(byon.encoder_tokens=visible byon.beta_scale=0.05 byon.lambda_con=0.1 byon.decoder_depth=1)
step=${1:-all}

if [[ $step == all || $step == mae-seed2 ]]; then
  # MAE's third test seed at its val-tuned recipe (configs/mae.yaml)
  $BYON bench quality --protocol fmnist-cpu --methods mae --seeds 2 --set "${TEST[@]}"
fi

if [[ $step == all || $step == byon ]]; then
  # BYON's reading, one factor at a time (configs/tune/byon-reading.yaml, screen only), then the winners combined
  # (configs/tune/byon-combine.yaml: screen, the best two confirmed at 8 epochs), at MAE's tuned optimiser and crop
  for grid in byon-reading:screen byon-combine:screen byon-combine:confirm byon-combine-ref:screen; do
    file=${grid%%:*} name=${grid%%:*} confirm=0 budget=()  # the one-factor and reference steps: screen only
    if [[ $file == byon-combine ]]; then  # the last step: BYON's table and winner (byon.md), under the budget
      name=byon confirm=2 budget=(--max-gflops 0.341)
    fi
    for i in 0 1; do
      $BYON bench tune --protocol fmnist-cpu --methods byon --epochs 2 --confirm $confirm "${budget[@]}" \
        --grid-file "configs/tune/$file.yaml" --name "$name" --stage "${grid##*:}" --shard $i/2 \
        --set "${ONE[@]}" optim.blr=1.5e-3 model.pos_embed=sincos 'data.crop_scale=[0.6,1.0]' &
    done
    wait
  done
fi

if [[ $step == all || $step == byon-test ]]; then
  # BYON's three test seeds at its val-chosen default (configs/byon/default.yaml), two processes
  $BYON bench quality --protocol fmnist-cpu --methods byon --seeds 0,2 --set "${TEST[@]}" &
  $BYON bench quality --protocol fmnist-cpu --methods byon --seeds 1 --set "${TEST[@]}" &
  wait
fi

if [[ $step == all || $step == knobs ]]; then
  # MAE's and BYON's own knobs on val, for their kNN gap to raw pixels (configs/tune/v2/{mae-knobs,byon-mask}.yaml);
  # a winner that moves goes into configs/ by hand, and that method's test seeds are re-run. BYON's steps keep the
  # combination step's budget (1.6 x DiffMAE's training GFLOPs per image, the bound)
  BYON_SET=("${MAE_SET[@]}" "${READING[@]}")
  T=(bench tune --protocol fmnist-cpu --epochs 2 --confirm 2)
  for stage in screen confirm; do
    $BYON "${T[@]}" --methods mae --grid-file configs/tune/v2/mae-knobs.yaml --name mae-knobs --stage $stage \
      --set "${MAE_SET[@]}" &
    $BYON "${T[@]}" --methods byon --grid-file configs/tune/v2/byon-mask.yaml --name byon-mask --stage $stage \
      --max-gflops 0.341 --set "${BYON_SET[@]}" &
    wait
  done
fi

if [[ $step == all || $step == optim ]]; then
  # MAE's weight decay and warm-up at full length (configs/tune/v2/mae-optim.yaml; its `base` cell is a copy, so
  # each shard trains one cell), then BYON's own base lr (configs/tune/v2/byon-lr.yaml: screen, confirm 2)
  BYON_SET=("${ONE[@]}" model.pos_embed=sincos "data.crop_scale=[0.6,1.0]" "${READING[@]}")  # blr is the axis
  for i in 0 1; do
    $BYON bench tune --protocol fmnist-cpu --methods mae --grid-file configs/tune/v2/mae-optim.yaml --name mae-optim \
      --confirm 1 --shard $i/2 --set "${MAE_SET[@]}" &
  done
  wait
  for stage in screen confirm; do
    for i in 0 1; do
      $BYON bench tune --protocol fmnist-cpu --methods byon --epochs 2 --confirm 2 --name byon-lr --max-gflops 0.341 \
        --grid-file configs/tune/v2/byon-lr.yaml --stage $stage --shard $i/2 --set "${BYON_SET[@]}" &
    done
    wait
  done
fi

if [[ $step == all || $step == retest ]]; then
  # MAE's and BYON's test seeds again where a knob step moved their recipe (MAE's weight decay 0.15, from `optim`);
  # seeds whose recipe did not move are reused
  for m in mae byon; do
    $BYON bench quality --protocol fmnist-cpu --methods $m --seeds 0,2 "${RERUN[@]}" --set "${TEST[@]}" &
    $BYON bench quality --protocol fmnist-cpu --methods $m --seeds 1 "${RERUN[@]}" --set "${TEST[@]}" &
    wait
  done
  $BYON bench report
fi

if [[ $step == all || $step == baselines ]]; then
  # the paper's Table 2 set first, then the rest; each: 4 cells x 2 epochs, the best 2 confirmed at 8
  for m in simmim diffmae maskdit fnmim ldae ddae ijepa njepa byol supervised; do
    BYON=$BYON SET="train.devices=1 data.crop_scale=[0.6,1.0]" \
      scripts/bench/tune-fmnist-cpu.sh "$m" "--grid-file configs/tune/v2/$m.yaml"
  done
fi

if [[ $step == all || $step == baselines-test ]]; then
  # each tuned baseline on test: seeds 0-2 for the paper's Table 2 set (two processes), seed 0 for the rest (two
  # methods at a time). A method whose configs/<method>.yaml does not carry its val winner yet is skipped.
  Q=(bench quality --protocol fmnist-cpu "${RERUN[@]}" --set "${TEST[@]}")
  rest=()
  for m in simmim diffmae maskdit fnmim ldae ddae ijepa njepa byol supervised; do
    grep -q "Tuned on the val split" "configs/$m.yaml" || { echo "skip $m: configs/$m.yaml is not tuned yet"; continue; }
    case $m in
      simmim|diffmae|maskdit)
        $BYON "${Q[@]}" --methods "$m" --seeds 0,2 &
        $BYON "${Q[@]}" --methods "$m" --seeds 1 &
        wait ;;
      *) rest+=("$m") ;;
    esac
  done
  for ((i = 0; i < ${#rest[@]}; i += 2)); do
    $BYON "${Q[@]}" --methods "${rest[i]}" --seeds 0 &
    [[ -n ${rest[i + 1]:-} ]] && $BYON "${Q[@]}" --methods "${rest[i + 1]}" --seeds 0 &
    wait
  done
  $BYON bench report
fi

if [[ $step == all || $step == epochs3x ]]; then
  # what the budget buys: MAE and BYON at 3x the protocol's epochs (24), seed 0, their tuned recipes, side by side
  E24=(--seeds 0 --tag e24 "${RERUN[@]}" --set train.epochs=24 "${TEST[@]}")
  $BYON bench quality --protocol fmnist-cpu --methods mae "${E24[@]}" &
  $BYON bench quality --protocol fmnist-cpu --methods byon "${E24[@]}" &
  wait
  $BYON bench report
fi

if [[ $step == all || $step == byon-ablations ]]; then
  # the paper's Tables 1, 4 and 6 at the default, 3 seeds. Rows that are one config (Table 1's full row, Table 4's
  # lambda 0.1 and Table 6's 60 % with IAN are the default; Table 6's 60 % without IAN is Table 1's demask +
  # denoise + contrastive + SUE) train once: the second copies the first's record (bench quality's twin_record).
  # Split so the two processes never train the same config at once; the last pass copies the twins. Seed 0 of
  # every row first, then seeds 1 and 2: one seed of each table early, and a stop part-way loses rows' spread, not
  # rows (finished records are reused, an interrupted run resumes from its checkpoint).
  for seeds in 0 1,2; do
    S=(bench sweep --protocol fmnist-cpu --seeds $seeds "${RERUN[@]}" --set "${TEST[@]}")
    $BYON "${S[@]}" --configs configs/byon/ablation/*.yaml &
    $BYON "${S[@]}" --configs configs/byon/lambda_ian/{l0,l05,l1}.yaml configs/byon/mask_ratio/r0{50,70}_*.yaml &
    wait
  done
  S=(bench sweep --protocol fmnist-cpu --seeds 0,1,2 "${RERUN[@]}" --set "${TEST[@]}")
  $BYON "${S[@]}" --configs configs/byon/ablation/*.yaml configs/byon/lambda_ian/*.yaml configs/byon/mask_ratio/*.yaml
  $BYON bench report
fi
