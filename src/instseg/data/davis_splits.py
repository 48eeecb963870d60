"""Which sequences of the shared DAVIS-2016 subset (``../shared/data/davis2016-train-subset``)
each experiment trains / tunes on and which it keeps out for evaluation. One place, so training
scripts can refuse evaluation sequences and evaluation scripts default to them."""

from __future__ import annotations

__all__ = ["VOIN_EVAL", "VOIN_TRAIN", "SEMISUP_HELD_OUT", "SEMISUP_TUNING"]

# VOIN (recipes/inpainting.py, scripts/voin_baselines.py, repro_voin.py): objects occluded by
# cutouts
VOIN_EVAL = ("boat", "bus", "elephant")
VOIN_TRAIN = (
    "breakdance-flare",
    "dance-jump",
    "flamingo",
    "mallard-fly",
    "rollerblade",
    "soccerball",
)

# Semi-supervised propagation (scripts/davis_semisup.py, recipes/propagation.py; also kept out of
# the PCAN video training cutouts, configs/pcan_synthetic.yaml)
SEMISUP_HELD_OUT = ("bus", "soccerball", "mallard-fly")
SEMISUP_TUNING = ("boat", "flamingo", "rollerblade", "breakdance-flare", "dance-jump", "elephant")
