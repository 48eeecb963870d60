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
