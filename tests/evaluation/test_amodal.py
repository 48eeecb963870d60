"""Amodal AP, AP on occluded instances and COCO-OCC subset AP on hand-made GT files in the
synthetic, KINS and COCOA layouts (instseg.evaluation.amodal)."""

from __future__ import annotations

import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from instseg.data.coco import CocoInstanceDataset
from instseg.evaluation.amodal import (
    evaluate_occlusion,
    occluded_gt,
    to_coco_gt,
    write_eval_gt,
)
from instseg.evaluation.coco import evaluate_coco

H, W = 40, 64


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def rle(m):
    r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [H, W], "counts": r["counts"].decode()}


def box(m):
    return [float(v) for v in mask_util.toBbox(mask_util.encode(np.asfortranarray(m)))]


def decode(segm, h=H, w=W):
    if isinstance(segm, list):
        return mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, h, w)))
    return mask_util.decode({"size": segm["size"], "counts": segm["counts"].encode()})


# image 1: A (front) hides the top-left part of B; C stands alone. image 2: D, E apart.
A = rect(4, 4, 24, 24)
B_AMODAL = rect(14, 14, 34, 34)
B_VISIBLE = B_AMODAL & (1 - A)
C = rect(44, 6, 60, 30)
D = rect(2, 2, 20, 20)
E = rect(40, 10, 60, 36)
OBJECTS = [  # image, category, visible, amodal, depth
    (1, 1, A, A, 0),
    (1, 2, B_VISIBLE, B_AMODAL, 1),
    (1, 1, C, C, 0),
    (2, 2, D, D, 0),
    (2, 1, E, E, 0),
]
CATS = [{"id": 1, "name": "cat", "split": "base"}, {"id": 2, "name": "dog", "split": "novel"}]
IMAGES = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2)]


def synthetic_gt():
    anns = []
    for k, (img, cat, vis, amo, depth) in enumerate(OBJECTS):
        anns.append(
            {
                "id": 10 + k,
                "image_id": img,
                "category_id": cat,
                "iscrowd": 0,
                "segmentation": rle(vis),
                "bbox": box(vis),
                "area": int(vis.sum()),
                "amodal_segm": rle(amo),
                "amodal_bbox": box(amo),
                "depth_order": depth,
                "occlusion_ratio": 1 - vis.sum() / amo.sum(),
            }
        )
    return {"images": IMAGES, "annotations": anns, "categories": CATS}


def poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


# KINS: polygons; B's visible part is an L shape
L_SHAPE = [[24, 14, 34, 14, 34, 34, 14, 34, 14, 24, 24, 24]]
KINS_OBJECTS = [  # image, category, i_segm, a_segm
    (1, 1, poly(4, 4, 24, 24), poly(4, 4, 24, 24)),
    (1, 2, L_SHAPE, poly(14, 14, 34, 34)),
    (1, 1, poly(44, 6, 60, 30), poly(44, 6, 60, 30)),
    (2, 2, poly(2, 2, 20, 20), poly(2, 2, 20, 20)),
]


def kins_gt():
    anns = []
    for k, (img, cat, vis, amo) in enumerate(KINS_OBJECTS):
        v = decode(vis)
        a = decode(amo)
        anns.append(
            {
                "id": k + 1,
                "image_id": img,
                "category_id": cat,
                "i_segm": vis,
                "a_segm": amo,
                "i_bbox": box(v),
                "a_bbox": box(a),
                "iscrowd": 0,
                "oco_id": 1,
                "ico_id": k,
                "area": int(v.sum()),
            }
        )
    return {"images": IMAGES, "annotations": anns, "categories": CATS}


def cocoa_gt():
    """COCOA: one annotation per image with regions; no categories, no ids."""
    regions_1 = [
        {"segmentation": [4, 4, 24, 4, 24, 24, 4, 24], "order": 1, "isStuff": False,
         "name": "a", "occlude_rate": 0.0, "area": 400},
        {"segmentation": [14, 14, 34, 14, 34, 34, 14, 34], "order": 2, "isStuff": False,
         "name": "b", "visible_mask": rle(B_VISIBLE), "invisible_mask": rle(B_AMODAL & A),
         "occlude_rate": 0.25, "area": 400},
        {"segmentation": [44, 6, 60, 6, 60, 30, 44, 30], "order": 1, "isStuff": True,
         "name": "wall", "occlude_rate": 0.0, "area": 384},
    ]  # fmt: skip
    regions_2 = [{"segmentation": [2, 2, 20, 2, 20, 20, 2, 20], "order": 1, "isStuff": False}]
    return {
        "images": IMAGES,
        "annotations": [
            {"id": 1, "image_id": 1, "regions": regions_1},
            {"id": 2, "image_id": 2, "regions": regions_2},
        ],
    }


def results_from(masks_by_image, score=0.9):
    out = []
    for img, cat, m in masks_by_image:
        out.append(
            {"image_id": img, "category_id": cat, "segmentation": rle(m), "bbox": box(m),
             "score": score}
        )  # fmt: skip
    return out


def write_images(root):
    root.mkdir(parents=True, exist_ok=True)
    for im in IMAGES:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / im["file_name"])


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize("layout", ["synthetic", "kins", "cocoa"])
def test_converted_amodal_gt_matches_the_dataset_loader(layout, tmp_path):
    """Each layout's amodal GT equals what CocoInstanceDataset trains on (amodal | visible),
    and the visible GT equals its visible masks."""
    data = {"synthetic": synthetic_gt, "kins": kins_gt, "cocoa": cocoa_gt}[layout]()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    write_images(tmp_path)
    ds = CocoInstanceDataset(path, tmp_path)
    assert ds.layout == layout
    amodal = to_coco_gt(path, target="amodal")
    visible = to_coco_gt(path, target="visible")
    for idx, image_id in enumerate(ds.image_ids):
        inst = ds[idx]["instances"]
        a_anns = [a for a in amodal["annotations"] if a["image_id"] == image_id]
        v_anns = [a for a in visible["annotations"] if a["image_id"] == image_id]
        assert len(a_anns) == len(v_anns) == len(inst)
        for j, (aa, va) in enumerate(zip(a_anns, v_anns, strict=True)):
            want_amo = (inst.amodal_masks[j] | inst.masks[j]).numpy()
            assert np.array_equal(decode(aa["segmentation"]).astype(bool), want_amo)
            assert np.array_equal(decode(va["segmentation"]).astype(bool), inst.masks[j].numpy())
            assert aa["area"] == want_amo.sum()
            assert aa["bbox"] == box(want_amo.astype(np.uint8))
            ratio = 1 - inst.masks[j].sum().item() / want_amo.sum()
            assert aa["occlusion_ratio"] == pytest.approx(ratio, abs=1e-6)
    if layout == "cocoa":
        assert [c["id"] for c in amodal["categories"]] == [1, 2]
        assert [a["category_id"] for a in amodal["annotations"]] == [1, 1, 2, 1]
    # the occluded object is the only one with a positive ratio (B: 100 of 400 pixels hidden)
    ratios = [a["occlusion_ratio"] for a in amodal["annotations"]]
    assert [r > 0.1 for r in ratios] == [False, True, False, False] + [False] * (len(ratios) - 4)
    assert ratios[1] == pytest.approx(0.25, abs=0.02)


def test_write_eval_gt_keeps_plain_files_and_converts_the_rest(tmp_path):
    syn = tmp_path / "syn.json"
    syn.write_text(json.dumps(synthetic_gt()))
    kins = tmp_path / "kins.json"
    kins.write_text(json.dumps(kins_gt()))
    assert write_eval_gt(syn, tmp_path / "a", target="visible") == syn
    p = write_eval_gt(kins, tmp_path / "b", target="visible")
    assert p.name == "gt_visible.json" and len(json.loads(p.read_text())["annotations"]) == 4
    plain = tmp_path / "plain.json"
    data = synthetic_gt()
    for a in data["annotations"]:
        for k in ("amodal_segm", "amodal_bbox", "depth_order", "occlusion_ratio"):
            a.pop(k)
    plain.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="plain.json.*no amodal masks"):
        write_eval_gt(plain, tmp_path / "c", target="amodal")


# ---------------------------------------------------------------- metrics


def test_amodal_ap_rewards_amodal_predictions_only():
    gt = synthetic_gt()
    amodal_preds = results_from([(i, c, amo) for i, c, _, amo, _ in OBJECTS])
    visible_preds = results_from([(i, c, vis) for i, c, vis, _, _ in OBJECTS])
    amodal_gt = to_coco_gt(gt, target="amodal")
    visible_gt = to_coco_gt(gt, target="visible")
    assert evaluate_coco(amodal_gt, amodal_preds)["AP"] == pytest.approx(100.0)
    assert evaluate_coco(visible_gt, visible_preds)["AP"] == pytest.approx(100.0)
    # B: visible 300 px vs amodal 400 px -> IoU 0.75: a miss at IoU thresholds 0.8..0.95
    cross = evaluate_coco(amodal_gt, visible_preds)
    assert 50.0 < cross["AP"] < 100.0 and cross["AP50"] == pytest.approx(100.0)


def test_occluded_gt_marks_unoccluded_instances_as_crowd():
    g = occluded_gt(to_coco_gt(synthetic_gt(), target="visible"), min_occlusion=0.1)
    assert [a["iscrowd"] for a in g["annotations"]] == [1, 0, 1, 1, 1]
    assert [a["occluded"] for a in g["annotations"]] == [False, True, False, False, False]
    # plain COCO (no ratios): the box rule (IoU >= 0.2) marks both members of an overlapping pair
    plain = to_coco_gt(synthetic_gt(), target="visible")
    for a in plain["annotations"]:
        a["occlusion_ratio"] = None
    plain["annotations"][4]["bbox"] = [5.0, 5.0, 20.0, 20.0]  # E now overlaps D
    g = occluded_gt(plain, min_overlap=0.2)
    assert [a["occluded"] for a in g["annotations"]] == [False, False, False, True, True]


def test_ap_on_occluded_instances_ignores_other_objects():
    """Perfect on the occluded object B, misses (shifted masks) on every other object: full AP
    is low, AP on occluded instances is 100 (only B is a positive); a confident false positive
    on empty background still counts against it."""
    gt = to_coco_gt(synthetic_gt(), target="visible")
    preds = results_from([(1, 2, B_VISIBLE)], score=0.95)
    others = [(i, c, np.roll(vis, 9, axis=1)) for i, c, vis, _, _ in OBJECTS[:1] + OBJECTS[2:]]
    preds += results_from(others, score=0.9)
    full = evaluate_coco(gt, preds)
    occ = evaluate_coco(occluded_gt(gt), preds)
    assert occ["AP"] == pytest.approx(100.0)
    assert full["AP"] < 50.0
    fp = results_from([(2, 2, rect(24, 28, 36, 38))], score=0.99)  # background, image 2
    assert evaluate_coco(occluded_gt(gt), fp + preds)["AP"] == pytest.approx(50.0)


def test_evaluate_occlusion_groups_and_coco_occ_subset(tmp_path):
    gt_path = tmp_path / "kins.json"
    gt_path.write_text(json.dumps(kins_gt()))
    amodal_gt = to_coco_gt(gt_path, target="amodal")
    preds = [
        {"image_id": a["image_id"], "category_id": a["category_id"],
         "segmentation": a["segmentation"], "bbox": a["bbox"], "score": 0.9}
        for a in amodal_gt["annotations"]
    ]  # fmt: skip
    m = evaluate_occlusion(
        gt_path, preds, work_dir=tmp_path / "w", target="amodal", iou_types=("segm",)
    )
    assert set(m) == {"amodal", "amodal_occluded", "occluded", "coco_occ"}
    assert m["amodal"]["segm"]["AP"] == pytest.approx(100.0)
    assert m["occluded"]["segm"]["AP"] == pytest.approx(100.0)
    # COCO-OCC: only image 1 has an overlapping pair (A/B boxes IoU = 100/700 < 0.2 -> none!)
    assert m["coco_occ"]["num_images"] == 0
    m = evaluate_occlusion(
        gt_path, preds, work_dir=tmp_path / "w2", target="amodal", amodal=False,
        occluded=False, min_overlap=0.1, iou_types=("segm", "bbox"),
    )  # fmt: skip
    assert set(m) == {"coco_occ"} and m["coco_occ"]["num_images"] == 1
    assert m["coco_occ"]["segm"]["AP"] == pytest.approx(100.0)
    assert math.isfinite(m["coco_occ"]["bbox"]["AP"])
    sub = json.loads((tmp_path / "w2" / "gt_amodal_coco_occ.json").read_text())
    assert [im["id"] for im in sub["images"]] == [1]


def test_bad_gt_names_the_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(ValueError, match="bad.json.*height and width"):
        to_coco_gt(p)
    with pytest.raises(ValueError, match="target"):
        to_coco_gt(synthetic_gt(), target="modal")


def test_use_amodal_masks_transform_swaps_targets():
    from instseg.data.amodal_target import UseAmodalMasks
    from instseg.structures import Instances

    vis = torch.from_numpy(np.stack([A, B_VISIBLE])).bool()
    amo = torch.from_numpy(np.stack([A, B_AMODAL])).bool()
    inst = Instances(
        image_size=(H, W),
        boxes=torch.tensor([[4.0, 4, 24, 24], [14.0, 14, 34, 34]]),
        labels=torch.tensor([0, 1]),
        masks=vis,
        amodal_masks=amo,
        depth=torch.tensor([0, 1]),
    )
    img = torch.zeros(3, H, W, dtype=torch.uint8)
    _, out = UseAmodalMasks()(img, inst)
    assert torch.equal(out.masks, amo)
    assert out.boxes[1].tolist() == [14.0, 14.0, 34.0, 34.0]
    # occluder of B = the visible part of A that overlaps B's box region
    assert out.occluder_masks[1].sum() > 0 and not out.occluder_masks[0].any()
    assert not (out.occluder_masks[1] & ~vis[0]).any()
    with pytest.raises(ValueError, match="amodal"):
        UseAmodalMasks()(img, inst.replace(amodal_masks=None))
