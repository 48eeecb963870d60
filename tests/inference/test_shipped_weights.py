"""The shipped default image model (src/instseg/weights/demo_image.pt, see its model card)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.data.synthetic import SceneConfig, make_scene

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "instseg" / "weights" / "demo_image.pt"
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped image model")


def test_release_file_is_small_fp16_and_safe(release_file):
    obj = release_file(WEIGHTS)
    assert obj["meta"]["task"] == "image" and len(obj["meta"]["class_names"]) > 0


def test_default_model_finds_objects_in_a_held_out_scene():
    from instseg.inference.predictor import ImagePredictor
    from instseg.structures.masks import mask_iou

    predictor = ImagePredictor(WEIGHTS, device="cpu")
    rng = np.random.default_rng([4242, 0])  # a seed no generated split uses
    image, objects = make_scene(rng, SceneConfig(min_objects=2, max_objects=3, occlusion=0.2))
    gt = torch.stack([torch.from_numpy(o["visible"]) for o in objects if o["annotated"]])
    inst = predictor(image)
    keep = inst.scores > 0.3
    assert int(keep.sum()) >= 1
    iou = mask_iou(inst.masks[keep], gt)
    # most annotated objects are found by some confident detection with a decent mask
    assert float((iou.max(0).values > 0.5).float().mean()) >= 0.5
