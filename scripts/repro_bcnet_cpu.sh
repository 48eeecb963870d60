#!/usr/bin/env bash
# The CPU-budget run behind the BCNet table of the issue notes (about 50 minutes on 2 cores):
# every mask head trained alone (400 x 4 images, seeds 0 1 2) on top of the shipped demo
# detector (src/instseg/weights/demo_image.pt, frozen: the same detections for every variant,
# so the table isolates the mask head), on heavily occluded synthetic scenes (occlusion 0.9,
# 1200 training / 200 held-out images). Re-running skips finished runs.
# Usage: bash scripts/repro_bcnet_cpu.sh [OUT] [VARIANTS...]
# Only the backbone and detector are loaded from the weights file (model.weights_modules):
# every mask head, the Mask R-CNN baseline included, starts from its own initialisation
# (issue 14: before, the baseline loaded the file's trained head and the others did not).
# For the cached-feature head benchmark with intervals see benchmarks/mask_heads.py.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/repro_bcnet}
shift || true
VARIANTS=${*:-maskrcnn single_gcn bilayer_fcn bcnet}
export OMP_WAIT_POLICY=PASSIVE
# shellcheck disable=SC2086
.venv/bin/python scripts/repro_bcnet.py --out "$OUT" --config src/instseg/configs/demo.yaml \
  --iters 400 --seeds 0 1 2 --variants $VARIANTS --no-progress \
  --set model.weights=src/instseg/weights/demo_image.pt --set 'model.weights_modules=[backbone,detector]' \
  --set 'model.freeze=[backbone,detector]' \
  --set data.batch_size=4 --set threads=2
