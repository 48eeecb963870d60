"""The propagation recipe: ``configs/propagation_davis.yaml`` is the model card's command, held-out
sequences are refused before any work, and the pair stream follows the seeded global ``random``.
(Tiny end-to-end runs and resume: tests/cli/test_train.py.)"""

from __future__ import annotations

import importlib.util
import itertools
import random
import re
import shlex
from pathlib import Path

import pytest
import torch

from instseg.config import ConfigError, load_config, to_dict
from instseg.recipes.propagation import propagation_batches, train_propagation
from instseg.recipes.propagation_config import PropagationTrainConfig

ROOT = Path(__file__).resolve().parents[2]
CARD = ROOT / "src" / "instseg" / "weights" / "propagation_default.md"


def test_config_is_the_model_card_command():
    spec = importlib.util.spec_from_file_location(
        "train_propagation", ROOT / "scripts" / "train_propagation.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = " ".join(CARD.read_text().split())
    command = re.search(r"`python scripts/train_propagation\.py ([^`]*)`", text).group(1)
    args = script._parser().parse_args(shlex.split(command))
    yaml_cfg = load_config(PropagationTrainConfig, ROOT / "configs" / "propagation_davis.yaml")
    assert to_dict(yaml_cfg) == to_dict(script.config_from_args(args))
    assert "instseg train configs/propagation_davis.yaml" in text


def test_held_out_sequences_are_refused(tmp_path):
    cfg = PropagationTrainConfig(out_dir=str(tmp_path / "run"))
    cfg.data.sequences = ["boat", "bus"]
    with pytest.raises(ConfigError, match=r"\['bus'\] are held out"):
        train_propagation(cfg)
    assert not (tmp_path / "run").exists()


def test_pairs_follow_the_seeded_global_random():
    data = [
        (torch.randn(6, 4, 2, 3), torch.rand(6, 2, 3)),
        (torch.randn(9, 4, 2, 3), torch.rand(9, 2, 3)),
    ]
    random.seed(3)
    first = list(itertools.islice(propagation_batches(data, max_gap=2), 20))
    random.seed(3)
    again = list(itertools.islice(propagation_batches(data, max_gap=2), 20))
    for a, b in zip(first, again, strict=True):
        assert a["frames"].shape == (2, 4, 2, 3) and torch.equal(a["frames"], b["frames"])
        assert a["mask"].shape == a["target"].shape == (2, 3)
    # t1 - t0 in 1..max_gap (clipped to the last frame): the target is never the t0 mask
    for b in first:
        assert not torch.equal(b["frames"][0], b["frames"][1])
