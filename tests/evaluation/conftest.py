"""Seeded COCO fixtures for the evaluation tests: a small hand-built multi-category GT with
VOC and non-VOC names, a results list derived from it, and a subset of the real DAVIS-2016
COCO file (skipped when the shared data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

DAVIS_COCO = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "davis2016-train-subset"
    / "annotations_json"
    / "davis2016_train_subset_coco.json"
)

# 3 VOC classes (person, car, dog), 3 non-VOC (zebra, giraffe, pizza) with COCO ids
SMALL_CATEGORIES = [
    {"id": 1, "name": "person"},
    {"id": 3, "name": "car"},
    {"id": 18, "name": "dog"},
    {"id": 24, "name": "zebra"},
    {"id": 25, "name": "giraffe"},
    {"id": 59, "name": "pizza"},
]


def encode(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def decode(rle: dict) -> np.ndarray:
    r = {"size": rle["size"], "counts": rle["counts"].encode()}
    return mask_util.decode(r).astype(np.uint8)


def box_of(mask: np.ndarray) -> list[float]:
    return [float(v) for v in mask_util.toBbox(mask_util.encode(np.asfortranarray(mask)))]


def _shape(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random rectangle or ellipse with a size spanning COCO's small/medium/large ranges."""
    m = np.zeros((h, w), np.uint8)
    side = int(rng.choice([12, 24, 50, 110]))
    bh, bw = max(4, int(side * rng.uniform(0.6, 1.4))), max(4, int(side * rng.uniform(0.6, 1.4)))
    bh, bw = min(bh, h - 2), min(bw, w - 2)
    y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
    if rng.random() < 0.5:
        m[y : y + bh, x : x + bw] = 1
    else:
        cv2.ellipse(m, (x + bw // 2, y + bh // 2), (bw // 2, bh // 2), 0, 0, 360, 1, -1)
    return m


def perturb(rng: np.random.Generator, m: np.ndarray) -> np.ndarray:
    """Dilate, erode or shift a mask by a few pixels."""
    k = int(rng.integers(1, 6))
    op = rng.integers(0, 3)
    if op == 0:
        return cv2.dilate(m, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    if op == 1:
        out = cv2.erode(m, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
        return out if out.any() else m
    return np.roll(m, (int(rng.integers(-k, k + 1)), int(rng.integers(-k, k + 1))), axis=(0, 1))


def results_from_gt(gt: dict, seed: int, *, fp_per_image: float = 0.5) -> list[dict]:
    """Detections made from the GT: ~15% missing, the rest perturbed, random scores, some
    duplicates with other labels, and false positives; seeded."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    out = []
    for a in gt["annotations"]:
        if rng.random() < 0.15:
            continue
        m = perturb(rng, decode(a["segmentation"]))
        cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cat_ids))
        out.append(_det(a["image_id"], cat, m, rng))
        if rng.random() < 0.2:  # duplicate
            out.append(_det(a["image_id"], cat, perturb(rng, m), rng))
    for im in gt["images"]:
        for _ in range(rng.poisson(fp_per_image)):
            m = _shape(rng, im["height"], im["width"])
            out.append(_det(im["id"], int(rng.choice(cat_ids)), m, rng))
    return out


def _det(image_id: int, cat: int, m: np.ndarray, rng: np.random.Generator) -> dict:
    box = box_of(m)
    box = [box[0] + rng.uniform(-1, 1), box[1] + rng.uniform(-1, 1), box[2], box[3]]
    return {
        "image_id": int(image_id),
        "category_id": int(cat),
        "score": float(rng.random()),
        "bbox": box,
        "segmentation": encode(m),
    }


def make_small_gt(seed: int = 0, n_images: int = 8, h: int = 150, w: int = 200) -> dict:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i:04d}.jpg", "height": h, "width": w})
        for _ in range(int(rng.integers(2, 6))):
            m = _shape(rng, h, w)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(rng.choice([c["id"] for c in SMALL_CATEGORIES])),
                    "segmentation": encode(m),
                    "area": float(m.sum()),
                    "bbox": box_of(m),
                    "iscrowd": int(rng.random() < 0.05),
                }
            )
    return {"images": images, "annotations": anns, "categories": SMALL_CATEGORIES}


@pytest.fixture
def small_gt() -> dict:
    return make_small_gt()


@pytest.fixture
def small_results(small_gt: dict) -> list[dict]:
    return results_from_gt(small_gt, seed=1)


@pytest.fixture(scope="session")
def davis_subset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict]]:
    """Every 10th image of the real DAVIS-2016 subset (60 images), written as a reduced GT JSON,
    and seeded perturbed detections for it."""
    if not DAVIS_COCO.is_file():
        pytest.skip(f"shared DAVIS-2016 data not found at {DAVIS_COCO}")
    full = json.loads(DAVIS_COCO.read_text())
    keep = {im["id"] for im in full["images"][::10]}
    gt = {
        "info": full.get("info", {}),
        "categories": full["categories"],
        "images": [im for im in full["images"] if im["id"] in keep],
        "annotations": [a for a in full["annotations"] if a["image_id"] in keep],
    }
    path = tmp_path_factory.mktemp("davis") / "davis_subset_coco.json"
    path.write_text(json.dumps(gt))
    return path, gt, results_from_gt(gt, seed=2, fp_per_image=0.7)
