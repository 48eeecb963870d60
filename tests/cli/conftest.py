"""A tiny untrained image model saved as a weights file (no training needed)."""

from pathlib import Path

import pytest
import torch

from instseg.engine.checkpoint import save_weights
from instseg.models.build import ModelConfig, build_model_from_config

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "davis2016-train-subset"


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    mcfg = ModelConfig(name="effl0_fcos_maskrcnn", pretrained=False, frozen_bn=True)
    model = build_model_from_config(mcfg, num_classes=2)
    meta = {
        "task": "image",
        "model": {"name": mcfg.name, "pretrained": False, "frozen_bn": True},
        "num_classes": 2,
        "category_ids": [1, 7],
        "class_names": ["object", "thing"],
        "test_min_size": 96,
        "max_size": 160,
    }
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    save_weights(model, path, half=True, meta=meta)
    return path
