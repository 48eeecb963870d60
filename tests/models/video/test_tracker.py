"""Association head, quasi-dense loss and the online tracker."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from instseg.models.video.tracker import (
    IGNORE,
    Tracker,
    TrackHead,
    TrackState,
    assign_track_ids,
    jitter_boxes,
    quasi_dense_loss,
)

G = torch.Generator().manual_seed(0)
APPEARANCE = torch.nn.functional.normalize(torch.randn(4, 16, generator=G), dim=1) * 5
BOXES = torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [40, 40, 50, 50.0]])


def _frame(objects: list[int], seed: int, scores: list[float] | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    idx = torch.tensor(objects, dtype=torch.long)
    emb = APPEARANCE[idx] + 0.5 * torch.randn(len(objects), 16, generator=g)
    return {
        "boxes": BOXES[idx],
        "scores": torch.tensor(scores or [0.9] * len(objects)),
        "labels": torch.zeros(len(objects), dtype=torch.long),
        "embeddings": emb,
    }


def _run(tracker: Tracker, script: list[list[int]]) -> list[dict[int, int]]:
    """-> per frame {object index: track id}."""
    state, out = TrackState(), []
    for t, objects in enumerate(script):
        ids, state = tracker.update(state, **_frame(objects, seed=t))
        out.append(dict(zip(objects, ids.tolist(), strict=True)))
    return out


OCCLUSION = [[0, 1, 2], [0, 1, 2], [0, 2], [0, 2], [2, 0, 1], [1, 0, 2, 3]]


@pytest.mark.parametrize(
    ("similarity", "assignment"),
    [("bisoftmax", "greedy"), ("bisoftmax", "hungarian"), ("cosine", "hungarian")],
)
def test_identities_survive_short_occlusion(similarity: str, assignment: str) -> None:
    tracker = Tracker(similarity=similarity, assignment=assignment, keep_alive=3)  # type: ignore[arg-type]
    frames = _run(tracker, OCCLUSION)
    first = frames[0]
    assert sorted(first.values()) == [0, 1, 2]
    for f in frames:
        for obj, tid in f.items():
            if obj in first:
                assert tid == first[obj]
    assert frames[-1][3] == 3  # birth of a new object gets the next id


def test_track_death_after_keep_alive() -> None:
    tracker = Tracker(keep_alive=1)
    frames = _run(tracker, OCCLUSION)
    assert frames[4][1] == 3  # object 1 was dropped while hidden for 2 frames: new identity
    assert frames[4][0] == frames[0][0] and frames[4][2] == frames[0][2]


def test_birth_needs_confident_detection_and_low_scores_are_ignored() -> None:
    tracker = Tracker(init_score_thresh=0.7, obj_score_thresh=0.3)
    ids, state = tracker.update(TrackState(), **_frame([0, 1, 2], 0, scores=[0.9, 0.5, 0.2]))
    assert ids.tolist() == [0, -1, -1] and list(state.tracks) == [0]
    # a lower-score detection may continue an existing track
    ids, state = tracker.update(state, **_frame([0], 1, scores=[0.4]))
    assert ids.tolist() == [0] and state.tracks[0].hits == 2 and state.frame == 2


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_hungarian_resolves_conflict_greedy_does_not() -> None:
    tracks = {
        "embeddings": torch.tensor([_unit(0), _unit(60)]),
        "boxes": BOXES[:2],
        "scores": torch.tensor([0.9, 0.9]),
        "labels": torch.zeros(2, dtype=torch.long),
    }
    dets = {
        "embeddings": torch.tensor([_unit(28), _unit(-20)]),
        "boxes": BOXES[:2],
        "scores": torch.tensor([0.9, 0.8]),
        "labels": torch.zeros(2, dtype=torch.long),
    }
    results = {}
    for assignment in ("greedy", "hungarian"):
        tr = Tracker(similarity="cosine", assignment=assignment, embed_momentum=1.0)
        _, state = tr.update(TrackState(), **tracks)
        ids, _ = tr.update(state, **dets)
        results[assignment] = ids.tolist()
    assert results["greedy"] == [0, 2]  # det 0 takes track 0 first; det 1 starts a new track
    assert results["hungarian"] == [1, 0]  # maximal total similarity


def test_bisoftmax_single_pair_is_gated_by_cosine() -> None:
    tr = Tracker(min_cosine=0.5)
    _, state = tr.update(TrackState(), **_frame([0], 0))
    ids, _ = tr.update(state, **_frame([1], 1))  # different object, alone in the frame
    assert ids.tolist() == [1]


def test_quasi_dense_loss_values_and_gradient() -> None:
    key = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    ref = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    key_ids, ref_ids = torch.tensor([7, 8, -1]), torch.tensor([7, 8, -1])
    out = quasi_dense_loss(key, ref, key_ids, ref_ids, embed_weight=1.0, aux_weight=1.0)
    sim = key.detach() @ ref.t()
    # anchor 0: pos ref 0 (s=2), negs ref 1, 2 (s=0, 0.5); anchor 1 symmetric
    expected = torch.log1p(torch.exp(sim[0, 1] - sim[0, 0]) + torch.exp(sim[0, 2] - sim[0, 0]))
    assert torch.allclose(out["loss_track"], expected, atol=1e-5)
    out["loss_track"].backward()
    assert key.grad is not None and key.grad.abs().sum() > 0
    # aux: positives have cosine 1 -> 0 loss; hardest negatives over margin 0.1 count
    assert out["loss_track_aux"] > 0
    perfect = quasi_dense_loss(ref, ref, ref_ids, ref_ids, embed_weight=1.0)
    assert perfect["loss_track"] < out["loss_track"]
    none = quasi_dense_loss(key, ref, torch.tensor([-1, -1, IGNORE]), ref_ids)
    assert none["loss_track"].item() == 0.0


def test_track_head_learns_to_separate_identities() -> None:
    torch.manual_seed(0)
    head = TrackHead(
        in_channels=4, roi_size=3, num_convs=1, conv_channels=8, fc_dim=16, embed_dim=8
    )
    g = torch.Generator().manual_seed(1)
    protos = torch.randn(3, 4, 3, 3, generator=g)
    ids = torch.arange(3).repeat(2)

    def rois(seed: int) -> torch.Tensor:
        n = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(seed))
        return protos[ids] + 0.3 * n

    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for step in range(25):
        out = quasi_dense_loss(head(rois(2 * step)), head(rois(2 * step + 1)), ids, ids)
        loss = out["loss_track"] + out["loss_track_aux"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert head(torch.zeros(0, 4, 3, 3)).shape == (0, 8)


def test_assign_ids_and_jitter() -> None:
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    rois = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 5, 10], [50, 50, 60, 60]])
    ids = assign_track_ids(rois, gt, torch.tensor([5, 6]))
    assert ids.tolist() == [5, IGNORE, IGNORE, -1]  # IoU 1, 0.68, 0.5, 0
    jit = jitter_boxes(gt, num=3, scale=0.1, image_size=(35, 45), generator=G)
    assert jit.shape == (6, 4)
    assert (jit[:, 2] <= 45).all() and (jit[:, 3] <= 35).all() and (jit >= 0).all()
    assert assign_track_ids(jit[:3], gt, torch.tensor([5, 6])).tolist() != [-1, -1, -1]


# ---------------------------------------------------------------- QDTrack safeguards (issue 15)


def _dets(boxes, scores, embeds, labels=None, masks=None) -> dict:  # noqa: ANN001
    n = len(scores)
    out = {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(n, 4),
        "scores": torch.as_tensor(scores, dtype=torch.float32),
        "labels": torch.as_tensor(labels if labels is not None else [0] * n),
        "embeddings": torch.stack([torch.as_tensor(e, dtype=torch.float32) for e in embeds]),
    }
    if masks is not None:
        out["masks"] = masks
    return out


def _box_mask(boxes: list[list[int]], size: int = 64) -> torch.Tensor:
    m = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m[i, y0:y1, x0:x1] = True
    return m


def test_mask_duplicates_are_removed_by_painting() -> None:
    """Two confident outputs on one object (box IoU 0.5 passes box NMS): the lower-scored one
    keeps < 50% of its area once the higher-scored mask is painted over it -> not tracked.
    A third output covered only jointly by two higher-scored masks (pairwise mask IoU <= 0.35)
    goes too."""
    boxes = [[0, 0, 20, 20], [0, 6, 20, 26], [40, 0, 60, 20], [40, 20, 60, 40], [40, 12, 60, 28]]
    e = APPEARANCE
    dets = _dets(boxes, [0.9, 0.8, 0.9, 0.9, 0.8], [e[0], e[0], e[1], e[2], e[3]],
                 masks=_box_mask(boxes))  # fmt: skip
    ids, state = Tracker().update(TrackState(), **dets)
    assert ids.tolist() == [0, -1, 1, 2, -1]
    assert sorted(state.tracks) == [0, 1, 2]


def test_mask_iou_rule_alone() -> None:
    boxes = [[0, 0, 20, 20], [0, 5, 20, 25]]  # mask IoU 0.6 (box IoU 0.6 passes box NMS 0.7)
    dets = _dets(boxes, [0.9, 0.8], [APPEARANCE[0], APPEARANCE[1]], masks=_box_mask(boxes))
    ids, _ = Tracker(min_kept_fraction=0.0, mask_iou_thresh=0.5).update(TrackState(), **dets)
    assert ids.tolist() == [0, -1]
    ids, _ = Tracker(min_kept_fraction=0.0, mask_iou_thresh=None).update(TrackState(), **dets)
    assert ids.tolist() == [0, 1]


def _cos_to(v: torch.Tensor, cos: float, seed: int = 0) -> torch.Tensor:
    """A vector of v's norm at cosine ``cos`` to v."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(v.shape, generator=g)
    r = r - (r @ v) / (v @ v) * v
    u = torch.nn.functional.normalize(v, dim=0)
    return v.norm() * (cos * u + math.sqrt(1 - cos**2) * torch.nn.functional.normalize(r, dim=0))


def test_backdrops_keep_clutter_from_taking_a_free_track() -> None:
    """Frame 0: object A (0.9) and background clutter (0.2). Frame 1: A is gone, the clutter
    scores 0.6. Without backdrops the bi-softmax over the one free track is 1 and the clutter
    (cosine 0.3 > min_cosine) takes A's id; with last frame's low-score detections kept as
    backdrops it matches its own backdrop and stays untracked (0.6 < birth 0.7)."""
    a = APPEARANCE[0]
    clutter = _cos_to(a, 0.3)
    tr = Tracker(init_score_thresh=0.7, obj_score_thresh=0.5)
    ids, state = tr.update(
        TrackState(), **_dets([[0, 0, 10, 10], [40, 40, 50, 50]], [0.9, 0.2], [a, clutter])
    )
    assert ids.tolist() == [0, -1]
    ids, state = tr.update(state, **_dets([[41, 40, 51, 50]], [0.6], [clutter * 1.02]))
    assert ids.tolist() == [-1]
    assert state.tracks[0].hits == 1


def test_low_score_match_is_suppressed_not_a_track_update_nor_a_backdrop() -> None:
    """QDTrack gate (0.5 by default): a 0.4 detection of a live track neither continues it
    nor becomes a backdrop that would compete with the track in the next frame."""
    a = APPEARANCE[0]
    tr = Tracker()
    _, state = tr.update(TrackState(), **_dets([[0, 0, 10, 10]], [0.9], [a]))
    ids, state = tr.update(state, **_dets([[1, 0, 11, 10]], [0.4], [a]))
    assert ids.tolist() == [-1] and state.tracks[0].hits == 1
    assert sum(len(b.embeddings) for b in state.backdrops) == 0
    ids, state = tr.update(state, **_dets([[2, 0, 12, 10]], [0.9], [a]))
    assert ids.tolist() == [0] and state.tracks[0].hits == 2


def test_category_check_is_on_by_default() -> None:
    a = APPEARANCE[0]
    tr = Tracker()
    _, state = tr.update(TrackState(), **_dets([[0, 0, 10, 10]], [0.9], [a], labels=[0]))
    ids, _ = tr.update(state, **_dets([[0, 0, 10, 10]], [0.9], [a], labels=[1]))
    assert ids.tolist() == [1]  # other category: a new track, not track 0


def test_motion_term_resolves_identical_appearances() -> None:
    """Two look-alike objects moving right: appearance alone cannot tell them apart (the more
    confident detection takes the first track); the box IoU with the constant-velocity
    prediction of each track can."""
    e = APPEARANCE[0]

    def frame(t: int) -> dict:  # object 0 at the top, object 1 at the bottom, 4 px/frame
        b = [[4 * t, 0, 4 * t + 12, 12], [4 * t, 30, 4 * t + 12, 42]]
        return _dets(b[::-1], [0.95, 0.9], [e, e])  # the bottom object scores higher

    results = {}
    for w in (0.0, 0.5):
        tr = Tracker(motion_weight=w, match_classes=False)
        _, state = tr.update(TrackState(), **_dets([[0, 0, 12, 12], [0, 30, 12, 42]],
                                                   [0.9, 0.9], [e, e]))  # fmt: skip
        ids = []
        for t in (1, 2, 3):
            out, state = tr.update(state, **frame(t))
            ids.append(out.tolist())
        results[w] = ids
    assert results[0.5] == [[1, 0]] * 3  # bottom keeps id 1, top id 0
    assert results[0.0] != [[1, 0]] * 3


def test_qdtrack_thresholds_are_the_defaults() -> None:
    from instseg.models.video.zoo import pcan_tiny

    for tr in (Tracker(), pcan_tiny(num_classes=1).tracker):
        assert (tr.init_score_thresh, tr.obj_score_thresh) == (0.7, 0.5)


def test_track_rois_include_background_negatives() -> None:
    """QDTrack samples dense proposals; RoIs that are only GT boxes + jitters (IoU >= 0.68)
    give the embedding loss no background. The sampler adds boxes with IoU < 0.3 to every GT
    (id -1), as many as ``neg_ratio`` times the positives."""
    from instseg.models.video.tracker import sample_track_rois

    gt = torch.tensor([[10.0, 10, 40, 40], [60, 20, 90, 70]])
    g = torch.Generator().manual_seed(0)
    rois, ids = sample_track_rois(
        gt, torch.tensor([3, 7]), image_size=(100, 120), num_jitter=4, neg_ratio=1.0, generator=g
    )
    pos, neg = ids >= 0, ids == -1
    assert int(pos.sum()) >= 2 and int(neg.sum()) == int(pos.sum())
    assert (box_iou(rois[neg], gt).max(1).values < 0.3).all()
    assert (rois[:, 2] <= 120).all() and (rois[:, 3] <= 100).all() and (rois >= 0).all()
    assert ((rois[:, 2:] - rois[:, :2]) >= 1).all()
    # some negatives touch an object (hard negatives), not only empty background
    assert (box_iou(rois[neg], gt).max(1).values > 0).any()
    none, none_ids = sample_track_rois(
        gt[:0], torch.zeros(0, dtype=torch.long), image_size=(100, 120), generator=g
    )
    assert len(none) == len(none_ids) == 0


def test_aux_loss_rows_are_anchors_only() -> None:
    """Background key RoIs are negatives for the anchors, not rows of their own: pairs of
    (similar-looking) background crops must not fill the hardest-negative budget."""
    key = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ref = torch.tensor([[1.0, 0.0], [0.2, 1.0]])
    ids_k, ids_r = torch.tensor([7, -1, -1]), torch.tensor([7, -1])
    with_bg = quasi_dense_loss(key, ref, ids_k, ids_r, aux_weight=1.0)
    anchors_only = quasi_dense_loss(key[:1], ref, ids_k[:1], ids_r, aux_weight=1.0)
    assert torch.allclose(with_bg["loss_track_aux"], anchors_only["loss_track_aux"])
    assert torch.allclose(with_bg["loss_track"], anchors_only["loss_track"])


@pytest.mark.parametrize("backdrop_frames", [0, 1])
def test_a_track_is_given_to_one_detection_only(backdrop_frames: int) -> None:
    a = APPEARANCE[0]
    tr = Tracker(backdrop_frames=backdrop_frames, init_score_thresh=0.5, obj_score_thresh=0.3)
    _, state = tr.update(TrackState(), **_dets([[0, 0, 10, 10]], [0.9], [a]))
    ids, _ = tr.update(state, **_dets([[0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.45], [a, a]))
    assert ids.tolist() == [0, -1]


def test_a_part_of_a_shown_object_is_not_a_backdrop() -> None:
    """A low-score detection of a part of a shown object (box IoU 0.25 < 0.3 passes QDTrack's
    backdrop NMS) lies under the object's painted mask: it is dropped, so it cannot become a
    backdrop that draws the object's next detection away from its track."""
    a = APPEARANCE[0]
    boxes = [[0, 0, 20, 20], [0, 0, 10, 10]]
    tr = Tracker()
    _, state = tr.update(TrackState(), **_dets(boxes, [0.9, 0.2], [a, a], masks=_box_mask(boxes)))
    assert sum(len(b.embeddings) for b in state.backdrops) == 0
    off = Tracker(paint_below_gate=False)
    _, state = off.update(TrackState(), **_dets(boxes, [0.9, 0.2], [a, a], masks=_box_mask(boxes)))
    assert sum(len(b.embeddings) for b in state.backdrops) == 1


def test_mask_source_is_asked_only_for_the_masks_the_rules_read() -> None:
    """Masks on demand (a MaskSource): the tracker asks for the gated masks, then only for the
    below-gate detections that survive box NMS against the kept gated ones and whose box
    touches a painted pixel; the result equals that of passing every mask. The threshold
    for up-front masks is the lower of gate and birth score."""
    boxes = [
        [0, 0, 20, 20],  # 0: gated, painted
        [40, 0, 60, 20],  # 1: gated, painted
        [2, 2, 20, 20],  # 2: below gate, box IoU 0.81 with 0: box NMS, mask never read
        [0, 0, 10, 10],  # 3: below gate, a part under 0's paint (box IoU 0.25): read, dropped
        [14, 14, 34, 34],  # 4: below gate, touches 0's paint: read, kept (mostly free)
        [0, 40, 20, 60],  # 5: below gate, far from every painted pixel: box suffices
        [60, 40, 64, 64],  # 6: below gate, far too
    ]
    e = APPEARANCE
    emb = [e[0], e[1], e[0], e[0], e[2], e[3], e[2]]
    scores = [0.9, 0.8, 0.3, 0.2, 0.15, 0.1, 0.06]
    masks = _box_mask(boxes)
    asked: list[list[int]] = []

    def source(idx: list[int]) -> torch.Tensor:
        asked.append(list(idx))
        return masks[idx]

    tr = Tracker()
    assert tr.mask_score_thresh == 0.5
    assert Tracker(init_score_thresh=0.4).mask_score_thresh == 0.4
    ref_ids, ref_state = tr.update(TrackState(), **_dets(boxes, scores, emb, masks=masks))
    ids, state = tr.update(TrackState(), **_dets(boxes, scores, emb, masks=source))
    assert asked == [[0, 1], [3, 4]]
    assert ids.tolist() == ref_ids.tolist() == [0, 1, -1, -1, -1, -1, -1]
    (bd,), (ref_bd,) = state.backdrops, ref_state.backdrops
    assert torch.equal(bd.boxes, ref_bd.boxes) and len(bd.boxes) == 3  # 4, 5, 6 (not 3)
    asked.clear()  # without the painting rule for below-gate detections: gated masks only
    Tracker(paint_below_gate=False).update(TrackState(), **_dets(boxes, scores, emb, masks=source))
    assert asked == [[0, 1]]


def test_masks_on_demand_give_the_same_tracking_on_random_clutter() -> None:
    """Many random detections (scores 0.05-1, masks inside their boxes, parts of each other):
    the tracker given a MaskSource makes the same ids, backdrops and tracks as given every
    mask, over a few frames, while reading only some of the below-gate masks."""
    g = torch.Generator().manual_seed(3)
    tr, size = Tracker(), 96
    states = [TrackState(), TrackState()]
    asked: list[int] = []
    for _ in range(4):
        n = 60
        xy = torch.rand(n, 2, generator=g) * 80
        wh = 4 + torch.rand(n, 2, generator=g) * 30
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
        masks = torch.zeros(n, size, size, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):  # a random sub-box of each box
            fx = sorted(torch.rand(2, generator=g).tolist())
            fy = sorted(torch.rand(2, generator=g).tolist())
            w, h = x1 - x0, y1 - y0
            r0, r1 = int(y0 + fy[0] * h), math.ceil(y0 + fy[1] * h)
            masks[i, r0:r1, int(x0 + fx[0] * w) : math.ceil(x0 + fx[1] * w)] = True
        scores = 0.05 + 0.95 * torch.rand(n, generator=g) ** 3
        emb = torch.randn(n, 16, generator=g)
        kw = {"boxes": boxes, "scores": scores, "labels": torch.zeros(n, dtype=torch.long),
              "embeddings": emb}  # fmt: skip

        def source(idx: list[int], _m: torch.Tensor = masks) -> torch.Tensor:
            asked.extend(idx)
            return _m[idx]

        ids_a, states[0] = tr.update(states[0], masks=masks, **kw)
        ids_b, states[1] = tr.update(states[1], masks=source, **kw)
        assert torch.equal(ids_a, ids_b)
        (ba,), (bb,) = states[0].backdrops, states[1].backdrops
        assert torch.equal(ba.boxes, bb.boxes) and torch.equal(ba.embeddings, bb.embeddings)
        assert sorted(states[0].tracks) == sorted(states[1].tracks)
    assert 0 < len(asked) < 4 * 60 * 0.6
