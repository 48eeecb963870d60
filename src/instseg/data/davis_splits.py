"""Which sequences of the shared DAVIS-2016 subset (``../shared/data/davis2016-train-subset``)
each experiment trains / tunes on and which it keeps out for evaluation. One place, so training
scripts can refuse evaluation sequences and evaluation scripts default to them."""

from __future__ import annotations

__all__ = ["IMAGE_HELD_OUT", "VOIN_EVAL", "VOIN_TRAIN", "SEMISUP_HELD_OUT", "SEMISUP_TUNING"]

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

# The shared image model (configs/objects_davis.yaml): sequences of the 30 shared DAVIS-2016
# training sequences whose objects *and* frames (backgrounds) never enter its training scenes;
# its "unseen" validation is made only of them. It includes the VOIN and semi-supervised
# evaluation sequences (so the models built on it stay clean there) and mallard-water, the
# near-twin of mallard-fly; stroller and bmx-bumps add a person with a pram and a bike rider.
IMAGE_HELD_OUT = (
    "boat",
    "bus",
    "elephant",
    "mallard-fly",
    "mallard-water",
    "soccerball",
    "stroller",
    "bmx-bumps",
)
