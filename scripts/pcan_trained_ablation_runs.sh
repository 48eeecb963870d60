#!/bin/bash
# The training runs of issue 15's trained PCAN ablation rows (docs/pcan_trained_ablations.md):
# every row is `instseg train configs/pcan_objects.yaml` with one setting changed, 600
# iterations, fp32, 1 thread, seeds 0 1 2, the same cached training videos and the same
# reference frames (data.max_gap=4 for every row: key / reference pairs are identical, only
# what the memory reads differs). Under one seed every row starts from the same weights
# (segmenter from objects_default.pt; track head drawn before the temporal modules).
#   [OUT=runs/abl15] [ROWS="img t1 t4 t4off"] [SEEDS="0 1 2"] bash scripts/pcan_trained_ablation_runs.sh
# rows: img t1 t4 t4off (default) and t4init t4m05 t1fg1 t1fg16 (docs/pcan_trained_ablations.md)
# Then score them: see the command in docs/pcan_trained_ablations.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/abl15}
ROWS=${ROWS:-"img t1 t4 t4off"}
SEEDS=${SEEDS:-"0 1 2"}
mkdir -p "$OUT"
for seed in $SEEDS; do
  for row in $ROWS; do
    case $row in
      img) ov="model.name=pcan_fast_image model.memory_length=4 data.memory_frames=0";;
      t1) ov="model.name=pcan_fast model.memory_length=1 data.memory_frames=0";;
      t4) ov="model.name=pcan_fast model.memory_length=4 data.memory_frames=3";;
      t4off) ov="model.name=pcan_fast model.memory_length=4 data.memory_frames=3 model.instance_update=off";;
      t4init) ov="model.name=pcan_fast model.memory_length=4 data.memory_frames=3 model.instance_update=initial";;
      t4m05) ov="model.name=pcan_fast model.memory_length=4 data.memory_frames=3 model.instance_momentum=0.5";;
      t1fg1) ov="model.name=pcan_fast model.memory_length=1 data.memory_frames=0 model.instance_prototypes=[1,1]";;
      t1fg16) ov="model.name=pcan_fast model.memory_length=1 data.memory_frames=0 model.instance_prototypes=[16,16]";;
      *) echo "unknown row $row (img t1 t4 t4off t4init t4m05 t1fg1 t1fg16)" >&2; exit 2;;
    esac
    out=$OUT/${row}_s$seed
    [ -f "$out/model.pt" ] && continue
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/instseg train configs/pcan_objects.yaml \
      $ov data.max_gap=4 solver.max_iters=600 solver.amp=none seed=$seed threads=1 \
      data.cache_dir=runs/pcan_objects/data out_dir=$out > "$out.log" 2>&1
  done
done
