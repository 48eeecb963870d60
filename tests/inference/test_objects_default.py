"""The shipped default image model: class-agnostic objects (src/instseg/weights/objects_default.pt,
see its model card), scored on a scene made only of held-out DAVIS sequences."""

from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.data.davis_splits import IMAGE_HELD_OUT
from instseg.data.synthetic import SceneConfig, make_scene
from instseg.data.synthetic_cutouts import CutoutBank, find_davis_roots
from instseg.engine.weights import shipped_weights

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "instseg" / "weights" / "objects_default.pt"
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped objects model")


def test_release_file_is_small_fp16_and_safe(release_file):
    obj = release_file(WEIGHTS)
    meta = obj["meta"]
    assert meta["task"] == "image" and tuple(meta["class_names"]) == ("object",)
    assert set(meta["training"]["held_out"]) == set(IMAGE_HELD_OUT)  # provenance in the file


def test_it_is_the_default_of_instseg_predict():
    assert shipped_weights("image") == WEIGHTS


@pytest.mark.skipif(len(find_davis_roots()) < 2, reason="shared DAVIS-2016 folders not found")
def test_finds_held_out_objects_over_held_out_backgrounds():
    from instseg.inference.predictor import ImagePredictor
    from instseg.structures.masks import mask_iou

    bank = CutoutBank.load(
        find_davis_roots(), frames_per_sequence=4, include=IMAGE_HELD_OUT, class_name="object"
    )
    cfg = SceneConfig(
        image_size=(320, 320), min_objects=2, max_objects=3, occlusion=0.2, min_size=0.3,
        max_size=0.6, cutout_prob=1.0, real_background_prob=1.0, class_agnostic=True,
    )  # fmt: skip
    predictor = ImagePredictor(WEIGHTS, device="cpu")
    found = []
    for i in range(3):
        image, objects = make_scene(np.random.default_rng([4242, i]), cfg, bank=bank)
        gt = torch.stack([torch.from_numpy(o["visible"]) for o in objects if o["annotated"]])
        inst = predictor(image)
        keep = inst.scores > 0.3
        assert predictor.class_names == ["object"]
        if int(keep.sum()) == 0:
            found += [0.0] * len(gt)
            continue
        found += (mask_iou(inst.masks[keep], gt).max(0).values > 0.5).float().tolist()
    # most unseen objects are found by some confident detection with a decent mask
    assert float(np.mean(found)) >= 0.5


def test_instseg_predict_uses_it_and_labels_objects(tmp_path: Path) -> None:
    import json

    import cv2

    from instseg.cli.main import main

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    image, _ = make_scene(rng, SceneConfig(image_size=(160, 200), min_objects=2, max_objects=2))
    cv2.imwrite(str(src / "a.png"), image[..., ::-1])
    assert main(["predict", "--source", str(src), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["category_id"] for r in results} <= {1}  # the one class, "object"
