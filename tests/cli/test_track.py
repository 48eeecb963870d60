"""``instseg track``: all outputs on a generated 6-frame video with a tiny random PCAN, the
missing-default-weights message, and ``instseg propagate`` of first-frame masks (ImageNet
features, and the shipped embedding); ``track --init-masks`` still runs it, with a warning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.cli.main import main
from instseg.data.davis import read_davis_label, write_davis_label
from instseg.data.mots import group_by_frame, read_mots_txt
from instseg.data.synthetic_video import generate_videos
from instseg.data.ytvis import load_ytvis
from instseg.engine.checkpoint import save_weights
from instseg.utils.image import read_image
from instseg.utils.sources import read_video_frames
from instseg.utils.video_writer import write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("clip")
    ann = generate_videos(root, num_videos=1, num_frames=6, seed=7, image_size=(160, 224))
    video = load_ytvis(ann, root)[0]
    return video.frame_paths[0].parent, [video]


@pytest.fixture(scope="module")
def tiny_pcan(tmp_path_factory) -> Path:
    from instseg.models.video.zoo import pcan_tiny

    torch.manual_seed(0)
    model = pcan_tiny(num_classes=2)
    with torch.no_grad():  # confident classifier so the random model detects and tracks things
        for name, p in model.named_parameters():
            if name.endswith("cls_logits.bias"):
                p.fill_(4.0)
    meta = {
        "task": "video",
        "model": {"name": "pcan_tiny", "pretrained": False, "frozen_bn": False},
        "num_classes": 2, "category_ids": [3, 8], "class_names": ["a", "b"],
        "test_min_size": 64, "max_size": 96,
    }  # fmt: skip
    path = tmp_path_factory.mktemp("w") / "pcan.pt"
    save_weights(model, path, meta=meta)
    return path


def test_track_video_writes_all_outputs(clip, tiny_pcan, tmp_path) -> None:  # noqa: ANN001
    frames = [read_image(p) for p in sorted(clip[0].glob("*.png"))]
    src = write_video(tmp_path / "clip.mp4", frames, fps=10)
    out = tmp_path / "out"
    assert main(["track", "--weights", str(tiny_pcan), "--source", str(src), "--out", str(out),
                 "--amp", "none"]) == 0  # fmt: skip
    pngs = sorted((out / "masks").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:06d}" for i in range(6)]
    labels = [read_davis_label(p) for p in pngs]
    assert all(lab.shape == (160, 224) for lab in labels)
    results = json.loads((out / "results.json").read_text())
    assert results, "the confident random model should produce tracks"
    for r in results:
        assert r["video_id"] == 1 and r["category_id"] in (3, 8) and 0 <= r["score"] <= 1
        assert len(r["segmentations"]) == 6
    mots = read_mots_txt(out / "tracks.txt")
    assert {o.class_id for o in mots} <= {3, 8} and {o.frame for o in mots} <= set(range(6))
    for t, objs in group_by_frame(mots).items():  # MOTS masks never overlap; PNG agrees
        stack = np.stack([o.mask() for o in objs])
        assert stack.sum(0).max() <= 1
        assert np.array_equal(stack.any(0), labels[t] > 0)
        for o in objs:
            assert np.all(labels[t][o.mask()] == (o.obj_id % 1000 - 1) % 254 + 1)
    assert len(results) == len({o.obj_id for o in mots})
    assert len(list(read_video_frames(out / "vis.mp4"))) == 6


def test_track_without_weights_explains_how_to_train(clip, tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001, E501
    import instseg.cli.track as track

    monkeypatch.setattr(track, "DEFAULT_WEIGHTS", tmp_path / "missing.pt")
    assert main(["track", "--source", str(clip[0]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert re.search("not trained yet.*scripts/train_pcan.py", err) and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["propagate", "track"])
def test_init_masks_writes_one_indexed_png_per_frame(clip, tmp_path, caplog, command) -> None:  # noqa: ANN001
    folder, (video,) = clip
    gt = [video.label_map(t, objects=2) for t in range(6)]
    masks = tmp_path / "init"
    write_davis_label(masks / "00000.png", gt[0])
    out = tmp_path / "semi"
    assert main([command, "--source", str(folder), "--init-masks", str(masks), "--out", str(out),
                 "--max-side", "224", "--no-video"]) == 0  # fmt: skip
    deprecated = [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(deprecated) == (command == "track")
    pngs = sorted((out / "masks").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(6)]
    pred = [read_davis_label(p) for p in pngs]
    assert np.array_equal(pred[0], gt[0])
    ids = set(np.unique(gt[0])) - {0}
    for p, g in zip(pred[1:], gt[1:], strict=True):
        assert set(np.unique(p)) <= ids | {0}
        for k in ids:  # propagated objects overlap their true masks
            inter, union = np.sum((p == k) & (g == k)), np.sum((p == k) | (g == k))
            assert union == 0 or inter / union > 0.4, (k, inter / union)


def test_init_masks_with_the_shipped_propagation_embedding(clip, tmp_path) -> None:  # noqa: ANN001
    folder, (video,) = clip
    lab = np.zeros((160, 224), np.uint8)
    m = video.annotations[0].mask(0)
    assert m is not None
    lab[m] = 1
    write_davis_label(tmp_path / "init" / "00000.png", lab)
    weights = Path(__file__).resolve().parents[2] / "src/instseg/weights/propagation_default.pt"
    out = tmp_path / "semi"
    assert main(["propagate", "--source", str(folder), "--init-masks", str(tmp_path / "init"),
                 "--weights", str(weights), "--out", str(out), "--no-video"]) == 0  # fmt: skip
    pngs = sorted((out / "masks").glob("*.png"))
    assert len(pngs) == 6 and all(set(np.unique(read_davis_label(p))) <= {0, 1} for p in pngs)


def test_track_skips_an_unreadable_frame_and_keeps_frame_numbers(
    clip, tiny_pcan, tmp_path, capsys
) -> None:  # noqa: ANN001, E501
    src = tmp_path / "frames"
    src.mkdir()
    pngs = sorted(clip[0].glob("*.png"))
    for p in pngs:
        (src / p.name).write_bytes(p.read_bytes())
    bad = src / pngs[2].name
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    out = tmp_path / "out"
    argv = ["track", "--weights", str(tiny_pcan), "--source", str(src), "--out", str(out),
            "--amp", "none", "--no-video", "--conf", "0.5"]  # fmt: skip
    assert main(argv) == 0
    cap = capsys.readouterr()
    warnings = [line for line in cap.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and bad.name in warnings[0]
    assert "1 of 6 items" in cap.out
    assert sorted(p.name for p in (out / "masks").glob("*.png")) == sorted(
        p.name for p in pngs if p.name != bad.name
    )
    results = json.loads((out / "results.json").read_text())
    assert results and all(len(r["segmentations"]) == 6 for r in results)
    assert all(r["segmentations"][2] is None for r in results)  # the skipped frame: no mask
    assert all(r["score"] >= 0.5 for r in results)
    assert main([*argv, "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and bad.name in err[0] and err[0].startswith("instseg track: error:")


def test_tracker_flags_reach_the_predictor(clip, tiny_pcan, tmp_path) -> None:  # noqa: ANN001
    """--birth-score 1 starts no track: every output is empty; a value outside [0, 1] is a
    usage error."""
    out = tmp_path / "out"
    argv = ["track", "--weights", str(tiny_pcan), "--source", str(clip[0]), "--out", str(out),
            "--amp", "none", "--no-video", "--birth-score", "1", "--track-score", "0.5",
            "--motion-weight", "0.3"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text()) == []
    with pytest.raises(SystemExit) as e:
        main([*argv[:-1], "2"])
    assert e.value.code == 2


def test_mask_score_changes_the_cost_not_the_outputs(clip, tiny_pcan, tmp_path) -> None:  # noqa: ANN001
    """--mask-score 0 (mask head on every detection) and the default (only detections the
    tracker can use, plus those its painting rule reads) write the same results."""
    got = []
    for extra in (["--mask-score", "0"], []):
        out = tmp_path / f"out{len(extra)}"
        argv = ["track", "--weights", str(tiny_pcan), "--source", str(clip[0]), "--out",
                str(out), "--amp", "none", "--no-video", "--conf", "0", *extra]  # fmt: skip
        assert main(argv) == 0
        got.append(json.loads((out / "results.json").read_text()))
    assert got[0] == got[1] and got[0]
