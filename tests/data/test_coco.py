"""CocoInstanceDataset: COCO layouts, amodal layouts (synthetic, KINS, COCOA), bad input, real data.

Every fixture is generated in tmp_path: tiny PNGs plus JSON files.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from instseg.data.coco import CocoInstanceDataset, detect_layout
from instseg.data.transforms import RandomHorizontalFlip
from instseg.structures import mask_to_rle
from instseg.utils.image import ImageReadError

H, W = 20, 30
DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"


def rect(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """Polygon covering pixels x0..x1-1, y0..y1-1 (pycocotools convention)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def bitmap(*rects: tuple[int, int, int, int], h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in rects:
        m[y0:y1, x0:x1] = True
    return m


def uncompressed(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.flatten(order="F").astype(int)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def write_images(root: Path, names: list[str], h: int = H, w: int = W) -> None:
    rng = np.random.default_rng(0)
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / n)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def images_json(n: int = 3) -> list[dict[str, Any]]:
    return [{"id": i + 1, "file_name": f"im{i + 1}.png", "height": H, "width": W} for i in range(n)]


def load(path: Path, root: Path, **kw: Any) -> CocoInstanceDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CocoInstanceDataset(path, root, **kw)


# -- plain COCO -------------------------------------------------------------------------------
@pytest.fixture()
def coco_file(tmp_path: Path) -> Path:
    write_images(tmp_path, ["im1.png", "im2.png", "im3.png"])
    anns = [
        # image 1: polygon (cat 5), compressed RLE (cat 2), crowd uncompressed RLE (cat 2)
        {
            "id": 10,
            "image_id": 1,
            "category_id": 5,
            "iscrowd": 0,
            "segmentation": [rect(2, 3, 8, 9)],
            "bbox": [2, 3, 6, 6],
        },
        {
            "id": 11,
            "image_id": 1,
            "category_id": 2,
            "iscrowd": 0,
            "segmentation": mask_to_rle(bitmap((10, 0, 20, 5))),
            "bbox": [10, 0, 10, 5],
        },
        {
            "id": 12,
            "image_id": 1,
            "category_id": 2,
            "iscrowd": 1,
            "segmentation": uncompressed(bitmap((0, 15, 30, 20))),
            "bbox": [0, 15, 30, 5],
        },
        # image 2: a degenerate part next to a good one, and a box partly outside the image
        {
            "id": 20,
            "image_id": 2,
            "category_id": 5,
            "iscrowd": 0,
            "segmentation": [[1, 1, 2, 2], rect(20, 10, 30, 20)],
            "bbox": [20, 10, 15, 15],
        },
        # bad ones
        {"id": 30, "image_id": 99, "category_id": 5, "segmentation": [rect(0, 0, 3, 3)]},
        {"id": 31, "image_id": 2, "category_id": 77, "segmentation": [rect(0, 0, 3, 3)]},
        {
            "id": 32,
            "image_id": 2,
            "category_id": 2,
            "segmentation": [[0, 0, 5, 0, float("nan"), 5]],
        },
        {"id": 33, "image_id": 2, "category_id": 2, "segmentation": [[0, 0, 5, 5, 10, 10]]},
    ]
    cats = [{"id": 5, "name": "five"}, {"id": 2, "name": "two"}]
    return write_json(
        tmp_path / "coco.json", {"images": images_json(), "annotations": anns, "categories": cats}
    )


def test_plain_coco_parsing(coco_file: Path) -> None:
    with pytest.warns(UserWarning) as rec:
        ds = CocoInstanceDataset(coco_file, coco_file.parent)
    # exactly one warning at construction, naming the file and every problem with its count
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "coco.json" in msg
    assert "1 unknown image id" in msg and "1 unknown category id" in msg
    assert "3 degenerate polygon dropped" in msg and "2 annotation without a valid mask" in msg
    assert ds.layout == "coco" and detect_layout([{"segmentation": []}]) == "coco"
    assert ds.category_ids == [2, 5] and ds.category_names == ["two", "five"]
    assert ds.image_ids == [1, 2, 3] and len(ds) == 3
    assert ds.stats["crowd dropped"] == 1

    s = ds[0]
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, H, W)
    assert s["image_id"] == 1 and s["file_name"] == "im1.png" and s["orig_size"] == (H, W)
    inst = s["instances"]
    assert inst.labels.tolist() == [1, 0]  # cat 5 -> 1, cat 2 -> 0
    assert inst.masks is not None and inst.masks.dtype == torch.bool
    assert np.array_equal(inst.masks[0].numpy(), bitmap((2, 3, 8, 9)))
    assert np.array_equal(inst.masks[1].numpy(), bitmap((10, 0, 20, 5)))
    assert inst.boxes.tolist() == [[2, 3, 8, 9], [10, 0, 20, 5]]
    assert inst.extra["ids"].tolist() == [10, 11] and inst.extra["iscrowd"].tolist() == [0, 0]
    assert inst.amodal_masks is None and inst.depth is None and inst.scores is None

    with pytest.warns(UserWarning, match="box partly outside the image clipped.*im2.png"):
        inst2 = ds[1]["instances"]
    assert inst2.extra["ids"].tolist() == [20]
    assert np.array_equal(inst2.masks[0].numpy(), bitmap((20, 10, 30, 20)))  # type: ignore[index]
    assert inst2.boxes.tolist() == [[20, 10, 30, 20]]  # clipped from [20, 10, 35, 25]
    assert ds.stats["box partly outside the image clipped"] == 1

    empty = ds[2]["instances"]
    assert len(empty) == 0 and empty.masks.shape == (0, H, W)  # type: ignore[union-attr]
    assert empty.boxes.shape == (0, 4) and empty.labels.dtype == torch.long


def test_crowd_kept_on_request_and_uncompressed_rle(coco_file: Path) -> None:
    ds = load(coco_file, coco_file.parent, keep_crowd=True)
    inst = ds[0]["instances"]
    assert inst.extra["iscrowd"].tolist() == [0, 0, 1]
    assert np.array_equal(inst.masks[2].numpy(), bitmap((0, 15, 30, 20)))  # type: ignore[index]


def test_category_subset_filter_empty_and_no_masks(coco_file: Path) -> None:
    ds = load(coco_file, coco_file.parent, category_ids=[5], filter_empty=True)
    assert ds.category_ids == [5] and ds.category_names == ["five"] and ds.num_classes == 1
    assert ds.image_ids == [1, 2]  # image 3 has nothing
    assert ds[0]["instances"].labels.tolist() == [0]
    boxes_only = load(coco_file, coco_file.parent, with_masks=False)
    inst = boxes_only[0]["instances"]
    assert inst.masks is None and inst.boxes.tolist() == [[2, 3, 8, 9], [10, 0, 20, 5]]
    with pytest.raises(ValueError, match="category_ids \\[42\\]"):
        load(coco_file, coco_file.parent, category_ids=[42])
    with pytest.raises(ValueError, match="mask_kinds"):
        load(coco_file, coco_file.parent, mask_kinds=("visible", "modal"))


def test_transforms_are_applied(coco_file: Path) -> None:
    ds = load(coco_file, coco_file.parent, transforms=RandomHorizontalFlip(p=1.0))
    plain = load(coco_file, coco_file.parent)
    a, b = ds[0], plain[0]
    assert torch.equal(a["image"], b["image"].flip(-1))
    assert torch.equal(a["instances"].masks, b["instances"].masks.flip(-1))
    assert a["instances"].boxes[0].tolist() == [W - 8, 3, W - 2, 9]
    assert a["orig_size"] == (H, W)


# -- bad input ------------------------------------------------------------------------------
def test_missing_and_corrupt_images(coco_file: Path) -> None:
    (coco_file.parent / "im1.png").unlink()
    (coco_file.parent / "im2.png").write_bytes(b"garbage")
    ds = load(coco_file, coco_file.parent)
    with pytest.raises(ImageReadError, match="im1.png"):
        ds[0]
    with pytest.raises(ImageReadError, match="im2.png"):
        ds[1]
    skipping = load(coco_file, coco_file.parent, skip_bad_images=True)
    with pytest.warns(UserWarning, match="unreadable image skipped") as rec:
        s = skipping[0]
        s2 = skipping[1]
    assert len(rec) == 1  # one warning for the kind, later ones only counted
    assert s["image_id"] == 3 and s2["image_id"] == 3
    assert skipping.stats["unreadable image skipped"] == 3  # 2 for [0], 1 for [1]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "top level"),
        (json.dumps({"annotations": [], "categories": []}), "'images'"),
        (json.dumps({"images": [], "categories": []}), "'annotations'"),
        (json.dumps({"images": [], "annotations": []}), "'categories'"),
        (json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}), "'file_name'"),
        (
            json.dumps({"images": images_json(1), "annotations": [{"id": 3}], "categories": []}),
            "'image_id'",
        ),
        (
            json.dumps(
                {
                    "images": images_json(1),
                    "annotations": [{"image_id": 1}],
                    "categories": [{"id": 1}],
                }
            ),
            "'category_id'",
        ),
        (
            json.dumps(
                {
                    "images": images_json(1),
                    "annotations": [{"image_id": 1, "category_id": [1]}],
                    "categories": [{"id": 1}],
                }
            ),
            r"annotations\[0\]: invalid value",
        ),
        (
            json.dumps(
                {"images": [{"id": None, "file_name": "a"}], "annotations": [], "categories": []}
            ),
            r"images\[0\]: invalid 'id'",
        ),
    ],
)
def test_wrong_json_raises_naming_file_and_key(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "broken.json"
    p.write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        CocoInstanceDataset(p, tmp_path)
    assert "broken.json" in str(e.value)


def test_json_size_disagreeing_with_image(tmp_path: Path) -> None:
    write_images(tmp_path, ["im1.png"], h=H + 4, w=W - 6)  # real image 24 x 24
    ann = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "segmentation": [rect(20, 2, 30, 6)],
        "bbox": [20, 2, 10, 4],
    }
    ann2 = {
        "id": 2,
        "image_id": 1,
        "category_id": 1,
        "segmentation": [rect(0, 0, 4, 4)],
        "bbox": [0, 0, 4, 4],
    }
    p = write_json(
        tmp_path / "a.json",
        {
            "images": images_json(1),
            "annotations": [ann, ann2],
            "categories": [{"id": 1, "name": "x"}],
        },
    )
    ds = CocoInstanceDataset(p, tmp_path)
    with pytest.warns(UserWarning) as rec:
        inst = ds[0]["instances"]
    messages = [str(r.message) for r in rec]
    assert any("JSON size differs" in m and "JSON 20x30, image 24x24" in m for m in messages)
    assert any("box partly outside the image clipped (im1.png)" in m for m in messages)
    assert inst.image_size == (24, 24) and inst.masks.shape == (2, 24, 24)  # type: ignore[union-attr]
    # masks rasterised in the JSON frame then cropped/padded: the first one only partly survives
    assert np.array_equal(inst.masks[1].numpy(), bitmap((0, 0, 4, 4), h=24, w=24))  # type: ignore[index]
    assert np.array_equal(inst.masks[0].numpy(), bitmap((20, 2, 24, 6), h=24, w=24))  # type: ignore[index]
    assert inst.boxes[0].tolist() == [20, 2, 24, 6]


def test_rle_with_wrong_size_is_dropped(tmp_path: Path) -> None:
    write_images(tmp_path, ["im1.png"])
    ann = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "segmentation": mask_to_rle(np.ones((5, 5), dtype=bool)),
    }
    p = write_json(
        tmp_path / "a.json",
        {"images": images_json(1), "annotations": [ann], "categories": [{"id": 1}]},
    )
    with pytest.warns(UserWarning, match="1 RLE size differs from image size"):
        ds = CocoInstanceDataset(p, tmp_path)
    assert len(ds[0]["instances"]) == 0


def test_polygon_that_rasterises_to_nothing_is_dropped_at_load(tmp_path: Path) -> None:
    write_images(tmp_path, ["im1.png"])
    tiny = [[3.1, 3.1, 3.2, 3.1, 3.2, 3.2]]  # valid area, covers no pixel centre
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": tiny},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [rect(0, 0, 2, 2)]},
    ]
    p = write_json(
        tmp_path / "a.json",
        {"images": images_json(1), "annotations": anns, "categories": [{"id": 1}]},
    )
    ds = CocoInstanceDataset(p, tmp_path)
    with pytest.warns(UserWarning, match="empty mask dropped"):
        inst = ds[0]["instances"]
    assert (
        inst.extra["ids"].tolist() == [2] and ds.stats["annotation with an empty mask dropped"] == 1
    )


# -- amodal layouts: one scene, A (front) occludes the right part of B -------------------------
A = (12, 4, 20, 16)  # front, visible = amodal
B_AMODAL = (4, 6, 16, 14)
B_VISIBLE = (4, 6, 12, 14)


def _check_scene(inst: Any) -> None:
    assert len(inst) == 2
    assert np.array_equal(inst.masks[0].numpy(), bitmap(A))
    assert np.array_equal(inst.masks[1].numpy(), bitmap(B_VISIBLE))
    assert np.array_equal(inst.amodal_masks[0].numpy(), bitmap(A))
    assert np.array_equal(inst.amodal_masks[1].numpy(), bitmap(B_AMODAL))
    assert not inst.occluder_masks[0].any()
    assert np.array_equal(inst.occluder_masks[1].numpy(), bitmap(A))
    assert inst.depth.tolist() == [0, 1] and inst.depth.dtype == torch.long
    assert inst.boxes.tolist() == [list(A), list(B_VISIBLE)]
    for m in (inst.masks, inst.amodal_masks, inst.occluder_masks):
        assert m.dtype == torch.bool and m.shape == (2, H, W)


def _amodal_file(tmp_path: Path, anns: list[dict[str, Any]], cats: Any = "default") -> Path:
    write_images(tmp_path, ["im1.png"])
    data: dict[str, Any] = {"images": images_json(1), "annotations": anns}
    if cats == "default":
        data["categories"] = [{"id": 1, "name": "car"}]
    return write_json(tmp_path / "amodal.json", data)


def xywh(r: tuple[int, int, int, int]) -> list[int]:
    return [r[0], r[1], r[2] - r[0], r[3] - r[1]]


def test_synthetic_layout(tmp_path: Path) -> None:
    def ann(i: int, vis: Any, amo: Any, occ: np.ndarray, depth: int) -> dict[str, Any]:
        return {
            "id": i,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": mask_to_rle(bitmap(vis)),
            "bbox": xywh(vis),
            "amodal_segm": mask_to_rle(bitmap(amo)),
            "amodal_bbox": xywh(amo),
            "occluder_segm": mask_to_rle(occ),
            "depth_order": depth,
        }

    p = _amodal_file(
        tmp_path, [ann(1, A, A, bitmap(), 0), ann(2, B_VISIBLE, B_AMODAL, bitmap(A), 1)]
    )
    ds = load(p, tmp_path)
    assert ds.layout == "synthetic"
    _check_scene(ds[0]["instances"])
    only_visible = load(p, tmp_path, mask_kinds=("visible",))
    inst = only_visible[0]["instances"]
    assert inst.amodal_masks is None and inst.occluder_masks is None and inst.masks is not None


def test_synthetic_layout_fully_occluded_instance_is_kept(tmp_path: Path) -> None:
    hidden = (14, 6, 18, 10)  # entirely behind A
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "segmentation": mask_to_rle(bitmap(A)),
            "amodal_segm": mask_to_rle(bitmap(A)),
            "occluder_segm": mask_to_rle(bitmap()),
            "depth_order": 0,
            "bbox": xywh(A),
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 1,
            "segmentation": mask_to_rle(bitmap()),
            "amodal_segm": mask_to_rle(bitmap(hidden)),
            "occluder_segm": mask_to_rle(bitmap(A)),
            "depth_order": 1,
        },
    ]
    inst = load(_amodal_file(tmp_path, anns), tmp_path)[0]["instances"]
    assert len(inst) == 2 and not inst.masks[1].any()
    assert np.array_equal(inst.amodal_masks[1].numpy(), bitmap(hidden))


def test_kins_layout(tmp_path: Path) -> None:
    def ann(i: int, vis: Any, amo: Any, ico: int) -> dict[str, Any]:
        return {
            "id": i,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "area": 1,
            "i_segm": [rect(*vis)],
            "i_bbox": xywh(vis),
            "a_segm": [rect(*amo)],
            "a_bbox": xywh(amo),
            "bbox": xywh(amo),
            "oco_id": 7,
            "ico_id": ico,
        }

    ds = load(_amodal_file(tmp_path, [ann(1, A, A, 1), ann(2, B_VISIBLE, B_AMODAL, 2)]), tmp_path)
    assert ds.layout == "kins"
    inst = ds[0]["instances"]
    _check_scene(inst)  # occluders and depth derived from the masks
    assert inst.extra["kins_oco_id"].tolist() == [7, 7]
    assert inst.extra["kins_ico_id"].tolist() == [1, 2]


def test_amodal_layout_image_without_annotations(tmp_path: Path) -> None:
    write_images(tmp_path, ["im1.png", "im2.png"])
    ann = {"id": 1, "image_id": 1, "category_id": 1, "i_segm": [rect(*A)], "a_segm": [rect(*A)]}
    data = {"images": images_json(2), "annotations": [ann], "categories": [{"id": 1}]}
    ds = load(write_json(tmp_path / "k.json", data), tmp_path)
    inst = ds[1]["instances"]
    assert len(inst) == 0 and inst.amodal_masks.shape == (0, H, W)
    assert inst.occluder_masks.shape == (0, H, W) and inst.depth.shape == (0,)
    assert inst.boxes.tolist() == ds[0]["instances"].boxes[:0].tolist()


def test_kins_updated_layout(tmp_path: Path) -> None:
    def ann(i: int, vis: Any, amo: Any) -> dict[str, Any]:
        return {
            "id": i,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": [rect(*amo)],
            "bbox": xywh(amo),
            "inmodal_seg": mask_to_rle(bitmap(vis)),
            "inmodal_bbox": xywh(vis),
        }

    ds = load(_amodal_file(tmp_path, [ann(1, A, A), ann(2, B_VISIBLE, B_AMODAL)]), tmp_path)
    assert ds.layout == "kins_updated"
    _check_scene(ds[0]["instances"])


def test_cocoa_layout(tmp_path: Path) -> None:
    invisible = bitmap(B_AMODAL) & ~bitmap(B_VISIBLE)
    regions = [
        {
            "segmentation": rect(*A),
            "name": "box",
            "area": 96.0,
            "isStuff": False,
            "occlude_rate": 0.0,
            "order": 1,
        },
        {
            "segmentation": rect(*B_AMODAL),
            "name": "table",
            "area": 96.0,
            "isStuff": True,
            "occlude_rate": 0.33,
            "order": 2,
            "visible_mask": mask_to_rle(bitmap(B_VISIBLE)),
            "invisible_mask": mask_to_rle(invisible),
        },
    ]
    anns = [
        {"image_id": 1, "id": 1, "regions": regions, "depth_constraint": "1-2", "size": 2},
        {"image_id": 1, "id": 2, "regions": regions[:1], "depth_constraint": "", "size": 1},
    ]
    ds = load(_amodal_file(tmp_path, anns, cats=None), tmp_path)
    assert ds.layout == "cocoa"
    assert ds.category_ids == [1, 2] and ds.category_names == ["thing", "stuff"]
    assert ds.stats["extra COCOA annotation set ignored"] == 1
    inst = ds[0]["instances"]
    _check_scene(inst)
    assert inst.labels.tolist() == [0, 1]


def _cocoa_cls(i: int, vis: Any, amo: Any, *, rate: float, occluded_mask: bool = True) -> dict:
    """A COCOA-cls annotation: segmentation = amodal polygon, visible_mask RLE (omitted for an
    unoccluded instance unless ``occluded_mask``), bbox = amodal box."""
    a: dict[str, Any] = {
        "id": i,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "segmentation": [rect(*amo)],
        "bbox": xywh(amo),
        "area": float(bitmap(amo).sum()),
        "occlude_rate": rate,
        "occl_depth": i - 1,
    }
    if occluded_mask:
        a["visible_mask"] = mask_to_rle(bitmap(vis))
        a["invisible_mask"] = mask_to_rle(bitmap(amo) & ~bitmap(vis))
    return a


def test_cocoa_cls_layout_reads_visible_mask_and_amodal_segmentation(tmp_path: Path) -> None:
    """COCOA-cls: segmentation is the amodal polygon, visible_mask the visible RLE (absent for
    the unoccluded front instance: visible = amodal); bbox is amodal, so the visible box comes
    from the mask. Read as plain COCO, B's amodal polygon would be its 'visible' mask."""
    anns = [
        _cocoa_cls(1, A, A, rate=0.0, occluded_mask=False),
        _cocoa_cls(2, B_VISIBLE, B_AMODAL, rate=0.33),
    ]
    ds = load(_amodal_file(tmp_path, anns), tmp_path)
    assert ds.layout == "cocoa_cls"
    inst = ds[0]["instances"]
    _check_scene(inst)  # visible, amodal, visible boxes, derived occluders and depth
    assert inst.extra["cocoa_occl_depth"].tolist() == [0, 1]


def test_cocoa_cls_occluded_instance_without_visible_mask_is_dropped(tmp_path: Path) -> None:
    anns = [
        _cocoa_cls(1, A, A, rate=0.0),
        _cocoa_cls(2, B_VISIBLE, B_AMODAL, rate=0.33, occluded_mask=False),
    ]
    with pytest.warns(UserWarning, match="1 occluded COCOA-cls annotation without visible_mask"):
        ds = CocoInstanceDataset(_amodal_file(tmp_path, anns), tmp_path)
    assert ds.layout == "cocoa_cls" and ds[0]["instances"].extra["ids"].tolist() == [1]


def test_cocoa_cls_converted_gt_matches_the_dataset(tmp_path: Path) -> None:
    from instseg.evaluation.amodal import to_coco_gt

    anns = [
        _cocoa_cls(1, A, A, rate=0.0, occluded_mask=False),
        _cocoa_cls(2, B_VISIBLE, B_AMODAL, rate=0.33),
    ]
    path = _amodal_file(tmp_path, anns)
    inst = load(path, tmp_path)[0]["instances"]
    for target, masks in (("visible", inst.masks), ("amodal", inst.amodal_masks)):
        gt = to_coco_gt(path, target=target)
        got = [mask_util.decode(a["segmentation"]).astype(bool) for a in gt["annotations"]]
        assert len(got) == 2 and all(
            np.array_equal(g, m.numpy()) for g, m in zip(got, masks, strict=True)
        )
    visible = to_coco_gt(path, target="visible")["annotations"]
    assert [a["bbox"] for a in visible] == [xywh(A), xywh(B_VISIBLE)]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"amodal_segm": {}}, r"annotations\[0\] has keys of the synthetic and cocoa_cls"),
        ({"inmodal_seg": {}}, r"annotations\[0\] has keys of the kins_updated and cocoa_cls"),
    ],
)
def test_annotation_with_keys_of_two_layouts_is_refused(tmp_path, extra, match) -> None:
    anns = [_cocoa_cls(1, A, A, rate=0.0) | extra]
    path = _amodal_file(tmp_path, anns)
    with pytest.raises(ValueError, match=r"amodal\.json: " + match):
        load(path, tmp_path)
    with pytest.raises(ValueError, match=r"amodal\.json"):
        from instseg.evaluation.amodal import to_coco_gt

        to_coco_gt(path)


def test_file_mixing_layouts_is_refused(tmp_path: Path) -> None:
    kins = {"id": 2, "image_id": 1, "category_id": 1, "i_segm": [rect(*A)], "a_segm": [rect(*A)]}
    anns = [_cocoa_cls(1, A, A, rate=0.0), kins]
    match = r"amodal\.json: annotations mix the layouts cocoa_cls \(annotations\[0\]\), kins"
    with pytest.raises(ValueError, match=match):
        load(_amodal_file(tmp_path, anns), tmp_path)


def test_cocoa_cls_extras_without_any_visible_mask(tmp_path: Path) -> None:
    """occlude_rate/occl_depth but no visible_mask anywhere: fine when nothing is occluded
    (visible = amodal), refused when something is (its visible mask is unknown)."""
    unoccluded = [_cocoa_cls(1, A, A, rate=0.0, occluded_mask=False)]
    ds = load(_amodal_file(tmp_path, unoccluded), tmp_path)
    assert ds.layout == "cocoa_cls" and np.array_equal(ds[0]["instances"].masks[0], bitmap(A))
    occluded = unoccluded + [_cocoa_cls(2, B_VISIBLE, B_AMODAL, rate=0.33, occluded_mask=False)]
    with pytest.raises(ValueError, match=r"amodal\.json: annotations\[1\] has COCOA-cls keys"):
        load(_amodal_file(tmp_path, occluded), tmp_path)
    assert detect_layout([{"segmentation": [], "occlude_rate": 0.0}]) == "cocoa_cls"
    assert detect_layout([{"segmentation": []}, {"bbox": [0, 0, 1, 1]}]) == "coco"


# -- real data ------------------------------------------------------------------------------
@pytest.mark.skipif(not DAVIS.is_dir(), reason=f"real data not found at {DAVIS}")
def test_davis_coco_json_masks_equal_png_annotations() -> None:
    ds = CocoInstanceDataset(
        DAVIS / "annotations_json" / "davis2016_train_subset_coco.json",
        DAVIS / "JPEGImages" / "480p",
    )
    assert len(ds) == 599 and ds.category_names == ["object"] and ds.layout == "coco"
    for index in (0, 151, 598):
        s = ds[index]
        png = DAVIS / "Annotations" / "480p" / s["file_name"].replace(".jpg", ".png")
        expected = np.asarray(Image.open(png)) == 255
        inst = s["instances"]
        assert s["image"].shape == (3, 480, 854) and s["orig_size"] == (480, 854)
        assert len(inst) == 1 and inst.labels.tolist() == [0]
        assert np.array_equal(inst.masks[0].numpy(), expected)
        ys, xs = np.nonzero(expected)
        assert inst.boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_derived_occlusion_layers_chain_and_cycle() -> None:
    from instseg.data.coco import _derive_occluders, _occlusion_layers, occlusion_relation

    # C (back) is hidden by B, B by A: layers 0, 1, 2; D stands alone
    a, b, c, d = (0, 0, 6, 6), (4, 0, 10, 6), (8, 0, 14, 6), (20, 10, 24, 14)
    amodal = np.stack([bitmap(a), bitmap(b), bitmap(c), bitmap(d)])
    visible = amodal.copy()
    visible[1] &= ~bitmap(a)
    visible[2] &= ~amodal[1]
    assert _occlusion_layers(visible, amodal).tolist() == [0, 1, 2, 0]
    occ = _derive_occluders(visible, amodal)
    assert np.array_equal(occ[2], visible[1]) and np.array_equal(occ[1], visible[0])
    assert not occ[0].any() and not occ[3].any()
    # a cycle (each hides part of the other) terminates with bounded layers
    amodal2 = np.stack([bitmap((0, 0, 8, 4)), bitmap((4, 0, 12, 4))])
    visible2 = np.stack([bitmap((0, 0, 4, 4)), bitmap((8, 0, 12, 4))])
    visible2[0, 0:1, 4:8] = True  # 0 shows in the shared columns on the top row
    visible2[1, 1:4, 4:8] = True  # 1 shows there below
    assert occlusion_relation(visible2, amodal2).tolist() == [[False, True], [True, False]]
    layers = _occlusion_layers(visible2, amodal2)
    assert layers.shape == (2,) and layers.max() <= 1
    assert _occlusion_layers(np.zeros((0, 3, 3), bool), np.zeros((0, 3, 3), bool)).shape == (0,)
