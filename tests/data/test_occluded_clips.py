"""The occluded-clip stream is a pure function of its generator (``skip`` = drawing and dropping
clips, what a resumed run relies on); video batches have the generator's layout and range."""

from __future__ import annotations

import numpy as np
import torch

from instseg.data.occluded_clips import occluded_clip_stream, video_batches


def _videos() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for n in (6, 8):
        frames = rng.integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)
        masks = np.zeros((n, 40, 48), bool)
        for t in range(n):
            masks[t, 10:30, 8 + t : 30 + t] = True
        out.append((frames, masks))
    return out


def test_skip_resumes_the_stream_exactly():
    videos = _videos()
    full = occluded_clip_stream(videos, np.random.default_rng(5), 3)
    clips = [next(full) for _ in range(5)]
    resumed = occluded_clip_stream(videos, np.random.default_rng(5), 3, skip=3)
    for expected in clips[3:]:
        got = next(resumed)
        assert np.array_equal(got.frames, expected.frames)
        assert np.array_equal(got.holes, expected.holes)
    for c in clips:
        assert c.frames.shape == (3, 40, 48, 3) and c.holes.any()
        assert c.visible.any((1, 2)).all() and not (c.visible & c.holes).any()


def test_video_batches_layout():
    clips = occluded_clip_stream(_videos(), np.random.default_rng(1), 3)
    b = next(video_batches(clips, 2))
    assert b["frames"].shape == b["gt"].shape == (2, 3, 3, 40, 48)
    assert b["holes"].shape == b["amodal"].shape == (2, 3, 1, 40, 48)
    assert b["frames"].min() >= -1 and b["frames"].max() <= 1
    assert set(torch.unique(b["holes"]).tolist()) == {0.0, 1.0}


def _davis_root(root, names_sizes):
    import cv2

    for name, (n, h, w) in names_sizes.items():
        img, ann = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
        img.mkdir(parents=True)
        ann.mkdir(parents=True)
        for t in range(n):
            cv2.imwrite(str(img / f"{t:05d}.jpg"), np.full((h, w, 3), 40 * t, np.uint8))
            m = np.zeros((h, w), np.uint8)
            m[h // 4 : h // 2, w // 4 : w // 2] = 255
            cv2.imwrite(str(ann / f"{t:05d}.png"), m)
    return root


def test_load_resized_videos_reads_each_sequence_from_the_first_root_that_has_it(tmp_path):
    import pytest

    from instseg.data.occluded_clips import load_resized_videos

    a = _davis_root(tmp_path / "a", {"cat": (3, 40, 80), "dog": (2, 40, 80)})
    b = _davis_root(tmp_path / "b", {"dog": (5, 40, 40), "eel": (4, 20, 40)})
    videos = load_resized_videos([a, b], ["cat", "dog", "eel"], 0, 20)
    # dog comes from a (2 frames, 2:1), eel from b; widths follow the aspect ratio
    assert [v[0].shape for v in videos] == [(3, 20, 40, 3), (2, 20, 40, 3), (4, 20, 40, 3)]
    assert all(v[1].any() for v in videos)
    assert load_resized_videos(b, ["dog"], 3, 20)[0][0].shape == (3, 20, 20, 3)
    with pytest.raises(FileNotFoundError, match="'fox'"):
        load_resized_videos([a, b], ["fox"], 0, 20)
    with pytest.raises(FileNotFoundError, match="not a DAVIS root"):
        load_resized_videos([a, tmp_path / "nope"], ["cat"], 0, 20)
