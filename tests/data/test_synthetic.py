"""Synthetic occlusion scenes: exact mask invariants, COCO layout, determinism, knobs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instseg.data.synthetic import (
    SceneConfig,
    generate_scenes,
    make_scene,
    paste_mask,
    scene_categories,
)
from instseg.data.synthetic_cutouts import CutoutBank
from instseg.data.synthetic_shapes import SHAPE_KINDS, make_shape_sprite
from instseg.structures.masks import rle_to_mask

SMALL = SceneConfig(image_size=(72, 88), min_objects=2, max_objects=6, min_visible_area=20)


def _shared_davis() -> Path | None:
    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"
    return root.resolve() if (root / "JPEGImages").is_dir() else None


def _box_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]


def _check_scene(image: np.ndarray, objects: list[dict], cfg: SceneConfig) -> None:
    h, w = cfg.image_size
    assert image.shape == (h, w, 3) and image.dtype == np.uint8
    nearer_amodal = np.zeros((h, w), bool)
    nearer_visible_ann = []
    for i, o in enumerate(objects):
        amo, vis, occ = o["amodal"], o["visible"], o["occluder"]
        assert o["depth"] == i
        assert amo.any()
        assert not (vis & ~amo).any(), "visible must lie inside amodal"
        # exact layering: visible = amodal minus everything nearer, so the hidden part is
        # covered by nearer objects and nothing nearer shows through the visible part
        np.testing.assert_array_equal(vis, amo & ~nearer_amodal)
        assert not ((amo & ~vis) & ~nearer_amodal).any()
        # pixels under the visible mask are the sprite's own colours
        x, y = o["position"]
        sh, sw = o["sprite"].size
        crop_img = image[y : y + sh, x : x + sw]
        local_vis = vis[y : y + sh, x : x + sw]
        np.testing.assert_array_equal(crop_img[local_vis], o["sprite"].rgb[local_vis])
        assert o["annotated"] == (int(vis.sum()) >= cfg.min_visible_area)
        expected_occ = np.zeros((h, w), bool)
        if o["annotated"]:
            for v in nearer_visible_ann:
                if (v & amo).any():
                    expected_occ |= v
        np.testing.assert_array_equal(occ, expected_occ)
        assert not (occ & vis).any(), "an occluder never overlaps the object's own visible part"
        ratio = 1.0 - vis.sum() / amo.sum()
        assert o["occlusion_ratio"] == pytest.approx(ratio)
        nearer_amodal |= amo
        if o["annotated"]:
            nearer_visible_ann.append(vis)
    for i, a in enumerate(objects):  # visible masks are pairwise disjoint
        for b in objects[i + 1 :]:
            assert not (a["visible"] & b["visible"]).any()
    ranks = [o["depth_order"] for o in objects if o["annotated"]]
    assert ranks == list(range(len(ranks)))
    assert all(o["depth_order"] == -1 for o in objects if not o["annotated"])


@pytest.mark.parametrize("occlusion", [0.0, 0.5, 1.0])
def test_make_scene_masks_are_exact(occlusion: float) -> None:
    cfg = replace(SMALL, occlusion=occlusion)
    n_hidden = 0
    for i in range(25):
        image, objects = make_scene(np.random.default_rng([3, i]), cfg)
        assert cfg.min_objects <= len(objects) <= cfg.max_objects
        _check_scene(image, objects, cfg)
        n_hidden += sum(o["occluder"].any() for o in objects)
    if occlusion > 0:
        assert n_hidden > 0, "some objects must be occluded"


def test_shape_sprites_cover_kinds_and_size() -> None:
    assert len(SHAPE_KINDS) >= 6
    rng = np.random.default_rng(0)
    for kind in SHAPE_KINDS:
        s = make_shape_sprite(rng, kind, size=40)
        assert max(s.size) == 40 and s.rgb.shape == (*s.size, 3)
        # the sprite is cropped to its mask: every border row/column holds shape pixels
        m = s.mask
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
    ring = make_shape_sprite(np.random.default_rng(1), "ring", size=41)
    assert not ring.mask[20, 20], "a ring has a hole in the middle"


def test_paste_mask_clips_at_borders() -> None:
    m = np.ones((4, 5), bool)
    out = paste_mask(m, (-2, 8), (10, 6))
    assert out.shape == (10, 6) and out.sum() == 3 * 2
    assert out[8:10, 0:3].all()
    assert not paste_mask(m, (50, 50), (10, 6)).any()


def test_generate_is_deterministic(tmp_path: Path) -> None:
    a = generate_scenes(tmp_path / "a", num_images=4, seed=5, config=SMALL)
    b = generate_scenes(tmp_path / "b", num_images=4, seed=5, config=SMALL)
    c = generate_scenes(tmp_path / "c", num_images=4, seed=6, config=SMALL)
    assert a.read_bytes() == b.read_bytes()
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert len(names) == 4
    for name in names:
        pa, pb = tmp_path / "a/images" / name, tmp_path / "b/images" / name
        assert pa.read_bytes() == pb.read_bytes()
    assert json.loads(a.read_text())["annotations"] != json.loads(c.read_text())["annotations"]
    first = "images/000001.png"
    assert (tmp_path / "a" / first).read_bytes() != (tmp_path / "c" / first).read_bytes()


def test_coco_json_layout_and_masks(tmp_path: Path) -> None:
    path = generate_scenes(tmp_path, num_images=6, seed=0, config=SMALL, occlusion=0.8)
    coco = COCO(str(path))
    data = json.loads(path.read_text())
    h, w = SMALL.image_size
    assert {c["kind"] for c in data["categories"]} == {"shape"}
    assert {c["split"] for c in data["categories"]} == {"base", "novel"}
    for img in data["images"]:
        assert cv2.imread(str(tmp_path / img["file_name"])).shape == (h, w, 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert sorted(a["depth_order"] for a in anns) == list(range(len(anns)))
        vis = {a["depth_order"]: coco.annToMask(a).astype(bool) for a in anns}
        for a in anns:
            v, amo = vis[a["depth_order"]], rle_to_mask(a["amodal_segm"])
            occ = rle_to_mask(a["occluder_segm"])
            assert a["iscrowd"] == 0 and isinstance(a["segmentation"]["counts"], str)
            assert a["bbox"] == _box_xywh(v) and a["area"] == int(v.sum())
            assert a["amodal_bbox"] == _box_xywh(amo) and a["amodal_area"] == int(amo.sum())
            assert not (v & ~amo).any()
            assert a["occlusion_ratio"] == pytest.approx(1 - v.sum() / amo.sum(), abs=1e-6)
            nearer = [vis[d] for d in range(a["depth_order"])]
            expected = np.zeros((h, w), bool)
            for n in nearer:
                if (n & amo).any():
                    expected |= n
            np.testing.assert_array_equal(occ, expected)
            for b in anns:
                if b is not a:
                    assert not (v & vis[b["depth_order"]]).any()


def test_ground_truth_scores_perfect_with_official_cocoeval(tmp_path: Path) -> None:
    path = generate_scenes(tmp_path, num_images=3, seed=2, config=SMALL)
    gt = COCO(str(path))
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "segmentation": a["segmentation"],
            "score": 1.0,
        }
        for a in gt.dataset["annotations"]
    ]
    ev = COCOeval(gt, gt.loadRes(dets), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_occlusion_knob_raises_mean_occlusion() -> None:
    def mean_ratio(occ: float) -> float:
        cfg = replace(SMALL, occlusion=occ)
        ratios = []
        for i in range(30):
            _, objects = make_scene(np.random.default_rng([11, i]), cfg)
            ratios += [o["occlusion_ratio"] for o in objects if o["annotated"]]
        return float(np.mean(ratios))

    low, mid, high = mean_ratio(0.05), mean_ratio(0.5), mean_ratio(0.95)
    assert low < mid < high and high - low > 0.15


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="occlusion"):
        SceneConfig(occlusion=1.5)
    with pytest.raises(ValueError, match="max_objects"):
        SceneConfig(min_objects=5, max_objects=2)
    with pytest.raises(ValueError, match="shape_kinds"):
        SceneConfig(shape_kinds=("blob",))


def _fake_davis(root: Path, seqs: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for seq, n in seqs.items():
        (root / "JPEGImages/480p" / seq).mkdir(parents=True)
        (root / "Annotations/480p" / seq).mkdir(parents=True)
        for f in range(n):
            img = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)
            mask = np.zeros((60, 100), np.uint8)
            mask[20:50, 30 + f : 60 + f] = 255
            cv2.imwrite(str(root / "JPEGImages/480p" / seq / f"{f:05d}.jpg"), img)
            cv2.imwrite(str(root / "Annotations/480p" / seq / f"{f:05d}.png"), mask)


def test_cutouts_from_davis_style_folder(tmp_path: Path) -> None:
    _fake_davis(tmp_path, {"boat": 3, "my-toy": 2})
    (tmp_path / "JPEGImages/480p/my-toy/00001.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        bank = CutoutBank.load(tmp_path, frames_per_sequence=3)
    assert bank.names == ("my-toy", "vehicle")
    cfg = replace(SMALL, cutout_prob=1.0, real_background_prob=1.0)
    cats = scene_categories(cfg, bank)
    assert [c["name"] for c in cats[-2:]] == ["my-toy", "vehicle"]
    assert [c["kind"] for c in cats[-2:]] == ["cutout", "cutout"]
    cut_ids = {c["id"] for c in cats[-2:]}
    for i in range(8):
        image, objects = make_scene(np.random.default_rng([1, i]), cfg, bank=bank)
        _check_scene(image, objects, cfg)
        assert all(o["category_id"] in cut_ids for o in objects)


def test_cutout_bank_excludes_held_out_sequences(tmp_path: Path) -> None:
    _fake_davis(tmp_path, {"boat": 2, "bus": 2, "my-toy": 2})
    bank = CutoutBank.load(tmp_path, frames_per_sequence=2, exclude=["bus", "my-toy"])
    assert bank.names == ("vehicle",) and len(bank.cutouts) == 2  # boat's frames only
    assert len(bank.frames) == 2


def test_cutout_folder_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        CutoutBank.load(tmp_path)


@pytest.mark.skipif(_shared_davis() is None, reason="shared DAVIS subset not found beside the repo")
def test_real_davis_cutouts(tmp_path: Path) -> None:
    path = generate_scenes(
        tmp_path, num_images=3, seed=0, config=SMALL, cutout_root=_shared_davis()
    )
    data = json.loads(path.read_text())
    cutout_names = {c["name"] for c in data["categories"] if c["kind"] == "cutout"}
    assert {"person", "animal", "vehicle"} <= cutout_names
    assert data["annotations"]


def test_project_coco_loader_reads_synthetic_fields(tmp_path: Path) -> None:
    coco_mod = pytest.importorskip("instseg.data.coco")
    path = generate_scenes(tmp_path, num_images=3, seed=1, config=SMALL, occlusion=0.9)
    ds = coco_mod.CocoInstanceDataset(path, tmp_path)
    anns = json.loads(path.read_text())["annotations"]
    for i in range(len(ds)):
        sample = ds[i]
        inst = sample["instances"]
        mine = [a for a in anns if a["image_id"] == sample["image_id"]]
        assert len(inst) == len(mine)
        for k, a in enumerate(mine):
            np.testing.assert_array_equal(inst.masks[k].numpy(), rle_to_mask(a["segmentation"]))
            np.testing.assert_array_equal(
                inst.amodal_masks[k].numpy(), rle_to_mask(a["amodal_segm"])
            )
            np.testing.assert_array_equal(
                inst.occluder_masks[k].numpy(), rle_to_mask(a["occluder_segm"])
            )
            assert int(inst.depth[k]) == a["depth_order"]


def test_pcan_config_keeps_the_semisupervised_held_out_sequences_out() -> None:
    from instseg.config import load_config
    from instseg.data.davis_splits import SEMISUP_HELD_OUT, SEMISUP_TUNING, VOIN_EVAL, VOIN_TRAIN
    from instseg.recipes.video_config import VideoTrainConfig

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(VideoTrainConfig, repo / "configs" / "pcan_synthetic.yaml", [])
    assert set(cfg.data.synthetic.cutout_exclude) == set(SEMISUP_HELD_OUT)
    assert not set(SEMISUP_HELD_OUT) & set(SEMISUP_TUNING)
    assert not set(VOIN_EVAL) & set(VOIN_TRAIN)


def test_cutout_bank_reads_several_folders_and_selects_sequences(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _fake_davis(a, {"boat": 2, "bus": 2})
    _fake_davis(b, {"my-toy": 3, "other": 2})
    train = CutoutBank.load([a, b], frames_per_sequence=3, exclude=["bus", "other"])
    assert train.sequences == ("boat", "my-toy") and len(train.cutouts) == 5
    held = CutoutBank.load(
        [a, b], frames_per_sequence=3, include=["bus", "other"], class_name="object"
    )
    assert held.sequences == ("bus", "other") and held.names == ("object",)
    assert len(held.frames) == 4  # the held-out sequences' own frames are their backgrounds
    with pytest.raises(ValueError, match="no sequence named nope"):
        CutoutBank.load([a, b], include=["boat", "nope"])


def test_sprite_jitter_changes_colours_not_masks_and_is_seeded(tmp_path: Path) -> None:
    from instseg.data.synthetic_cutouts import SpriteJitter

    _fake_davis(tmp_path, {"boat": 2})
    bank = CutoutBank.load(tmp_path, frames_per_sequence=2)
    plain = bank.sprite(np.random.default_rng(3), size=40)
    jit = bank.sprite(np.random.default_rng(3), size=40, jitter=SpriteJitter(blur=1.0))
    again = bank.sprite(np.random.default_rng(3), size=40, jitter=SpriteJitter(blur=1.0))
    assert np.array_equal(plain.mask, jit.mask)  # geometry drawn before the jitter
    assert not np.array_equal(plain.rgb, jit.rgb)
    assert np.array_equal(jit.rgb, again.rgb)


def test_class_agnostic_scenes_have_one_object_category(tmp_path: Path) -> None:
    _fake_davis(tmp_path, {"boat": 2, "my-toy": 2})
    bank = CutoutBank.load(tmp_path, frames_per_sequence=2)
    cfg = replace(SMALL, class_agnostic=True, cutout_prob=0.5, scene_blur=1.0)
    path = generate_scenes(tmp_path / "out", num_images=6, seed=0, config=cfg, bank=bank)
    data = json.loads(path.read_text())
    assert [c["name"] for c in data["categories"]] == ["object"]
    assert data["annotations"] and {a["category_id"] for a in data["annotations"]} == {1}
    assert data["info"]["cutout_sequences"] == ["boat", "my-toy"]
    again = generate_scenes(tmp_path / "out2", num_images=6, seed=0, config=cfg, bank=bank)
    assert json.loads(again.read_text())["annotations"] == data["annotations"]


def test_same_class_overlap_draws_lookalikes_onto_their_model(tmp_path: Path) -> None:
    _fake_davis(tmp_path, {"boat": 3, "my-toy": 3})
    bank = CutoutBank.load(tmp_path, frames_per_sequence=3)
    cfg = replace(SMALL, image_size=(96, 96), min_objects=3, max_objects=4, same_class_overlap=1.0)
    pairs = 0
    for i in range(10):
        for b in (None, bank):
            image, objects = make_scene(np.random.default_rng([5, i]), cfg, bank=b)
            _check_scene(image, objects, cfg)
            for o in objects:
                j = o["lookalike_of"]
                if j < 0:
                    continue
                like = objects[j]
                assert (
                    o["category_id"] == like["category_id"] and o["lookalike"] and like["lookalike"]
                )
                assert o["sprite"].origin == like["sprite"].origin  # same DAVIS sequence
                x0, y0 = o["position"]
                h, w = o["sprite"].size
                lx, ly = like["position"]
                lh, lw = like["sprite"].size
                assert x0 < lx + lw and lx < x0 + w and y0 < ly + lh and ly < y0 + h  # boxes meet
                pairs += 1
    assert pairs >= 20
    # a shape look-alike wears its model's texture
    shape_only = replace(cfg, cutout_prob=0.0)
    _, objects = make_scene(np.random.default_rng([6, 0]), shape_only)
    o = next(o for o in objects if o["lookalike_of"] >= 0)
    like = objects[o["lookalike_of"]]["sprite"]
    mean = lambda s: s.rgb[s.mask].mean(axis=0)  # noqa: E731
    assert np.abs(mean(o["sprite"]) - mean(like)).max() < 30
    ann = scene_annotations_of(objects)
    assert any(a.get("lookalike") for a in ann)
    plain = scene_annotations_of(make_scene(np.random.default_rng([6, 0]), SMALL)[1])
    assert not any("lookalike" in a for a in plain)  # off: the old annotation layout


def scene_annotations_of(objects):  # noqa: ANN001, ANN201
    from instseg.data.synthetic import scene_annotations

    return scene_annotations(objects, image_id=1, first_id=1)
