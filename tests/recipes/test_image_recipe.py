"""Image recipe wiring at tiny scale: amodal mask targets, partially supervised class splits,
occlusion metrics, `instseg eval --class-split/--amodal/--occ` and few-shot fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from instseg.cli.main import main
from instseg.config import load_config
from instseg.recipes.image import build_datasets, prepare_data, train
from instseg.recipes.image_config import ImageTrainConfig

TINY = [
    "model.pretrained=false",
    "data.synthetic.num_train=6",
    "data.synthetic.num_test=4",
    "data.synthetic.image_size=64",
    "data.synthetic.cutouts=false",
    "data.synthetic.occlusion=0.9",
    "data.min_size=[64]",
    "data.max_size=96",
    "data.test_min_size=64",
    "data.batch_size=2",
    "solver.max_iters=2",
    "solver.warmup_iters=1",
    "solver.amp=none",
    "checkpoint_period=1000",
    "threads=1",
    "device=cpu",
]


_CACHE: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """One generated synthetic data set for the whole module."""
    _CACHE[:] = [tmp_path_factory.mktemp("synthetic_cache")]
    yield
    _CACHE.clear()


def tiny_cfg(out: Path, *extra: str) -> ImageTrainConfig:
    cache = [f"data.cache_dir={_CACHE[0]}"] if _CACHE else []
    return load_config(ImageTrainConfig, None, [*TINY, *cache, f"out_dir={out}", *extra])


@pytest.fixture(scope="module")
def bcnet_run(tmp_path_factory) -> tuple[Path, dict]:
    """BCNet trained 2 iterations on amodal masks, base->novel split, occlusion metrics."""
    out = tmp_path_factory.mktemp("bcnet_amodal")
    torch.manual_seed(0)
    cfg = tiny_cfg(
        out,
        "model.name=effl0_fcos_bcnet",
        "model.mask_target=amodal",
        "data.class_split=base->novel",
        "evaluation.amodal=true",
        "evaluation.occluded=true",
    )
    return out, train(cfg, progress=False)


def test_class_split_marks_novel_instances_without_masks(tmp_path):
    cfg = tiny_cfg(tmp_path, "data.class_split=base->novel", "data.flip=0")
    splits = prepare_data(cfg.data, tmp_path)
    train_ds, _ = build_datasets(cfg.data, splits)
    cats = json.loads(splits.train_json.read_text())["categories"]
    novel = {c["id"] for c in cats if c["split"] == "novel"}
    seen = torch.zeros(2, dtype=torch.long)
    for i in range(len(train_ds)):
        inst = train_ds[i]["instances"]
        is_novel = torch.tensor([train_ds.category_ids[int(lb)] in novel for lb in inst.labels])
        assert torch.equal(inst.has_mask, ~is_novel)
        seen += torch.stack([(~is_novel).sum(), is_novel.sum()])
    assert seen.min() > 0  # both kinds occur in the tiny set


def test_amodal_target_swaps_masks_and_boxes(tmp_path):
    cfg = tiny_cfg(tmp_path, "data.flip=0")
    splits = prepare_data(cfg.data, tmp_path)
    vis_ds, _ = build_datasets(cfg.data, splits)
    amo_ds, _ = build_datasets(cfg.data, splits, mask_target="amodal")
    grew = 0
    for i in range(len(vis_ds)):
        v, a = vis_ds[i]["instances"], amo_ds[i]["instances"]
        assert torch.equal(a.masks, v.amodal_masks | v.masks)
        assert (a.masks | v.masks).sum() == a.masks.sum()  # amodal contains visible
        assert (a.boxes[:, :2] <= v.boxes[:, :2] + 1e-4).all()
        assert (a.boxes[:, 2:] >= v.boxes[:, 2:] - 1e-4).all()
        assert a.occluder_masks is not None and a.occluder_masks.shape == a.masks.shape
        grew += int((a.masks.sum((1, 2)) > v.masks.sum((1, 2))).sum())
    assert grew > 0  # occlusion 0.9: some objects are partly hidden
    with pytest.raises(ValueError, match="mask_target"):
        build_datasets(cfg.data, splits, mask_target="modal")


def test_amodal_target_refuses_plain_coco(tmp_path):
    cfg = tiny_cfg(tmp_path)
    splits = prepare_data(cfg.data, tmp_path)
    data = json.loads(splits.train_json.read_text())
    for a in data["annotations"]:
        for k in ("amodal_segm", "amodal_bbox", "occluder_segm", "depth_order"):
            a.pop(k, None)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(data))
    splits.train_json = plain
    with pytest.raises(ValueError, match="plain.json.*amodal"):
        build_datasets(cfg.data, splits, mask_target="amodal")


def test_train_reports_split_and_occlusion_metrics(bcnet_run):
    out, metrics = bcnet_run
    for iou in ("segm", "bbox"):
        assert {"AP", "base", "novel"} <= set(metrics[iou])
    assert set(metrics) >= {"amodal", "amodal_occluded", "occluded", "coco_occ"}
    # the model predicts amodal masks: its main GT is the amodal one
    assert json.loads((out / "gt_amodal.json").read_text())["mask_target"] == "amodal"
    assert metrics["segm"]["AP"] == pytest.approx(metrics["amodal"]["segm"]["AP"], nan_ok=True)
    meta = torch.load(out / "model.pt", weights_only=True)["meta"]
    assert meta["model"]["mask_target"] == "amodal"


def test_eval_cli_adds_voc_keys_and_occlusion_groups(bcnet_run, tmp_path):
    out, _ = bcnet_run
    ev = tmp_path / "ev"
    rc = main(
        [
            "eval",
            str(out / "config.yaml"),
            "--weights",
            str(out / "model.pt"),
            "--out",
            str(ev),
            "--class-split",
            "voc",
            "--amodal",
            "--occ",
        ]
    )
    assert rc == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert {"voc", "non_voc"} <= set(m["segm"]) and {"voc", "non_voc"} <= set(m["bbox"])
    assert {"amodal", "occluded", "coco_occ"} <= set(m)
    assert "voc" in m["occluded"]["segm"]


def test_few_shot_fine_tune_from_base_weights(bcnet_run, tmp_path):
    out, _ = bcnet_run
    train_json = next(_CACHE[0].glob("train_*")) / "annotations.json"
    shots = tmp_path / "shots.json"
    assert (
        main(
            ["data", "few-shot", "--gt", str(train_json), "--split", "base->novel", "--k", "2",
             "--out", str(shots)]
        )
        == 0
    )  # fmt: skip
    counts = json.loads(shots.read_text())["few_shot"]["novel_counts"]
    assert counts and all(n <= 2 for n in counts.values())
    cfg = tiny_cfg(
        tmp_path / "ft",
        "model.name=effl0_fcos_bcnet",
        f"model.weights={out / 'model.pt'}",
        f"data.train_json={shots}",
        f"data.train_root={train_json.parent}",
        "solver.max_iters=1",
        "solver.lr=0.0",
    )
    metrics = train(cfg, progress=False)
    assert "segm" in metrics
    # lr 0 and frozen-free tiny model: the fine-tuned weights are the base weights
    base = torch.load(out / "model.pt", weights_only=True)["model"]
    ft = torch.load(tmp_path / "ft" / "model.pt", weights_only=True)["model"]
    key = "mask_head.occludee.predictors.mask.weight"
    assert torch.equal(base[key], ft[key])


def test_freeze_trains_the_mask_head_alone(bcnet_run, tmp_path):
    out, _ = bcnet_run
    cfg = tiny_cfg(
        tmp_path / "head_only",
        "model.name=effl0_fcos_bcnet",
        f"model.weights={out / 'model.pt'}",
        "model.freeze=[backbone, detector]",
        "solver.lr=0.01",
    )
    train(cfg, progress=False)
    base = torch.load(out / "model.pt", weights_only=True)["model"]
    new = torch.load(tmp_path / "head_only" / "model.pt", weights_only=True)["model"]
    for k, v in base.items():
        same = torch.equal(v, new[k])
        assert same == (not k.startswith("mask_head.")) or not v.is_floating_point(), k
    with pytest.raises(ValueError, match="no module 'neck'"):
        train(tiny_cfg(tmp_path / "bad", "model.freeze=[neck]"), progress=False)


def test_run_records_resolved_precision(bcnet_run):
    """config.yaml starts with the resolved precision (a comment: the file still configures
    amp as requested) and model.pt's meta carries the same record."""
    from instseg.engine.weights import read_weights_file

    out, _ = bcnet_run
    text = (out / "config.yaml").read_text()
    assert text.startswith("# precision: amp=none -> fp32 on cpu (")
    assert load_config(ImageTrainConfig, out / "config.yaml", []).solver.amp == "none"
    _, meta = read_weights_file(out / "model.pt")
    prec = meta.precision
    assert prec["amp"] == "none" and prec["resolved"] == "fp32" and prec["device"] == "cpu"
    assert isinstance(prec["cpu_bf16_native"], bool) and prec["cpu"]


def _shared_davis_all() -> bool:
    from instseg.data.synthetic_cutouts import find_davis_roots

    return len(find_davis_roots()) == 2


@pytest.mark.skipif(not _shared_davis_all(), reason="the two shared DAVIS-2016 folders not found")
def test_held_out_sequences_give_an_unseen_split_and_ema_weights(tmp_path: Path) -> None:
    held = ["boat", "bear"]  # one from each shared folder
    cfg = tiny_cfg(
        tmp_path / "run",
        "data.synthetic.cutouts=true",
        "data.synthetic.davis=all",
        "data.synthetic.frames_per_sequence=2",
        f"data.synthetic.held_out=[{','.join(held)}]",
        "data.synthetic.num_unseen=3",
        "data.synthetic.class_agnostic=true",
        "data.synthetic.jitter=true",
        "solver.ema_decay=0.9",
        "solver.ema_tau=1",
        f"data.cache_dir={tmp_path / 'cache'}",
    )
    splits = prepare_data(cfg.data, tmp_path / "run")
    info = {
        k: json.loads(Path(p).read_text())["info"]
        for k, p in (("train", splits.train_json), ("unseen", splits.unseen_json))
    }
    assert set(info["unseen"]["cutout_sequences"]) == set(held)
    assert not set(info["train"]["cutout_sequences"]) & set(held)
    assert len(info["train"]["cutout_sequences"]) == 28
    metrics = train(cfg, progress=False)
    unseen = metrics["unseen"]
    assert {"bbox", "segm", "occluded", "segm_by_occlusion"} <= set(unseen)
    assert list(unseen["segm_by_occlusion"]) == [
        "none (<= 0.1)", "partial (0.1-0.3]", "occluded (> 0.3)",
    ]  # fmt: skip
    weights = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    ckpt = torch.load(tmp_path / "run" / "model_final.pth", weights_only=True)
    ema_state = {k[len("module.") :]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    saved = weights["model"] if "model" in weights else weights["state_dict"]
    name = next(k for k in saved if k.endswith("weight") and saved[k].dim() == 4)
    assert torch.equal(saved[name].float(), ema_state[name].float())  # the EMA is what ships
    assert not torch.equal(ckpt["model"][name].float(), ema_state[name].float())
    assert weights["meta"]["training"]["held_out"] == held

    # instseg eval scores the unseen split class-agnostically, alone with --split unseen
    run = tmp_path / "run"
    rc = main(["eval", str(run / "config.yaml"), "--weights", str(run / "model.pt"),
               "--out", str(tmp_path / "ev"), "--split", "unseen"])  # fmt: skip
    assert rc == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(ev) == {"unseen"}
    assert ev["unseen"]["segm"] == pytest.approx(unseen["segm"], nan_ok=True)


def test_eval_split_unseen_without_held_out_is_a_user_error(tmp_path: Path, capsys) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data:\n  synthetic:\n    cutouts: false\n")
    rc = main(["eval", str(cfg_file), f"data.cache_dir={tmp_path}", "data.synthetic.num_train=2",
               "data.synthetic.num_test=2", "data.synthetic.image_size=48",
               "--weights", "nope.pt", "--split", "unseen"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no unseen split" in err[0]


def test_objects_config_holds_out_the_image_sequences() -> None:
    from instseg.data.davis_splits import IMAGE_HELD_OUT, SEMISUP_HELD_OUT, VOIN_EVAL

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(ImageTrainConfig, root / "configs" / "objects_davis.yaml")
    held = cfg.data.synthetic.held_out
    assert tuple(held) == IMAGE_HELD_OUT and len(held) >= 5
    assert set(VOIN_EVAL) | set(SEMISUP_HELD_OUT) <= set(held)  # downstream evals stay clean
    assert cfg.data.synthetic.class_agnostic and cfg.solver.ema_decay > 0


@pytest.mark.parametrize("target", ["visible", "amodal"])
def test_unseen_split_is_scored_against_the_models_mask_target(tmp_path, monkeypatch, target):
    """An amodal model's unseen-split metrics (and their occlusion breakdown) use the amodal GT:
    predictions equal to the target GT masks score AP 100 in every occlusion level."""
    import instseg.recipes.image as image_recipe
    from instseg.data.synthetic import SceneConfig, generate_scenes
    from instseg.evaluation.amodal import to_coco_gt
    from instseg.recipes.image import DataSplits, evaluate_unseen
    from instseg.utils.io import atomic_write_json

    cfg = SceneConfig(image_size=(80, 96), min_objects=3, max_objects=5)
    gt_json = generate_scenes(tmp_path / "unseen", num_images=6, seed=5, config=cfg, occlusion=0.9)
    gt = to_coco_gt(gt_json, target=target)
    seen = {}

    def fake_evaluate(model, dataset, gt_path, *, out_dir, mask_target, **kw):
        seen["mask_target"] = mask_target
        results = [
            {"image_id": a["image_id"], "category_id": a["category_id"],
             "segmentation": a["segmentation"],
             "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"]
        ]  # fmt: skip
        atomic_write_json(Path(out_dir) / "results.json", results)
        return {"segm": {"AP": 100.0}}

    class Images:
        image_ids = [im["id"] for im in gt["images"]]

    monkeypatch.setattr(image_recipe, "evaluate", fake_evaluate)
    splits = DataSplits(gt_json, gt_json.parent, gt_json, gt_json.parent, gt_json, gt_json.parent)
    m = evaluate_unseen(
        None, Images(), splits, out_dir=tmp_path / "out", num_classes=1, mask_target=target
    )
    assert seen["mask_target"] == target
    levels = m["segm_by_occlusion"]
    assert sum(v["instances"] for v in levels.values()) == len(gt["annotations"])
    for v in levels.values():
        assert v["instances"] == 0 or v["AP"] == pytest.approx(100.0)
