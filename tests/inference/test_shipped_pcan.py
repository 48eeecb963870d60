"""The shipped default tracker (src/instseg/weights/pcan_default.pt, see its model card): a
small, safe fp16 class-agnostic file; `instseg track` without --weights runs it on a real
DAVIS frame folder (no annotations) and, on a held-out synthetic video, follows the objects."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "src" / "instseg" / "weights" / "pcan_default.pt"
DAVIS = ROOT / ".." / "shared" / "data" / "davis2016-train-subset"
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped PCAN model")


def test_release_file_is_small_fp16_class_agnostic_and_has_a_card(release_file):
    meta = release_file(WEIGHTS)["meta"]
    assert meta["task"] == "video" and meta["class_names"] == ["object"]


@pytest.mark.skipif(not (DAVIS / "JPEGImages").is_dir(), reason="needs ../shared/data")
def test_track_default_on_a_real_frame_folder(tmp_path):
    src = tmp_path / "frames"
    src.mkdir()
    for p in sorted((DAVIS / "JPEGImages" / "480p" / "bus").glob("*.jpg"))[:4]:
        (src / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    assert main(["track", "--source", str(src), "--out", str(out), "--no-video"]) == 0
    assert len(list((out / "masks").glob("*.png"))) == 4
    assert isinstance(json.loads((out / "results.json").read_text()), list)
    assert (out / "tracks.txt").is_file()


def test_default_follows_objects_in_a_held_out_synthetic_video():
    from instseg.data.synthetic import SceneConfig
    from instseg.data.synthetic_video import VideoConfig, make_video
    from instseg.inference.video_predictor import VideoPredictor
    from instseg.structures.masks import mask_iou

    cfg = VideoConfig(
        scene=SceneConfig(image_size=(192, 192), min_objects=2, max_objects=3, occlusion=0.2),
        num_frames=6,
    )
    frames, objects = make_video(np.random.default_rng([4242, 1]), cfg)  # unused seed
    predictor = VideoPredictor.from_weights(WEIGHTS, device="cpu")
    hits = []
    for t, frame in enumerate(frames):
        inst = predictor(frame)
        gt = [o["visible"][t] for o in objects if o["annotated"][t]]
        keep = inst.scores > 0.3
        if not gt or not keep.any():
            hits.append(0.0)
            continue
        iou = mask_iou(inst.masks[keep], torch.from_numpy(np.stack(gt)))
        hits.append(float((iou.max(0).values > 0.5).float().mean()))
    assert np.mean(hits) >= 0.5  # most visible objects found with a decent mask, on average


def test_no_pcam_level_collapses_with_the_data_kernel_scale():
    """Issue 15: with the fixed sigma of 0.3 the shipped model's P5 prototypes are all the same
    (responsibility entropy 1: a global average pool); with the kernel scale taken from the
    keys every level keeps most of its K prototypes apart."""
    from instseg.data.synthetic import SceneConfig
    from instseg.data.synthetic_video import VideoConfig, make_video
    from instseg.inference.video_predictor import load_video_model
    from instseg.models.video.prototypes import gmm_em_prototypes, responsibility_entropy

    model, _ = load_video_model(WEIGHTS)
    cfg = VideoConfig(scene=SceneConfig(image_size=(192, 192)), num_frames=1)
    frames, _ = make_video(np.random.default_rng([4242, 2]), cfg)
    x = torch.from_numpy(frames[0].transpose(2, 0, 1).copy()).float()[None]
    with torch.no_grad():
        feats = model.segmenter.features(x)[0]
        for name, m in model.pcam.levels.items():
            k, _ = m.encode(feats[name])
            ent = {}
            for sigma in (0.3, "data"):
                m.sigma = sigma
                mu, _, r, _ = gmm_em_prototypes(k, num_prototypes=m.num_prototypes,
                                                sigma=m.kernel_sigma(k), init="grid")  # fmt: skip
                ent[sigma] = float(responsibility_entropy(r))
                far = 0.05 * float(torch.cdist(k[0], k[0]).median())
                distinct: list[int] = []  # prototypes > 5% of the median key distance apart
                for i in range(len(mu[0])):
                    if all(float(torch.dist(mu[0][i], mu[0][j])) > far for j in distinct):
                        distinct.append(i)
            assert ent["data"] < 0.6 and len(distinct) >= m.num_prototypes // 2, (name, ent)
            if name == "p5":
                assert ent[0.3] > 0.99  # the collapse this replaces
