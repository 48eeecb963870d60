"""PCAN video recipe: (key, reference) pairs from YouTube-VIS JSON, ClipBatch collation,
a 3-iteration resumable training run writing an ``instseg track``-ready model.pt."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from instseg.config import to_dict
from instseg.data.clips import FramePair
from instseg.data.synthetic_video import generate_videos
from instseg.data.ytvis import load_ytvis_dataset
from instseg.models.video.cross_attention import default_pcam_settings
from instseg.recipes.video import (
    VideoPairDataset,
    build_clip_loader,
    build_pair_dataset,
    train_max_gap,
    train_video,
)
from instseg.recipes.video_config import VideoDataConfig, VideoTrainConfig

DAVIS_YTVIS = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_video")
    return generate_videos(out, num_videos=2, num_frames=5, seed=3, image_size=(80, 96))


def _data_cfg() -> VideoDataConfig:
    return VideoDataConfig(min_size=[64, 72], max_size=96, max_gap=2, flip=0.5)


def test_clip_batch_collate_shapes_and_track_ids(synth: Path) -> None:
    data = load_ytvis_dataset(synth, synth.parent)
    ds = build_pair_dataset(data, _data_cfg(), seed=0)
    # every frame annotated; all but the first (no past) are keys, 4 repeats
    assert len(ds) == 4 * sum(len(v) - 1 for v in data.videos)
    clip = next(iter(build_clip_loader(ds, batch_size=3, seed=1)))
    key, ref = clip.key, clip.reference
    assert key.images.shape[0] == ref.images.shape[0] == 3
    assert key.images.dtype == torch.float32 and key.images.shape[-1] % 32 == 0
    assert key.image_sizes == ref.image_sizes  # one transform draw per pair
    ann_ids = {v.id: {a.id for a in v.annotations} for v in data.videos}
    for kt, rt, size, fk, fr in zip(
        key.targets, ref.targets, key.image_sizes, key.file_names, ref.file_names, strict=True
    ):
        assert fk.split("/")[1] == fr.split("/")[1]  # same video
        vid = int(fk.split("/")[1])
        assert set(kt.track_ids.tolist()) <= ann_ids[vid]
        assert set(rt.track_ids.tolist()) <= ann_ids[vid]
        assert kt.masks.shape[1:] == size and kt.masks.dtype == torch.bool
        assert len(kt.track_ids) == len(kt.boxes) == len(kt.labels)
    assert clip.to("cpu").key.images.shape == key.images.shape


def test_pair_frames_share_one_random_transform(synth: Path) -> None:
    data = load_ytvis_dataset(synth, synth.parent)
    full = build_pair_dataset(data, _data_cfg(), seed=0)
    same = [FramePair(video=0, key=2, reference=2)]
    ds = VideoPairDataset(data.videos, same, label_of=full.label_of, transforms=full.transforms)
    for seed in range(6):  # flips and scales vary with the seed, never within a pair
        s = ds[(0, seed)]
        assert torch.equal(s["key"]["image"], s["reference"]["image"])
        assert torch.equal(s["key"]["instances"].masks, s["reference"]["instances"].masks)


def test_memory_frames_continue_past_the_reference(synth: Path) -> None:
    from instseg.data.clips import memory_frames

    assert memory_frames(FramePair(video=0, key=5, reference=3), 2, 10) == (1, 2)
    assert memory_frames(FramePair(video=0, key=5, reference=7), 3, 9) == (8, 8, 8)  # clamped
    data = load_ytvis_dataset(synth, synth.parent)
    cfg = _data_cfg()
    cfg.memory_frames = 2
    ds = build_pair_dataset(data, cfg, seed=0)
    clip = next(iter(build_clip_loader(ds, batch_size=2, seed=1)))
    assert len(clip.memory) == 2
    for m in clip.memory:
        assert m.images.shape[0] == 2 and m.image_sizes == clip.key.image_sizes
    assert len(clip.to("cpu").memory) == 2


def test_references_and_memory_are_past_frames_up_to_the_test_memory(synth: Path) -> None:
    """Issue 15 deliverable 2: no future frame in training, and the gaps cover the frames the
    online model keeps (max_gap 0 = the model's memory_length)."""
    data = load_ytvis_dataset(synth, synth.parent)
    cfg = VideoDataConfig(min_size=[64], max_size=96)
    assert cfg.max_gap == 0 and train_max_gap(cfg, 8) == 8
    ds = build_pair_dataset(data, cfg, seed=0, memory_length=3)
    gaps = [p.key - p.reference for p in ds.pairs]
    assert min(gaps) >= 1 and max(gaps) == 3  # 5-frame videos: gap 1..3 = memory_length
    ds = build_pair_dataset(data, cfg, seed=0, memory_length=8)
    assert max(p.key - p.reference for p in ds.pairs) == 4  # the longest gap a video allows
    cfg.memory_frames = 2
    ds = build_pair_dataset(data, cfg, seed=0, memory_length=4)
    names = {n: t for v in data.videos for t, n in enumerate(v.file_names)}
    for i in range(len(ds)):
        s = ds[(i, i)]
        key, ref = names[s["key"]["file_name"]], names[s["reference"]["file_name"]]
        mem = [names[m["file_name"]] for m in s["memory"]]
        assert ref < key and mem == sorted(mem)
        assert all(key - 4 <= t <= ref for t in mem)
        if ref in mem:  # the reference repeats only when no older frame is in reach
            assert ref == max(0, key - 4)


def test_davis_ytvis_json_gives_pairs() -> None:
    path = DAVIS_YTVIS / "annotations_json" / "davis2016_train_subset_ytvis.json"
    if not path.is_file():
        pytest.skip(f"shared DAVIS subset not found at {path}")
    data = load_ytvis_dataset(path, DAVIS_YTVIS / "JPEGImages" / "480p")
    ds = build_pair_dataset(data, VideoDataConfig(min_size=[96], max_size=160), seed=0, repeats=1)
    s = ds[(0, 5)]
    k, r = s["key"], s["reference"]
    assert k["image"].shape[-2:] == r["image"].shape[-2:] and tuple(k["image"].shape[-2:]) == (
        90,
        160,
    )
    assert k["instances"].track_ids.tolist() == r["instances"].track_ids.tolist()
    assert k["instances"].masks.any()


def test_three_iterations_train_resume_and_write_model(tmp_path: Path) -> None:
    cfg = VideoTrainConfig()
    cfg.model.name, cfg.model.pretrained = "pcan_tiny", False
    s = cfg.data.synthetic
    s.num_train, s.num_test, s.num_frames, s.image_size, s.cutouts = 2, 1, 4, 64, False
    cfg.data.min_size, cfg.data.max_size, cfg.data.test_min_size = [64], 96, 64
    cfg.data.batch_size = 2
    cfg.solver.max_iters, cfg.solver.warmup_iters, cfg.solver.amp = 3, 1, "none"
    cfg.out_dir, cfg.log_period, cfg.checkpoint_period = str(tmp_path / "run"), 1, 2
    metrics = train_video(cfg, progress=False)
    out = tmp_path / "run"
    assert "AP" in metrics  # YouTube-VIS AP on the held-out clip (untrained: any value)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "total_loss" in r]
    assert [r["iter"] for r in losses] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["total_loss"])) for r in losses)
    assert {"loss_track", "loss_tsm", "loss_mask"} <= set(losses[0])
    memory_cfg = copy.deepcopy(cfg)  # training with two extra memory frames runs too
    memory_cfg.data.memory_frames, memory_cfg.out_dir = 2, str(tmp_path / "mem")
    memory_cfg.solver.max_iters = 1
    assert "AP" in train_video(memory_cfg, progress=False)

    from instseg.inference.video_predictor import load_video_model

    model, meta = load_video_model(out / "model.pt")
    assert meta.task == "video" and meta.model["name"] == "pcan_tiny"
    assert meta.num_classes == len(meta.category_ids) == len(meta.class_names)
    assert meta.precision["resolved"] == "fp32"
    # the PCAM settings it was trained with are recorded and restored
    assert meta.training["pcam"] == model.pcam.settings() == default_pcam_settings()
    # instance RoIs from the mask head's pooling; files without the key load as "track"
    assert meta.training["instance_rois"] == model.instance_rois == "mask"
    assert meta.training["past_only"] and meta.training["max_gap"] == cfg.model.memory_length
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 3
    # resume: continue from the last checkpoint to iteration 4 (one more step only)
    cfg.solver.max_iters = 4
    train_video(cfg, resume=True, progress=False)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "total_loss" in r] == [1, 2, 3, 4]
    assert to_dict(cfg)["model"]["name"] == "pcan_tiny"
    # class-agnostic training: one category "object" in the model and its meta
    cfg.data.class_agnostic, cfg.out_dir, cfg.solver.max_iters = True, str(tmp_path / "ag"), 1
    assert "AP" in train_video(cfg, progress=False)
    _, meta = load_video_model(tmp_path / "ag" / "model.pt")
    assert meta.num_classes == 1 and meta.class_names == ("object",)


def test_load_test_split_of_a_config(synth: Path, tmp_path: Path) -> None:
    """The scripts' one way to a config's held-out videos: generated into the data cache for
    a synthetic config, a clear error for a config without a test split."""
    from instseg.config import load_config
    from instseg.recipes.video import load_test_split
    from instseg.recipes.video_config import SMOKE_OVERRIDES

    root = Path(__file__).resolve().parents[2]
    over = [*SMOKE_OVERRIDES, f"data.cache_dir={tmp_path / 'data'}", f"out_dir={tmp_path}"]
    cfg = load_config(VideoTrainConfig, root / "configs" / "pcan_synthetic.yaml", over)
    splits, test = load_test_split(cfg)
    assert splits.test_json is not None and splits.test_json.is_file()
    assert len(test.videos) == 1 and test.categories == {1: "object"}  # class-agnostic config
    cfg.data.train_json, cfg.data.train_root = str(synth / "annotations.json"), str(synth)
    with pytest.raises(ValueError, match="no test split"):
        load_test_split(cfg)
