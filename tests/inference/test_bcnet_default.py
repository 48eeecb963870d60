"""The shipped BCNet model (src/instseg/weights/bcnet_default.pt, card bcnet_default.md): the
objects recipe with the bilayer GCN head; ``instseg predict --model bcnet`` runs it and
``--explain`` draws its occluder and occludee maps."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from instseg.data.davis_splits import IMAGE_HELD_OUT
from instseg.data.synthetic import SceneConfig, make_scene
from instseg.data.synthetic_cutouts import CutoutBank, find_davis_roots
from instseg.engine.weights import SHIPPED_IMAGE_MODELS

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "instseg" / "weights" / "bcnet_default.pt"


def test_release_file_is_small_fp16_safe_and_named_bcnet(release_file):
    obj = release_file(WEIGHTS)
    meta = obj["meta"]
    assert meta["model"]["name"] == "effl0_fcos_bcnet"
    assert tuple(meta["class_names"]) == ("object",)
    assert set(meta["training"]["held_out"]) == set(IMAGE_HELD_OUT)
    assert SHIPPED_IMAGE_MODELS["bcnet"] == WEIGHTS


def _scenes(n: int) -> list[tuple[np.ndarray, list[dict]]]:
    roots = find_davis_roots()
    bank = None
    if roots:
        bank = CutoutBank.load(
            roots, frames_per_sequence=3, include=IMAGE_HELD_OUT, class_name="object"
        )
    cfg = SceneConfig(
        image_size=(320, 320), min_objects=3, max_objects=4, occlusion=0.9, min_size=0.3,
        max_size=0.6, cutout_prob=1.0 if bank else 0.0, real_background_prob=1.0 if bank else 0.0,
        class_agnostic=True,
    )  # fmt: skip
    return [make_scene(np.random.default_rng([777, i]), cfg, bank=bank) for i in range(n)]


@torch.no_grad()
def test_layer_one_marks_the_occluders_of_occluded_objects():
    """With the GT box of an occluded object, the first graph layer's occluder map is high on
    the occluders' pixels inside the box and low elsewhere (unseen objects when the shared
    DAVIS data is there)."""
    from instseg.inference.loading import load_trained_model
    from instseg.models.segmenter import project_masks
    from instseg.structures.masks import masks_to_boxes

    model, _ = load_trained_model(WEIGHTS)
    on, off = [], []
    for image, objects in _scenes(4):
        objs = [o for o in objects if o["annotated"] and o["occlusion_ratio"] > 0.3]
        if not objs:
            continue
        vis = torch.from_numpy(np.stack([o["visible"] for o in objs]))
        occ = torch.from_numpy(np.stack([o["occluder"] for o in objs]))
        boxes = masks_to_boxes(vis).float()
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        feats, padded = model.features(x)
        out = model.mask_head(model.mask_roi_pool(feats, [boxes], [padded]))
        prob = out["occluder_mask"][:, 0].sigmoid()
        target = project_masks(occ, boxes, torch.arange(len(objs)), prob.shape[-1]) > 0.5
        on.append(prob[target])
        off.append(prob[~target])
    on_mean, off_mean = float(torch.cat(on).mean()), float(torch.cat(off).mean())
    assert on_mean > off_mean + 0.25, (on_mean, off_mean)


def test_instseg_predict_model_bcnet_explain_draws_both_layers(tmp_path: Path) -> None:
    from instseg.cli.main import main

    src = tmp_path / "src"
    src.mkdir()
    image, _ = _scenes(1)[0]
    cv2.imwrite(str(src / "a.png"), image[..., ::-1])
    out = tmp_path / "out"
    argv = ["predict", "--model", "bcnet", "--source", str(src), "--out", str(out), "--explain"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results and {r["category_id"] for r in results} == {1}
    panels = sorted((out / "explain").glob("a_roi*.png"))
    assert panels
    # crop, occluder contour, occluder mask, occludee contour, occludee mask, final mask
    assert cv2.imread(str(panels[0])).shape[1] == 6 * 112
