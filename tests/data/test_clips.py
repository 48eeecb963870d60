"""Seeded clip sampling: frame pairs within a max gap and fixed-length tubes."""

from __future__ import annotations

import numpy as np
import pytest

from instseg.data.clips import (
    ClipSampler,
    FramePair,
    annotated_frames,
    past_memory_frames,
    sample_frame_pairs,
    sample_tubes,
)
from instseg.data.ytvis import Video, VideoAnnotation


def test_pairs_cover_every_key_once_within_gap() -> None:
    lengths = [10, 1, 6]
    pairs = sample_frame_pairs(lengths, max_gap=2, seed=0)
    assert sorted((p.video, p.key) for p in pairs) == [
        (v, t) for v, n in enumerate(lengths) for t in range(n)
    ]
    for p in pairs:
        if lengths[p.video] == 1:
            assert p.reference == p.key  # nothing else to pick
        else:
            assert 1 <= abs(p.reference - p.key) <= 2 and 0 <= p.reference < lengths[p.video]
    assert pairs == sample_frame_pairs(lengths, max_gap=2, seed=0)
    assert pairs != sample_frame_pairs(lengths, max_gap=2, seed=1)


def test_pairs_respect_valid_frames_and_count() -> None:
    valid = [[True, False, True, False, True]]
    pairs = sample_frame_pairs([5], max_gap=3, seed=3, num_pairs=50, valid=valid)
    assert len(pairs) == 50
    assert all(valid[0][p.key] and valid[0][p.reference] for p in pairs)
    assert {p.reference for p in pairs if p.key == 2} <= {0, 4}
    with pytest.raises(ValueError, match="no valid frame"):
        sample_frame_pairs([2], max_gap=1, seed=0, valid=[[False, False]])


def test_tubes_length_stride_and_padding() -> None:
    tubes = sample_tubes([20, 3], length=5, num_tubes=200, seed=0, max_stride=3)
    strides = set()
    for tube in tubes:
        f = tube.frames
        assert len(f) == 5
        if tube.video == 0:
            d = {b - a for a, b in zip(f, f[1:], strict=False)}
            assert len(d) == 1 and 1 <= min(d) <= 3 and f[-1] < 20
            strides |= d
        else:
            assert f == (0, 1, 2, 2, 2)  # shorter than T: last frame repeated
    assert strides == {1, 2, 3} and {t.video for t in tubes} == {0, 1}
    assert tubes == sample_tubes([20, 3], length=5, num_tubes=200, seed=0, max_stride=3)


def test_sampler_epochs_are_reproducible_and_differ() -> None:
    s = ClipSampler([8, 8], seed=5, max_gap=2)
    assert len(s) == 16
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e0 != e1
    t = ClipSampler([8], seed=0, tube_length=4, num_samples=7)
    assert len(list(t)) == len(t) == 7


def test_annotated_frames_from_ytvis_videos() -> None:
    rle = {"size": [2, 2], "counts": "02"}
    v = Video(id=1, name="v", width=2, height=2, file_names=["a", "b", "c"], frame_paths=[],
              annotations=[VideoAnnotation(1, 1, 1, [rle, None, None]),
                           VideoAnnotation(2, 1, 1, [None, None, rle])])  # fmt: skip
    valid = annotated_frames([v])
    assert valid == [[True, False, True]]
    pairs = sample_frame_pairs([v], max_gap=2, seed=0, valid=valid)
    assert sorted((p.key, p.reference) for p in pairs) == [(0, 2), (2, 0)]


def test_past_only_pairs_never_look_ahead_and_reach_the_gap() -> None:
    lengths = [12, 1, 6]
    pairs = sample_frame_pairs(lengths, max_gap=8, seed=0, past_only=True)
    # every frame with an earlier frame is a key once; frame 0 (no past) never is
    assert sorted((p.video, p.key) for p in pairs) == [
        (v, t) for v, n in enumerate(lengths) for t in range(1, n)
    ]
    assert all(1 <= p.key - p.reference <= 8 for p in pairs)
    many = sample_frame_pairs([12], max_gap=8, seed=1, num_pairs=2000, past_only=True)
    gaps = {p.key - p.reference for p in many}
    assert gaps == set(range(1, 9))  # the test-time memory length is reached
    valid = [[False, True, False, True, True]]
    vp = sample_frame_pairs([5], max_gap=2, seed=3, num_pairs=100, valid=valid, past_only=True)
    assert {(p.key, p.reference) for p in vp} == {(3, 1), (4, 3)}


def test_past_memory_frames_lie_between_the_window_and_the_reference() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        ts = past_memory_frames(FramePair(0, 10, 6), 2, max_gap=8, rng=rng)
        assert len(ts) == 2 and list(ts) == sorted(ts) and all(2 <= t < 6 for t in ts)
        assert len(set(ts)) == 2
        seen |= set(ts)
    assert seen == {2, 3, 4, 5}
    assert past_memory_frames(FramePair(0, 3, 2), 3, max_gap=1, rng=rng) == (2, 2, 2)
    assert past_memory_frames(FramePair(0, 3, 1), 3, max_gap=3, rng=rng) == (0, 0, 0)
    with pytest.raises(ValueError, match="precede"):
        past_memory_frames(FramePair(0, 3, 4), 1, max_gap=3, rng=rng)
