"""Association head, quasi-dense loss and the online tracker."""

from __future__ import annotations

import math

import pytest
import torch

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
