"""Synthetic amodal COCO -> KINS / updated KINS / COCOA-cls (instseg.data.amodal_layouts): the
dataset and the amodal evaluation read the converted files as they read the synthetic one."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from instseg.cli.main import main
from instseg.data.amodal_layouts import AMODAL_LAYOUTS, convert_amodal_layout
from instseg.data.coco import (
    CocoInstanceDataset,
    _occlusion_layers,
    detect_layout,
    occlusion_relation,
)
from instseg.data.synthetic import SceneConfig, generate_scenes

SMALL = SceneConfig(image_size=(72, 88), min_objects=3, max_objects=6, min_visible_area=20)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_scenes(root, num_images=4, seed=3, config=SMALL, occlusion=0.9)


def _load(path: Path) -> CocoInstanceDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the converted files must read without any problem
        return CocoInstanceDataset(path, path.parent)


def _convert(synth: Path, tmp_path: Path, layout: str) -> tuple[Path, dict[str, int]]:
    dst = synth.parent / f"{layout}.json"  # next to the images: the same image_root
    return dst, convert_amodal_layout(synth, dst, layout=layout)


def test_cli_choices_are_the_module_layouts() -> None:
    from instseg.cli.data import _AMODAL_LAYOUTS

    assert _AMODAL_LAYOUTS == AMODAL_LAYOUTS


@pytest.mark.parametrize("layout", AMODAL_LAYOUTS)
def test_converted_file_reads_like_the_synthetic_one(
    synth: Path, tmp_path: Path, layout: str
) -> None:
    dst, counts = _convert(synth, tmp_path, layout)
    src = json.loads(synth.read_text())
    data = json.loads(dst.read_text())
    assert detect_layout(data["annotations"]) == layout
    assert data["images"] == src["images"] and data["categories"] == src["categories"]
    assert counts["images"] == 4 and counts["annotations"] == len(src["annotations"])
    assert counts["amodal_missing"] == 0
    assert counts["occluded"] == sum(a["occlusion_ratio"] > 0 for a in src["annotations"]) > 0

    ref, got = _load(synth), _load(dst)
    assert got.layout == layout and len(got) == len(ref) == 4
    assert got.category_ids == ref.category_ids and got.category_names == ref.category_names
    depth_of = {a["id"]: a["depth_order"] for a in src["annotations"]}
    for i in range(len(ref)):
        r, g = ref[i]["instances"], got[i]["instances"]
        assert ref[i]["image_id"] == got[i]["image_id"]
        assert torch.equal(r.extra["ids"], g.extra["ids"])
        assert torch.equal(r.labels, g.labels)
        assert torch.equal(r.boxes, g.boxes)
        assert torch.equal(r.masks, g.masks)
        assert torch.equal(r.amodal_masks, g.amodal_masks)
        # no target layout stores occluder masks: the derived ones equal the generator's
        assert torch.equal(r.occluder_masks, g.occluder_masks)
        # the global depth rank becomes the occlusion-graph layer, consistent with the rank
        vis, amo = r.masks.numpy(), r.amodal_masks.numpy()
        assert g.depth.tolist() == _occlusion_layers(vis, amo).tolist()
        rank = [depth_of[int(k)] for k in r.extra["ids"]]
        assert r.depth.tolist() == rank
        for a, b in zip(*np.nonzero(occlusion_relation(vis, amo)), strict=True):  # b occludes a
            assert rank[b] < rank[a] and g.depth[b] < g.depth[a]
        if layout == "kins":
            oco, ico = g.extra["kins_oco_id"].tolist(), g.extra["kins_ico_id"].tolist()
            for a, b in zip(*np.nonzero(occlusion_relation(vis, amo)), strict=True):
                assert oco[a] == oco[b] and ico[b] < ico[a]
            for c in set(oco):
                members = [k for k in range(len(oco)) if oco[k] == c]
                by_rank = sorted(members, key=lambda k: rank[k])
                assert [ico[k] for k in by_rank] == list(range(1, len(members) + 1))
        if layout == "cocoa_cls":
            assert g.extra["cocoa_occl_depth"].tolist() == rank
    if layout == "kins":
        oco_ids = [a["oco_id"] for a in data["annotations"]]
        assert counts["clusters"] == len(set(oco_ids)) and max(oco_ids) == counts["clusters"]


def test_cocoa_cls_leaves_visible_mask_out_for_unoccluded_instances(
    synth: Path, tmp_path: Path
) -> None:
    dst, _ = _convert(synth, tmp_path, "cocoa_cls")
    src = {a["id"]: a for a in json.loads(synth.read_text())["annotations"]}
    anns = json.loads(dst.read_text())["annotations"]
    for a in anns:
        s = src[a["id"]]
        assert a["segmentation"] == s["amodal_segm"] and a["bbox"] == s["amodal_bbox"]
        assert a["occlude_rate"] == pytest.approx(s["occlusion_ratio"], abs=1e-6)
        assert ("visible_mask" in a) == (s["occlusion_ratio"] > 0) == ("invisible_mask" in a)
        if "visible_mask" in a:
            assert a["visible_mask"] == s["segmentation"]
            assert isinstance(a["visible_mask"]["counts"], str)


def _gt_as_results(gt: Path, target: str) -> list[dict[str, Any]]:
    from instseg.evaluation.amodal import to_coco_gt

    anns = to_coco_gt(gt, target=target)["annotations"]
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "segmentation": a["segmentation"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in anns
    ]


@pytest.mark.parametrize("layout", AMODAL_LAYOUTS)
def test_amodal_evaluation_of_the_gt_is_the_same_on_both_files(
    synth: Path, tmp_path: Path, layout: str
) -> None:
    from instseg.evaluation.amodal import evaluate_occlusion

    dst, _ = _convert(synth, tmp_path, layout)
    results = _gt_as_results(synth, "amodal")
    assert _gt_as_results(dst, "amodal") == results
    scores = {}
    for name, gt in (("synthetic", synth), (layout, dst)):
        scores[name] = evaluate_occlusion(
            gt, results, work_dir=tmp_path / name, target="amodal", coco_occ=False,
            iou_types=("segm",),
        )  # fmt: skip
    assert json.dumps(scores["synthetic"], sort_keys=True) == json.dumps(
        scores[layout], sort_keys=True
    )
    assert scores[layout]["amodal"]["segm"]["AP"] == pytest.approx(100.0)
    assert scores[layout]["amodal_occluded"]["segm"]["AP"] == pytest.approx(100.0)


def test_plain_coco_and_non_synthetic_sources_are_refused(synth: Path, tmp_path: Path) -> None:
    data = json.loads(synth.read_text())
    keep = ("id", "image_id", "category_id", "iscrowd", "segmentation", "bbox", "area")
    data["annotations"] = [{k: a[k] for k in keep} for a in data["annotations"]]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"plain\.json: plain COCO file without amodal masks"):
        convert_amodal_layout(plain, tmp_path / "out.json", layout="kins")
    kins, _ = _convert(synth, tmp_path, "kins")
    with pytest.raises(ValueError, match=r"kins\.json: already in the 'kins' layout"):
        convert_amodal_layout(kins, tmp_path / "out.json", layout="cocoa_cls")
    with pytest.raises(ValueError, match=r"annotations\.json: .*unknown amodal layout 'cocoa'"):
        convert_amodal_layout(synth, tmp_path / "out.json", layout="cocoa")
    assert not (tmp_path / "out.json").exists()


def test_cli_convert_amodal(synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dst = tmp_path / "sub" / "cocoa.json"
    rc = main(["data", "convert-amodal", str(synth), str(dst), "--layout", "cocoa_cls"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    n = len(json.loads(synth.read_text())["annotations"])
    assert printed["annotations"] == n and printed["images"] == 4
    assert printed["layout"] == "cocoa_cls" and printed["out"] == str(dst)
    assert detect_layout(json.loads(dst.read_text())["annotations"]) == "cocoa_cls"

    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    rc = main(["data", "convert-amodal", str(plain), str(dst), "--layout", "kins"])
    assert rc == 2
    assert "plain.json: plain COCO file without amodal masks" in capsys.readouterr().err
